"""Tests: swarm layer."""
