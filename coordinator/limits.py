"""Rate limits of the coordinator's writes: token buckets per source address and per run.

A key (a peer) costs an outsider nothing, so limits per peer alone are no limit: every write is
charged to the address it came from and to its run. A bucket holds up to ``burst`` writes and refills
at ``rate`` per second; a write finding its bucket empty is refused (RESOURCE_EXHAUSTED) and the
node tries again later, as it does when the coordinator is down. Buckets of addresses not seen for a
while are forgotten, oldest first, beyond ``MAX_TRACKED`` addresses, so a flood of source addresses
costs bounded memory (a forgotten address starts again with a full bucket, at most ``burst`` writes).

Pure: no grpc, no clock of its own (the caller passes the time).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_TRACKED = 100_000
"""Source addresses whose buckets are remembered (about 100 bytes each)."""


@dataclass(frozen=True)
class Rate:
    rate: float
    """Writes per second, sustained."""
    burst: float
    """Writes allowed at once after a quiet spell."""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")


class Buckets:
    """One token bucket per key, at most ``max_tracked`` keys (the least recently used go first)."""

    def __init__(self, rate: Rate, *, max_tracked: int = MAX_TRACKED):
        self.rate = rate
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """key -> (tokens, time they were counted)"""

    def take(self, key: str, now: float) -> bool:
        """Spend one write of ``key``'s bucket; False when it is empty."""
        tokens, then = self._buckets.pop(key, (self.rate.burst, now))
        tokens = min(self.rate.burst, tokens + max(0.0, now - then) * self.rate.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
