"""A node's data folder: what a volunteer keeps across restarts without being told to.

    <home>/identity.key                    this node's peer key: its peer id, so its credit and the
                                           run id it pins as a founder
    <home>/lock                            held (flock) while a node uses the folder
    <home>/runs/<run id>/checkpoints/      the checkpoints it serves, and the run's artifacts
                                           (artifacts/: a restart fetches nothing again)
    <home>/runs/<run id>/resume/           its resume state (x_i, optimizer, data position)

The folder is ``--home``, else ``$SWARM_HOME``, else ``$XDG_DATA_HOME/swarm``, else
``~/.local/share/swarm``. ``--identity``, ``--checkpoint-dir`` and ``--resume`` still choose their own
paths. Two nodes never share a folder: the second is refused with one line (give each its own
``--home``). ``--ephemeral`` keeps nothing: a fresh key and a temporary folder removed at exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeError

LOCK_FILE = "lock"
IDENTITY_FILE = "identity.key"


def default_home() -> Path:
    if os.environ.get("SWARM_HOME"):
        return Path(os.environ["SWARM_HOME"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "swarm"


@dataclass(frozen=True)
class Home:
    """Where this node keeps its state; ``kept`` is False for ``--ephemeral`` (removed at exit)."""

    root: Path
    kept: bool

    def identity(self) -> Path:
        return self.root / IDENTITY_FILE

    def checkpoints(self, run_id: str) -> Path:
        return self.root / "runs" / run_id / "checkpoints"

    def resume(self, run_id: str) -> Path | None:
        """None for an ephemeral home: a node that keeps nothing does not resume."""
        return self.root / "runs" / run_id / "resume" if self.kept else None


@contextlib.contextmanager
def opened_home(home: str | None, *, ephemeral: bool) -> Iterator[Home]:
    """This node's home (``--home``, else ``default_home()``) for as long as it runs: locked
    (NodeError when another node holds it), or a temporary folder for ``--ephemeral``."""
    if ephemeral:
        scratch = Path(tempfile.mkdtemp(prefix="swarm-node-"))
        try:
            yield Home(scratch, kept=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    root = Path(home) if home else default_home()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the node's life)
    except OSError as e:
        raise NodeError(
            f"data folder {root}: {e.strerror} (choose another with --home, or --ephemeral)"
        ) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise NodeError(
                f"data folder {root} is in use by another swarm-node (pid {holder}): give each node its own"
                " --home (or --ephemeral)"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield Home(root, kept=True)
