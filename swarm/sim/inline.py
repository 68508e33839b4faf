"""Thread work run inline, so that no thread is in flight while the virtual clock jumps.

``GlobalCopy`` hashes x' on a worker thread (``swarm.averaging.state._HASHER``). On a virtual clock
a job on a thread finishes in real time the loop does not see, so ``inline_hashing`` swaps that
executor for one that runs each job at once in the caller and returns a finished future. With the
simulator's small tensors a hash takes microseconds; its CPU cost at the charged model size is
not charged (see benchmarks/swarm_sim.py for what is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from swarm.averaging import state


class InlineExecutor(Executor):
    """Runs each submitted job immediately, in the calling thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:
            future.set_exception(e)
        return future


@contextlib.contextmanager
def inline_hashing() -> Iterator[None]:
    """While inside, every ``GlobalCopy`` hashes x' inline (see the module docstring)."""
    saved = state._HASHER
    state._HASHER = InlineExecutor()  # type: ignore[assignment]
    try:
        yield
    finally:
        state._HASHER = saved
