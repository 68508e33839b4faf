"""Swarm's tests, layered by cost: unit, protocol, swarm (real processes), gpu."""
