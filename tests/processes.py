"""Child processes in their own process group, and network namespaces by name: what the swarm tests,
their NAT lab and the benchmarks' network lab all need.

A node starts its DHT process and the p2pd daemon as children. Every process started here leads its
own session, so one SIGKILL to its group also ends what it started, even after it exited itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

REAP_TIMEOUT_S = 30.0
"""How long to wait for a killed leader to be reaped: SIGKILL is not instant on a loaded machine."""


def start_logged(
    command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, append: bool = False
) -> subprocess.Popen:
    """Start ``command`` in a new session, stdout and stderr to ``log``, no stdin."""
    with open(log, "a" if append else "w") as out:
        return subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            start_new_session=True,
        )


def kill_groups(processes: Iterable[subprocess.Popen], timeout_s: float = REAP_TIMEOUT_S) -> None:
    """SIGKILL the process group of each process, then reap each leader (waiting ``timeout_s`` at most)."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)


def create_or_close(create: Callable[[], None], close: Callable[[], None]) -> None:
    """Run ``create``; when it fails half way, ``close`` what it made before the error goes on (a
    context manager's ``__exit__`` does not run when its ``__enter__`` raises)."""
    try:
        create()
    except BaseException:
        close()
        raise


def sweep_namespaces(prefix: str) -> None:
    """Delete every network namespace whose name starts with ``prefix`` (and with it its interfaces
    and qdiscs), after killing the processes still inside: they keep its interfaces alive."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
