"""Tests: protocol layer."""
