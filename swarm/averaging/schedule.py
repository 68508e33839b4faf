"""The round-period policy: how far apart a swarm's rounds are, from what its members need. Pure.

Rounds start at the same wall-clock instants on every member: multiples of the swarm's period. Each
member measures how long its rounds take to communicate, asks for the shortest period of a shared
grid in which that time hides behind local steps (its *wanted* period, published in its heartbeat),
and every member rounds on the longest period any live member wants (never below the run's base).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from swarm.dht.records import MAX_ROUND_PERIOD_S

OVERLAP_MARGIN = 1.25
"""With overlap, a round's communication should take at most 1/1.25 of the next round's compute."""
SERIAL_FACTOR = 4.0
"""Without overlap, rounds are spaced so that communication takes at most a quarter of the time."""


class TimedRound(Protocol):
    """What the policy reads of a committed round (``swarm.averaging.round.RoundOutcome``)."""

    @property
    def members(self) -> Sequence[bytes]: ...

    @property
    def duration_s(self) -> float: ...

    @property
    def transfer_s(self) -> float: ...


def period_grid(base_s: float) -> Iterator[float]:
    """The periods a swarm may round on: ``base_s`` times 1, 1.5, 2, 3, 4, 6, 8, ... (up to
    MAX_ROUND_PERIOD_S). Neighbours are at most 1.5x apart, so a round never waits more than a third
    of its period for the next boundary (powers of two alone left up to half of it, and half of a slow
    link, idle), and any two periods of the grid still share a boundary at least every 3 of the longer."""
    k = 0
    while (period := base_s * 2 ** (k // 2) * (1.5 if k % 2 else 1.0)) <= MAX_ROUND_PERIOD_S:
        yield period
        k += 1


def wanted_period(base_s: float, round_time_s: float, *, overlap: bool) -> float:
    """The shortest period of ``period_grid(base_s)`` in which a round of ``round_time_s`` hides."""
    needed = round_time_s * (OVERLAP_MARGIN if overlap else SERIAL_FACTOR)
    chosen = base_s
    for chosen in period_grid(base_s):
        if chosen >= needed:
            break
    return chosen


def round_time_to_hide(outcome: TimedRound, last_members: frozenset[bytes]) -> float:
    """The seconds of a committed round that the next period must hide behind local steps.

    A round with the same group as the last one is sized by its whole duration (matchmaking, the
    exchange, the commit): all of it keeps the next round's members from starting. A round whose group
    changed is sized by its exchange alone, since its matchmaking waited for joiners or for a
    member's timeout, which a longer period would not hide."""
    return outcome.duration_s if frozenset(outcome.members) == last_members else outcome.transfer_s


def smoothed_round_time(average_s: float | None, latest_s: float) -> float:
    """The moving average of round times after one more round: 0.3 of the newest, 0.7 of the past
    (one slow round does not lengthen the period at once; a lasting change does within a few)."""
    return latest_s if average_s is None else 0.7 * average_s + 0.3 * latest_s


def swarm_period(base_s: float, own_wanted_s: float, live_wanted_s: Iterable[float]) -> float:
    """The swarm's round period: the longest any live member (this one included) wants, never
    below the run's base period."""
    return max([base_s, own_wanted_s, *live_wanted_s])
