"""Helper processes die with the node: the DHT process watches its parent and kills the daemon and
itself when the node's main process disappears.

hivemind forks the DHT process from the node. While ``forks_watch_parent`` is active, a fork hook
starts, in the child, a thread that polls its parent's pid; a node killed with SIGKILL then leaves
no p2pd daemon and no DHT process behind. ``abandon`` stops a DHT process whose start failed,
``stop`` one that ran.

The node decides when its DHT process ends. A terminal's Ctrl-C (SIGINT) and the systemd unit's
SIGTERM reach the whole process group; the DHT process ignores both (hivemind itself ignores
SIGINT there) and leaves when the node shuts it down, after the node has left in order. Before,
it inherited the node's asyncio SIGTERM handler, which does nothing outside the node's loop: a
DHT process whose daemon had died with the group's signal neither finished hivemind's shutdown nor
died of its SIGTERM, and the node waited for it forever. ``stop`` therefore ends with SIGKILL.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hivemind.dht import DHT

POLL_S = 0.5
"""How often the watchdog looks whether its parent is still the node: helpers outlive a killed
node by at most this long."""
JOIN_S = 5.0
"""How long ``abandon`` waits for a DHT process to die after each signal."""

# The DHT process is forked from the node; this hook arms its parent-death watchdog.
_target: dict[str, int] = {}
_hook_registered = False


def _watch_parent(parent_pid: int, daemon_pid: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent_pid:
            for pid in (daemon_pid, os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _arm_in_child() -> None:
    if _target.get("parent") == os.getppid():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        # A fatal signal (SIGABRT from abandon) writes every thread's stack to stderr first.
        faulthandler.enable(all_threads=True)
        threading.Thread(
            target=_watch_parent,
            args=(_target["parent"], _target["daemon"]),
            daemon=True,
            name="swarm-parent-watchdog",
        ).start()


@contextlib.contextmanager
def forks_watch_parent(daemon_pid: int) -> Iterator[None]:
    """While active, a process forked from this one kills ``daemon_pid`` and itself once this
    process is gone."""
    global _hook_registered
    _target.update(parent=os.getpid(), daemon=daemon_pid)
    if not _hook_registered:
        os.register_at_fork(after_in_child=_arm_in_child)
        _hook_registered = True
    try:
        yield
    finally:
        _target.clear()


def stop(dht: DHT) -> None:
    """Shut a running DHT process down: in order when it answers (hivemind's own shutdown, bounded
    by its ``shutdown_timeout``), killed when it does not (its daemon died with the group's signal:
    hivemind's SIGTERM is ignored there, see above), so that the node never waits for it unbounded."""
    dht.shutdown()
    abandon(dht, dump_stack=False)


def abandon(dht: DHT, *, dump_stack: bool) -> None:
    """Stop a DHT process that failed to start, so that nothing of it outlives the failed start."""
    if dump_stack and dht.pid is not None and dht.is_alive():
        os.kill(dht.pid, signal.SIGABRT)  # faulthandler prints its stacks, then it dies
        dht.join(JOIN_S)
    if dht.is_alive():
        dht.kill()
        dht.join(JOIN_S)
