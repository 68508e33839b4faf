"""What an owner does against parts that would harm the round: outliers, bans, robust aggregation.

Pure functions on the parts of one shard (peer id -> (weight, values)) and a small ban list; no I/O.

Outliers. A part whose norm exceeds ``outlier_factor`` times the median part norm of its shard is
excluded (with at least ``MIN_PARTS_FOR_OUTLIERS`` parts: with two there is no majority to say which
is off), and its sender is banned: its join requests and parts are refused until the ban expires.
Honest parts differ more than one might think: in wall-clock rounds a fast GPU runs many more local
steps than a slow one, and a member's part carries everything its residual held back. Excluding an
honest part is worse than a lost round: the excluded work stays in that member's residual, its next
part is larger still, and it would be locked out. So the default factor (1000) only catches gross
abuse (scaled or corrupted updates); bounded damage from subtler ones is centered clipping's job.
(Measured: the first node of a 4-node swarm, with more local steps behind it, sent parts 21x the
median in its third round, in an honest run.)

Robust aggregation. ``centered_clip`` replaces the weighted mean with a centre that no single part
can drag further than a clipping radius: starting from the coordinate-wise median, each iteration
moves the centre by the weighted mean of the parts' offsets, every offset clipped to the radius
(``clip_factor`` times the median offset norm, so the radius follows the round's own scale).
A minority of hostile parts then moves the result by at most their weight share times the radius,
however large they are (Karimireddy et al., "Learning from History for Byzantine Robust
Optimization", 2021, centered clipping).

Every sum runs in peer-id order, so the owner's result is a function of its inputs alone.
torch is imported by the functions that use it: the node's config holds a ``Defence``, and
``swarm-node --help`` reads it without loading torch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median
from typing import TYPE_CHECKING

from swarm.settings import check, setting

if TYPE_CHECKING:
    import torch

AGGREGATIONS = ("mean", "centered-clip")
MIN_PARTS_FOR_OUTLIERS = 3
MAX_BANNED = 4096
"""Bans kept at most; the oldest expiring first go when more peers misbehave than this."""


@dataclass(frozen=True)
class Defence:
    """The owner's rules for one run (the same on every member, like the codec)."""

    outlier_factor: float = setting(
        1000.0,
        group="security",
        above=1,
        also=(0,),
        metavar="FACTOR",
        help="Exclude a part whose norm exceeds this many times the shard's median part norm (0: never).",
    )
    ban_s: float = setting(
        600.0,
        group="security",
        flag="ban-seconds",
        at_least=0,
        metavar="SECONDS",
        help="How long a peer whose part was excluded (malformed, NaN/Inf, outlier) stays refused.",
    )
    aggregation: str = setting(
        "mean",
        group="security",
        choices=AGGREGATIONS,
        help="How an owner combines its shard's parts: the weighted mean, or centered-clip (robust).",
    )
    clip_factor: float = setting(
        2.0,
        group="security",
        above=0,
        metavar="FACTOR",
        help="centered-clip: the radius is this many times the median distance of the parts to the centre.",
    )
    clip_iterations: int = setting(
        3, group="security", flag=None, at_least=1, at_most=100, help="centered-clip: iterations."
    )

    def __post_init__(self) -> None:
        check(self, "defence")


Parts = Mapping[bytes, "tuple[float, torch.Tensor]"]


def find_outliers(parts: Parts, factor: float) -> dict[bytes, str]:
    """Peers whose part's norm is more than ``factor`` times the median norm, with the reason."""
    if factor == 0 or len(parts) < MIN_PARTS_FOR_OUTLIERS:
        return {}
    import torch

    norms = {
        peer: float(torch.linalg.vector_norm(values.to(torch.float32))) for peer, (_, values) in parts.items()
    }
    middle = median(norms.values())
    if middle == 0:
        # Most parts are empty (nothing selected): any part at all is not "far outside" them.
        return {}
    return {
        peer: f"norm {norm:.3g} is {norm / middle:.0f}x the shard's median {middle:.3g}"
        for peer, norm in sorted(norms.items())
        if norm > factor * middle
    }


def centered_clip(parts: Parts, clip_factor: float, iterations: int) -> torch.Tensor:
    """The weighted centered-clipping centre of ``parts`` (see the module docstring)."""
    if not parts:
        raise ValueError("centered_clip needs at least one part")
    import torch

    peers = sorted(parts)
    weights = torch.tensor([parts[p][0] for p in peers], dtype=torch.float64)
    weights = weights / weights.sum()
    stacked = torch.stack([parts[p][1].to(torch.float32) for p in peers])
    centre = stacked.median(dim=0).values if len(peers) > 2 else stacked.mean(dim=0)
    for _ in range(iterations):
        offsets = stacked - centre
        distances = torch.linalg.vector_norm(offsets, dim=1).to(torch.float64)
        radius = clip_factor * median(distances.tolist())
        if radius == 0:
            break
        scale = torch.clamp(radius / distances.clamp_min(1e-30), max=1.0)
        step = ((weights * scale).to(torch.float32)[:, None] * offsets).sum(dim=0)
        centre = centre + step
    return centre


class BanList:
    """Peers refused until a deadline (monotonic seconds), bounded in size."""

    def __init__(self, clock=time.monotonic) -> None:
        self._until: dict[bytes, float] = {}
        self._clock = clock

    def ban(self, peer: bytes, seconds: float) -> None:
        if seconds <= 0:
            return
        now = self._clock()
        self._until[peer] = max(self._until.get(peer, now), now + seconds)
        if len(self._until) > MAX_BANNED:
            self._expire(now)
            while len(self._until) > MAX_BANNED:
                del self._until[min(self._until, key=self._until.__getitem__)]

    def banned(self, peer: bytes) -> bool:
        until = self._until.get(peer)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[peer]
            return False
        return True

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._until)

    def _expire(self, now: float) -> None:
        for peer in [p for p, until in self._until.items() if until <= now]:
            del self._until[peer]
