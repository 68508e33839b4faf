"""What the coordinator's record says the run's online members attest, and what the caps count.

A mixin of ``coordinator.store.Store`` (its queries, kept apart from the record's writes and the
dashboard's reads): the round the members reached, the checkpoint half of them provide, whether a
peer is an online member, and the counts that the core's caps compare (peers, manifests of a round,
manifest bytes). Pure: sqlite3 through the store's ``_read``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from coordinator.rows import CheckpointInfo
from coordinator.schema import ONLINE_WINDOW_S, Retention


class AttestedReads:
    retention: Retention

    def _read(self, sql: str, params: Iterable[object] = ()) -> list[tuple]:
        raise NotImplementedError

    def checkpoints(self, run_id: str, *, limit: int = 20) -> list[CheckpointInfo]:
        raise NotImplementedError

    def attested_round(self, run_id: str, *, now: float | None = None) -> int | None:
        """The round the run's online members have reached: the lower median of their newest
        reported rounds (``swarm.dht.attestation``'s rule), so that no minority of members can
        move it; None with no member online."""
        now = time.time() if now is None else now
        rounds = sorted(
            r[0]
            for r in self._read(
                "SELECT last_round FROM peers WHERE run_id = ? AND last_seen >= ? AND left_at IS NULL",
                (run_id, now - ONLINE_WINDOW_S),
            )
        )
        return rounds[(len(rounds) - 1) // 2] if rounds else None

    def attested_checkpoint(self, run_id: str, *, now: float | None = None) -> CheckpointInfo | None:
        """The newest checkpoint that at least half of the run's online members provide (every member
        writes the same checkpoint of a round, so an honest one is provided by nearly all of them,
        and no minority can make one up); None when none is."""
        now = time.time() if now is None else now
        members = {
            r[0]
            for r in self._read(
                "SELECT peer_id FROM peers WHERE run_id = ? AND last_seen >= ? AND left_at IS NULL",
                (run_id, now - ONLINE_WINDOW_S),
            )
        }
        if not members:
            return None
        for checkpoint in self.checkpoints(run_id, limit=self.retention.checkpoints_per_run):
            if 2 * len(members & {p.peer_id for p in checkpoint.providers}) >= len(members):
                return checkpoint
        return None

    def online(self, run_id: str, peer_id: str, *, now: float | None = None) -> bool:
        """Whether ``peer_id`` reported in the run within the online window and did not say it left."""
        now = time.time() if now is None else now
        return bool(
            self._read(
                "SELECT 1 FROM peers WHERE run_id = ? AND peer_id = ? AND last_seen >= ? AND left_at IS NULL",
                (run_id, peer_id, now - ONLINE_WINDOW_S),
            )
        )

    def known_peer(self, run_id: str, peer_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM peers WHERE run_id = ? AND peer_id = ?", (run_id, peer_id)))

    def peer_count(self, run_id: str) -> int:
        return int(self._read("SELECT count(*) FROM peers WHERE run_id = ?", (run_id,))[0][0])

    def manifests_at(self, run_id: str, round: int) -> dict[str, set[str]]:
        """The manifests announced for ``round``, each with the peers that provide it."""
        found: dict[str, set[str]] = {}
        for digest, peer in self._read(
            "SELECT c.manifest_hash, p.peer_id FROM checkpoints c LEFT JOIN providers p"
            " ON p.run_id = c.run_id AND p.manifest_hash = c.manifest_hash WHERE c.run_id = ? AND c.round = ?",
            (run_id, round),
        ):
            found.setdefault(digest, set())
            if peer is not None:
                found[digest].add(peer)
        return found

    def manifest_bytes(self, run_id: str) -> int:
        """Bytes of the manifests the run's checkpoints hold."""
        return int(
            self._read(
                "SELECT coalesce(sum(length(manifest)), 0) FROM checkpoints WHERE run_id = ?", (run_id,)
            )[0][0]
        )
