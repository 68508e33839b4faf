"""The clock the round protocol reads, injected so that a simulator can run it in virtual time.

Every deadline of the protocol is an instant on the running event loop's clock, so the same
number serves ``asyncio.timeout_at`` and ``asyncio.wait_for``, and a loop whose time is virtual
(the ``looptime`` library, or a simulator's own loop) moves the protocol's deadlines with it. On
asyncio's default loop, which the node runs, that clock is ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic clock; only differences and comparisons mean anything."""

    def now(self) -> float: ...


class SystemClock:
    """The running event loop's own clock; ``time.monotonic()`` outside a loop (the same clock as
    asyncio's default loop: a node's metrics may count its bans after the loop ended)."""

    def now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()
