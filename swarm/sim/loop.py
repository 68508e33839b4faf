"""An asyncio event loop whose clock is virtual: waiting costs no real time.

``VirtualLoop`` is asyncio's own selector loop with two changes, both through public seams: its
``time()`` returns a virtual clock, and its selector, asked to block for ``timeout`` seconds with
nothing ready, polls the real one without blocking and, if nothing came in, moves the virtual clock
forward by ``timeout`` instead of sleeping. The loop then runs the timer that was due, as it would
have after a real wait. Callbacks take no virtual time: whatever a simulated node's CPU should cost
is charged by the simulator (``swarm.sim.network.Network.charge_cpu``).

Work on threads (``run_in_executor``, ``asyncio.wrap_future``) finishes in real time, which the
virtual clock does not see: the simulator runs such work inline (``swarm.sim.inline``), so no
thread is ever in flight while the clock jumps. Why not ``looptime``: it advances time after a
number of idle loop cycles, a heuristic that a thread still hashing would defeat silently; the
jump here happens only when the real selector has nothing, and is ~40 lines we can read.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

START_S = 1000.0
"""Where the virtual clock starts: not zero, so that code subtracting a lookback stays positive."""


class _VirtualSelector(selectors.BaseSelector):
    """The real selector, except that a blocking ``select`` advances the loop's virtual clock."""

    def __init__(self, loop: VirtualLoop):
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        if timeout is None:  # nothing scheduled at all: only the outside world can wake us
            return self._real.select(None)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock (see the module docstring)."""

    def __init__(self) -> None:
        self._virtual_s = START_S
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_s

    def advance(self, seconds: float) -> None:
        self._virtual_s += seconds


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh ``VirtualLoop``."""
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        return runner.run(coro)
