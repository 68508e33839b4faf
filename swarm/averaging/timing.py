"""Deadlines and group size of the averaging round: the ``[rounds]`` section of a node's config.

Each field is a setting declared once (``swarm.settings``); most are tuning for the config file only.

Pure data with validation; the protocol (``swarm.averaging.round``) reads it, the node's config tree
embeds it, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.settings import check, setting


@dataclass(kw_only=True)
class RoundTiming:
    """Deadlines of a round. Transfer deadlines adapt to measured rounds; none is an open-ended wait."""

    gather_s: float = setting(
        0.5,
        group="rounds",
        flag=None,
        above=0,
        help="The conductor always waits this long for joiners before it may fix the roster.",
    )
    join_grace_s: float = setting(
        5.0,
        group="rounds",
        flag="join-grace",
        above=0,
        metavar="SECONDS",
        help="After this long the conductor fixes the roster without the live members that have not joined.",
    )
    join_timeout_s: float = setting(
        30.0,
        group="rounds",
        flag="join-timeout",
        above=0,
        metavar="SECONDS",
        help="A member gives up on a round after trying this long to get into its roster.",
    )
    min_group: int = setting(
        1,
        group="rounds",
        at_least=1,
        metavar="MEMBERS",
        help="The conductor waits (up to --join-timeout) until at least this many members joined.",
    )
    connect_timeout_s: float = setting(
        5.0, group="rounds", flag=None, above=0, help="Limit for opening a stream to a peer."
    )
    min_transfer_s: float = setting(
        5.0,
        group="rounds",
        flag=None,
        above=0,
        help="Floor of the owners' deadline for parts, from the roster.",
    )
    max_transfer_s: float = setting(
        120.0, group="rounds", flag=None, above=0, help="Ceiling of the owners' deadline for parts."
    )
    transfer_factor: float = setting(
        3.0,
        group="rounds",
        flag=None,
        above=0,
        help="The deadline for parts is this many times the recent transfer time, within floor and ceiling.",
    )
    heartbeat_ttl_s: float = setting(
        15.0,
        group="rounds",
        flag=None,
        above=0,
        help="A member heartbeat older than this no longer counts as live.",
    )

    def __post_init__(self) -> None:
        check(self, "rounds")
        if self.max_transfer_s < self.min_transfer_s:
            raise ValueError("max_transfer_s must be at least min_transfer_s")
