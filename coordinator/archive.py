"""The coordinator's archive: a verified copy of every checkpoint announced to it.

With ``swarm-coordinator serve --archive DIR --peer MADDR``, each checkpoint the coordinator hears of
for the first time is downloaded by the light client (``swarm.light.client``: py-libp2p, every
chunk's sha256 checked, several providers in parallel, resumed after an interruption) into
``DIR/<run>/<manifest hash>``, and marked archived in the record. The download runs on a thread of
its own, one checkpoint at a time, and never delays an RPC; a failed download is retried with a
growing delay, from the ``--peer`` nodes in turn. The newest ``keep`` archived checkpoints of each
run are kept on disk.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from pathlib import Path

from coordinator.metrics import CoordinatorMetrics
from coordinator.rows import CheckpointInfo
from coordinator.store import Store

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
        self._queue: queue.Queue[CheckpointInfo | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="archive", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=STOP_JOIN_S)

    def submit(self, checkpoint: CheckpointInfo) -> None:
        """Archive ``checkpoint`` (called by the core for every new announcement; never blocks)."""
        self._queue.put(checkpoint)

    def path(self, checkpoint: CheckpointInfo) -> Path:
        return self.folder / checkpoint.run_id / checkpoint.manifest_hash

    def _loop(self) -> None:
        while (checkpoint := self._queue.get()) is not None:
            delay = RETRY_FIRST_S
            for attempt in range(RETRIES):
                peer = self.peers[attempt % len(self.peers)]
                try:
                    self._archive(checkpoint, peer)
                    break
                # The boundary of one attempt: whatever failed (unreachable, refused, corrupt, disk),
                # a failed download must not end the archive's thread; it is retried, then given up.
                except Exception as e:
                    logger.warning(
                        "archive: checkpoint of round %d (%s) from %s failed (attempt %d of %d): %s",
                        checkpoint.round, checkpoint.manifest_hash[:12], peer, attempt + 1, RETRIES, e,
                    )  # fmt: skip
                    time.sleep(delay)
                    delay *= 2

    def _archive(self, checkpoint: CheckpointInfo, peer: str) -> None:
        from swarm.light.client import pull

        out = self.path(checkpoint)
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            result = pull(
                peer, out, run_id=checkpoint.run_id, round=checkpoint.round, timeout_s=PULL_ANSWER_TIMEOUT_S
            )
            if result.manifest.hash != checkpoint.manifest_hash:
                shutil.rmtree(out, ignore_errors=True)
                raise RuntimeError(
                    f"the swarm serves manifest {result.manifest.hash[:12]} for round {checkpoint.round},"
                    f" not the announced {checkpoint.manifest_hash[:12]}"
                )
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
