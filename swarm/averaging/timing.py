"""Deadlines and group size of the averaging round: the ``[rounds]`` section of a node's config.

Pure data with validation; the protocol (``swarm.averaging.round``) reads it, the node's config tree
embeds it, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class RoundTiming:
    """Deadlines of a round. Transfer deadlines adapt to measured rounds; none is an open-ended wait."""

    gather_s: float = 0.5
    """The conductor always waits this long for joiners before it may fix the roster."""
    join_grace_s: float = 5.0
    """After this long the conductor fixes the roster without the live members that have not joined."""
    join_timeout_s: float = 30.0
    """A member gives up on the round after trying this long to get into a roster."""
    min_group: int = 1
    """The conductor waits (up to ``join_timeout_s``) until at least this many members joined."""
    connect_timeout_s: float = 5.0
    """Opening a stream to a peer."""
    min_transfer_s: float = 5.0
    """Floor of the owners' deadline for parts, from the roster."""
    max_transfer_s: float = 120.0
    """Ceiling of the owners' deadline for parts."""
    transfer_factor: float = 3.0
    """The deadline is this many times the recent transfer time (EMA), within the floor and ceiling."""
    heartbeat_ttl_s: float = 15.0
    """A member heartbeat older than this no longer counts as live."""

    def __post_init__(self) -> None:
        for name in ("gather_s", "join_grace_s", "join_timeout_s", "connect_timeout_s", "min_transfer_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.min_group < 1:
            raise ValueError("min_group must be at least 1")
        if self.max_transfer_s < self.min_transfer_s:
            raise ValueError("max_transfer_s must be at least min_transfer_s")
