"""The coordinator's archive: a verified copy of the checkpoints the run's members attest.

With ``swarm-coordinator serve --archive DIR --peer MADDR``, every accepted announcement wakes the
archive for its run (``submit``); it then archives the run's newest checkpoint that at least half of
the online members provide (``Store.attested_checkpoint``), never one a lone announcer made up. The
light client (``swarm.light.client``: py-libp2p, every chunk's sha256 checked, several providers in
parallel, resumed after an interruption) downloads it into ``DIR/<run>/<manifest hash>``, and the
record marks it archived. One thread, one download at a time, never delaying an RPC.

The queue is bounded by construction: it holds runs, not checkpoints (at most one entry per served
run, so a flood of announcements costs nothing), and each wake-up looks at what the run attests now.
A failed download is retried with a growing delay, from the ``--peer`` nodes in turn, while the
other runs go on; after ``RETRIES`` failures that checkpoint is given up until a newer one is attested.
The newest ``keep`` archived checkpoints of each run are kept on disk.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from coordinator.metrics import CoordinatorMetrics
from coordinator.rows import CheckpointInfo
from coordinator.store import Store
from swarm.checkpoint.bounds import DEFAULT_MAX_CHECKPOINT_BYTES
from swarm.checkpoint.manifest import Manifest

logger = logging.getLogger("swarm.coordinator")

RETRIES = 5
"""Attempts to archive one checkpoint, from the configured peers in turn."""
RETRY_FIRST_S = 5.0
"""Wait after the first failed attempt; it doubles after each next one."""
PULL_ANSWER_TIMEOUT_S = 60.0
"""The light client's bound on each answer while archiving: twice the interactive pull's default,
since the archive runs unattended and a busy swarm answers slowly."""
STOP_JOIN_S = 5.0
"""How long ``stop`` waits for a download in progress; the thread is a daemon and dies with the
coordinator after that."""


class Archiver:
    def __init__(
        self,
        folder: Path,
        peers: tuple[str, ...],
        store: Store,
        metrics: CoordinatorMetrics,
        *,
        keep: int = 3,
        max_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES,
    ):
        if not peers:
            raise ValueError("the archive needs at least one --peer to ask for checkpoints")
        if keep < 1:
            raise ValueError("the archive must keep at least one checkpoint per run")
        self.folder = folder
        self.peers = peers
        self.store = store
        self.metrics = metrics
        self.keep = keep
        self.max_bytes = max_bytes
        """No checkpoint larger is archived (checked on its manifest, before a byte is written)."""
        self._wake = threading.Condition()
        self._due: dict[str, float] = {}
        """run -> when to look at it next (monotonic): the queue, one entry per run."""
        self._failures: dict[str, tuple[str, int]] = {}
        """run -> (manifest hash, failed attempts) of the checkpoint being tried."""
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="archive", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=STOP_JOIN_S)

    def submit(self, run_id: str) -> None:
        """Look at ``run_id``'s attested checkpoint soon (called on every accepted announcement;
        never blocks; a run already waiting keeps its turn)."""
        with self._wake:
            if run_id not in self._due:
                self._due[run_id] = time.monotonic()
                self._wake.notify()

    @property
    def queued(self) -> int:
        with self._wake:
            return len(self._due)

    def _next(self) -> str | None:
        """The run whose turn has come, waiting for it; None once stopping."""
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                due = [(t, run) for run, t in self._due.items() if t <= now]
                if due:
                    run = min(due)[1]
                    del self._due[run]
                    return run
                wait = min(self._due.values()) - now if self._due else None
                self._wake.wait(wait)
            return None

    def _loop(self) -> None:
        while (run_id := self._next()) is not None:
            checkpoint = self.store.attested_checkpoint(run_id)
            if checkpoint is None or checkpoint.archived:
                continue
            digest, failed = self._failures.get(run_id, ("", 0))
            if digest == checkpoint.manifest_hash and failed >= RETRIES:
                continue  # given up: a newer attested checkpoint gets its own tries
            if digest != checkpoint.manifest_hash:
                failed = 0
            peer = self.peers[failed % len(self.peers)]
            try:
                self._archive(checkpoint, peer)
                self._failures.pop(run_id, None)
            # The boundary of one attempt: whatever failed (unreachable, refused, corrupt, disk),
            # a failed download must not end the archive's thread; it is retried, then given up.
            except Exception as e:
                failed += 1
                self._failures[run_id] = (checkpoint.manifest_hash, failed)
                logger.warning(
                    "archive: checkpoint of round %d (%s) from %s failed (attempt %d of %d): %s",
                    checkpoint.round, checkpoint.manifest_hash[:12], peer, failed, RETRIES, e,
                )  # fmt: skip
                if failed < RETRIES:
                    with self._wake:
                        self._due[run_id] = time.monotonic() + RETRY_FIRST_S * 2 ** (failed - 1)

    def path(self, checkpoint: CheckpointInfo) -> Path:
        return self.folder / checkpoint.run_id / checkpoint.manifest_hash

    def _archive(self, checkpoint: CheckpointInfo, peer: str) -> None:
        from swarm.light.client import pull

        out = self.path(checkpoint)
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)

            def before_download(manifest: Manifest, _: object) -> None:
                if manifest.hash != checkpoint.manifest_hash:
                    raise RuntimeError(
                        f"the swarm serves manifest {manifest.hash[:12]} for round {checkpoint.round},"
                        f" not the attested {checkpoint.manifest_hash[:12]}"
                    )

            pull(
                peer, out, run_id=checkpoint.run_id, round=checkpoint.round, timeout_s=PULL_ANSWER_TIMEOUT_S,
                on_manifest=before_download, max_bytes=self.max_bytes,
            )  # fmt: skip
            logger.info(
                "archive: checkpoint of round %d (%.1f MB) verified and kept in %s",
                checkpoint.round, checkpoint.total_bytes / 1e6, out,
            )  # fmt: skip
            self.metrics.archived.inc()
        self.store.mark_archived(checkpoint.run_id, checkpoint.manifest_hash)
        self._trim(checkpoint.run_id)

    def _trim(self, run_id: str) -> None:
        archived = [c for c in self.store.checkpoints(run_id, limit=1000) if c.archived]
        for stale in archived[self.keep :]:
            shutil.rmtree(self.path(stale), ignore_errors=True)
            self.store.mark_archived(run_id, stale.manifest_hash, archived=False)
