"""Tests: gpu layer."""
