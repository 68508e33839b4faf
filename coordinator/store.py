"""The coordinator's record: SQLite in WAL mode, one file, safe against the process being killed.

Every write is one transaction, committed before the caller acknowledges anything, so a report or
an announcement the coordinator answered survives SIGKILL (WAL with ``synchronous=NORMAL`` loses
nothing on a process crash; only a power cut can drop the newest transactions).

Retention (``Retention``): raw round reports are kept for ``raw_window_s`` (default one hour), then
folded into one row per run and minute (reports, loss, samples, throughput, bytes, and apart the
bytes of the reports that carry a compression ratio: ``COMPARED_SENT``), kept for
``downsampled_window_s`` (default 30 days). Per-peer credit (rounds, samples) lives in the peers
table and is never dropped. Checkpoints keep their newest ``checkpoints_per_run`` (default 100).

Pure: sqlite3 and the standard library only; one connection behind a lock (SQLite serialises
writers anyway, and a report is ~50 us of work).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator.attested import AttestedReads
from coordinator.rows import CheckpointInfo, PeerInfo, Provider, Report, RunSummary, SeriesPoint
from coordinator.schema import (
    ADDED_COLUMNS,
    BUSY_TIMEOUT_MS,
    COMPARED_SENT,
    MAX_INTEGER,
    ONLINE_WINDOW_S,
    PROVIDED,
    SATURATE,
    SCHEMA,
    SCHEMA_VERSION,
    Retention,
    saturating_plus,
    saturating_sum,
)

__all__ = ["ONLINE_WINDOW_S", "SATURATE", "Retention", "Store"]


class Store(AttestedReads):
    """The coordinator's SQLite file. Thread-safe; ``close()`` when done."""

    def __init__(self, path: Path | str, retention: Retention | None = None):
        self.path = Path(path)
        self.retention = retention or Retention()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.executescript(SCHEMA)  # idempotent (IF NOT EXISTS); executescript commits by itself
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {row[0]}, this coordinator reads {SCHEMA_VERSION}"
            )
        elif int(row[0]) < SCHEMA_VERSION:
            with self._transaction() as db:
                for table, column, kind in ADDED_COLUMNS:
                    if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:  # whatever interrupts a transaction (KeyboardInterrupt too) undoes it
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # --- writes ---------------------------------------------------------------------------------

    def record_reports(
        self,
        run_id: str,
        peer_id: str,
        *,
        device: str,
        metrics_url: str,
        addrs: tuple[str, ...],
        reports: list[Report],
        now: float | None = None,
    ) -> int:
        """Store a peer's round reports; returns how many were new (a resent one counts once)."""
        now = time.time() if now is None else now
        oldest = now - self.retention.raw_window_s
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, first_seen, last_seen) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET last_seen = excluded.last_seen",
                (run_id, now, now),
            )
            new, samples, sent, last_round, rate = 0, 0, 0, -1, None
            for r in reports:
                if r.time < oldest:
                    continue  # older than the raw window: folded already, or too late to count
                cursor = db.execute(
                    "INSERT OR IGNORE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, peer_id, r.round, r.global_step, r.loss, r.samples, r.samples_per_s,
                     r.sent_bytes, r.received_bytes, r.compression_ratio, r.group_size, r.time,
                     r.eval_loss, r.status),
                )  # fmt: skip
                if cursor.rowcount:
                    new += 1
                    samples += r.samples
                    sent += r.sent_bytes
                if r.round > last_round:
                    last_round, rate = r.round, r.samples_per_s
            db.execute(
                "INSERT INTO peers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (run_id, peer_id)"
                " DO UPDATE SET device = excluded.device, metrics_url = excluded.metrics_url,"
                " addrs = excluded.addrs, last_seen = excluded.last_seen, left_at = NULL,"
                " last_round = max(last_round, excluded.last_round),"
                " samples_per_s = CASE WHEN excluded.last_round >= last_round"
                "   THEN excluded.samples_per_s ELSE samples_per_s END,"
                f" rounds = rounds + excluded.rounds, samples = {saturating_plus('samples', 'excluded.samples')}",
                (run_id, peer_id, device, metrics_url, json.dumps(list(addrs)), now, now,
                 max(last_round, 0), rate or 0.0, new, min(samples, int(SATURATE))),
            )  # fmt: skip
            if new:
                db.execute(
                    f"UPDATE runs SET samples = {saturating_plus('samples', '?')}, sent_bytes = {saturating_plus('sent_bytes', '?')}"
                    " WHERE run_id = ?",
                    (min(samples, int(SATURATE)), min(sent, int(SATURATE)), run_id),
                )
        return new

    def mark_left(self, run_id: str, peer_id: str, *, now: float | None = None) -> None:
        """The peer said it left: it is no longer online (until it reports again)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "UPDATE peers SET left_at = ? WHERE run_id = ? AND peer_id = ?", (now, run_id, peer_id)
            )

    def record_checkpoint(
        self,
        checkpoint: CheckpointInfo,
        manifest: bytes,
        provider: Provider,
    ) -> bool:
        """Store an announced checkpoint and its provider; True if the manifest was new."""
        c = checkpoint
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, first_seen, last_seen) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET last_seen = excluded.last_seen",
                (c.run_id, c.first_announced, c.first_announced),
            )
            cursor = db.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (c.run_id, c.manifest_hash, c.round, c.global_step, c.total_bytes, c.first_announced,
                 manifest),
            )  # fmt: skip
            db.execute(
                "INSERT INTO providers VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, manifest_hash, peer_id)"
                " DO UPDATE SET addrs = excluded.addrs, last_announced = excluded.last_announced",
                (c.run_id, c.manifest_hash, provider.peer_id, json.dumps(list(provider.addrs)),
                 provider.last_announced),
            )  # fmt: skip
            new = bool(cursor.rowcount)
            if new:
                self._trim_checkpoints(db, c.run_id)
        return new

    def mark_archived(self, run_id: str, manifest_hash: str, archived: bool = True) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE checkpoints SET archived = ? WHERE run_id = ? AND manifest_hash = ?",
                (int(archived), run_id, manifest_hash),
            )

    def _trim_checkpoints(self, db: sqlite3.Connection, run_id: str) -> None:
        """Keep the newest rounds' checkpoints, the most provided first within a round."""
        keep = self.retention.checkpoints_per_run
        stale = db.execute(
            f"SELECT manifest_hash FROM checkpoints c WHERE run_id = ? ORDER BY round DESC, {PROVIDED} DESC,"
            " first_announced DESC LIMIT -1 OFFSET ?",
            (run_id, keep),
        ).fetchall()
        for (digest,) in stale:
            db.execute("DELETE FROM checkpoints WHERE run_id = ? AND manifest_hash = ?", (run_id, digest))
            db.execute("DELETE FROM providers WHERE run_id = ? AND manifest_hash = ?", (run_id, digest))

    def apply_retention(self, now: float | None = None) -> int:
        """Fold raw reports older than the raw window into per-minute rows; returns reports folded."""
        now = time.time() if now is None else now
        cutoff = now - self.retention.raw_window_s
        with self._transaction() as db:
            # Reports of one minute can arrive in two folds (a straggler's resend): merge into the row.
            db.execute(
                f"""
                INSERT INTO minutes (run_id, minute, reports, peers, max_round, loss_sum, loss_count,
                    eval_loss, samples, samples_per_s_sum, sent_bytes, received_bytes, fp32_bytes,
                    compared_sent_bytes)
                SELECT run_id, CAST(time / 60 AS INTEGER) AS minute, count(*), count(DISTINCT peer_id),
                       max(round), coalesce(sum(loss), 0), count(loss),
                       (SELECT eval_loss FROM reports r2 WHERE r2.run_id = r.run_id
                          AND CAST(r2.time / 60 AS INTEGER) = CAST(r.time / 60 AS INTEGER)
                          AND r2.eval_loss IS NOT NULL AND r2.time < ? ORDER BY r2.time DESC LIMIT 1),
                       {saturating_sum("samples")}, total(samples_per_s), {saturating_sum("sent_bytes")},
                       {saturating_sum("received_bytes")}, total(sent_bytes * compression_ratio),
                       {saturating_sum("CASE WHEN compression_ratio > 0 THEN sent_bytes END")}
                FROM reports r WHERE time < ? GROUP BY run_id, minute
                ON CONFLICT (run_id, minute) DO UPDATE SET
                    reports = reports + excluded.reports, peers = max(peers, excluded.peers),
                    max_round = max(max_round, excluded.max_round),
                    loss_sum = loss_sum + excluded.loss_sum, loss_count = loss_count + excluded.loss_count,
                    eval_loss = coalesce(excluded.eval_loss, eval_loss),
                    samples = {saturating_plus("samples", "excluded.samples")},
                    samples_per_s_sum = samples_per_s_sum + excluded.samples_per_s_sum,
                    sent_bytes = {saturating_plus("sent_bytes", "excluded.sent_bytes")},
                    received_bytes = {saturating_plus("received_bytes", "excluded.received_bytes")},
                    fp32_bytes = fp32_bytes + excluded.fp32_bytes,
                    compared_sent_bytes = {saturating_plus("compared_sent_bytes", "excluded.compared_sent_bytes")}
                """,
                (cutoff, cutoff),
            )
            folded = db.execute("DELETE FROM reports WHERE time < ?", (cutoff,)).rowcount
            db.execute(
                "DELETE FROM minutes WHERE minute < ?", ((now - self.retention.downsampled_window_s) / 60,)
            )
        return folded

    # --- reads ----------------------------------------------------------------------------------

    def runs(self) -> list[str]:
        return [r[0] for r in self._read("SELECT run_id FROM runs ORDER BY last_seen DESC")]

    def peers(
        self, run_id: str, *, seen_within_s: float = 0.0, online: bool = False, now: float | None = None
    ) -> list[PeerInfo]:
        """Peers seen within ``seen_within_s`` (0: ever); ``online``: those of the online window
        (``ONLINE_WINDOW_S``) that did not say they left since."""
        now = time.time() if now is None else now
        if online:
            seen_within_s = ONLINE_WINDOW_S
        since = now - seen_within_s if seen_within_s > 0 else float("-inf")
        rows = self._read(
            "SELECT peer_id, device, metrics_url, addrs, first_seen, last_seen, last_round, samples_per_s,"
            " rounds, samples FROM peers WHERE run_id = ? AND last_seen >= ?"
            f"{' AND left_at IS NULL' if online else ''} ORDER BY last_seen DESC",
            (run_id, since),
        )
        return [
            PeerInfo(
                peer_id=r[0],
                device=r[1],
                metrics_url=r[2],
                addrs=tuple(json.loads(r[3])),
                first_seen=r[4],
                last_seen=r[5],
                last_round=r[6],
                samples_per_s=r[7],
                rounds=r[8],
                samples=r[9],
            )
            for r in rows
        ]

    def checkpoints(self, run_id: str, *, limit: int = 20) -> list[CheckpointInfo]:
        rows = self._read(
            "SELECT manifest_hash FROM checkpoints WHERE run_id = ? ORDER BY round DESC, first_announced DESC"
            " LIMIT ?",
            (run_id, limit),
        )
        return [c for (digest,) in rows if (c := self.checkpoint(run_id, manifest_hash=digest)) is not None]

    def checkpoint(
        self,
        run_id: str,
        *,
        manifest_hash: str | None = None,
        round: int | None = None,
        now: float | None = None,
    ) -> CheckpointInfo | None:
        """By hash, by round (the most provided of its manifests), or (neither given) the newest one
        the members attest: of a round no later than ``attested_round``, the most provided."""
        where, params = "run_id = ?", list[object]([run_id])
        if manifest_hash is not None:
            where, params = where + " AND manifest_hash = ?", [*params, manifest_hash]
        elif round is not None:
            where, params = where + " AND round = ?", [*params, round]
        elif (reached := self.attested_round(run_id, now=now)) is not None:
            where, params = where + " AND round <= ?", [*params, reached]
        rows = self._read(
            "SELECT manifest_hash, round, global_step, total_bytes, first_announced, archived FROM checkpoints c"
            f" WHERE {where} ORDER BY round DESC, {PROVIDED} DESC, first_announced DESC LIMIT 1",
            params,
        )
        if not rows:
            return None
        digest, rnd, step, size, first, archived = rows[0]
        providers = self._read(
            "SELECT peer_id, addrs, last_announced FROM providers WHERE run_id = ? AND manifest_hash = ?"
            " ORDER BY last_announced DESC",
            (run_id, digest),
        )
        return CheckpointInfo(
            run_id=run_id, round=rnd, global_step=step, manifest_hash=digest, total_bytes=size,
            first_announced=first, archived=bool(archived),
            providers=tuple(Provider(peer_id=p, addrs=tuple(json.loads(a)), last_announced=t)
                            for p, a, t in providers),
        )  # fmt: skip

    def manifest(self, run_id: str, manifest_hash: str) -> bytes | None:
        rows = self._read(
            "SELECT manifest FROM checkpoints WHERE run_id = ? AND manifest_hash = ?", (run_id, manifest_hash)
        )
        return bytes(rows[0][0]) if rows else None

    def run_summary(self, run_id: str, *, now: float | None = None) -> RunSummary | None:
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT first_seen, last_seen, samples, sent_bytes FROM runs WHERE run_id = ?", (run_id,)
        )
        if not rows:
            return None
        first, last, samples, sent = rows[0]
        online = self.peers(run_id, online=True, now=now)
        # The round the online members attest, not the newest any peer claims: one peer's report of
        # a far-off round must not become the run's.
        reached = self.attested_round(run_id, now=now)
        newest = self._read(
            "SELECT round, global_step FROM reports WHERE run_id = ? AND round <= ? ORDER BY round DESC LIMIT 1",
            (run_id, MAX_INTEGER if reached is None else reached),
        )
        rnd, step = newest[0] if newest else (0, 0)
        if not newest:  # every raw report was folded: the newest minute still knows the round
            folded = self._read("SELECT max(max_round) FROM minutes WHERE run_id = ?", (run_id,))
            rnd = folded[0][0] or 0
        loss_row = self._read(
            f"SELECT avg(loss), sum(sent_bytes * compression_ratio), {COMPARED_SENT} FROM reports"
            " WHERE run_id = ? AND round = ? AND loss IS NOT NULL",
            (run_id, rnd),
        )
        loss, fp32, sent_round = loss_row[0] if loss_row else (None, None, None)
        evals = self._read(
            "SELECT eval_loss FROM reports WHERE run_id = ? AND eval_loss IS NOT NULL ORDER BY round DESC LIMIT 1",
            (run_id,),
        )
        peers_seen = self._read("SELECT count(*) FROM peers WHERE run_id = ?", (run_id,))[0][0]
        return RunSummary(
            run_id=run_id, first_seen=first, last_seen=last, round=rnd, global_step=step,
            members_online=len(online), samples_per_s=sum(p.samples_per_s for p in online),
            loss=loss, eval_loss=evals[0][0] if evals else None, samples=samples, sent_bytes=sent,
            compression_ratio=(fp32 / sent_round) if sent_round else None, peers_seen=peers_seen,
            latest_checkpoint=self.checkpoint(run_id, now=now),
        )  # fmt: skip

    def series(self, run_id: str, *, since: float = 0.0, max_points: int = 2000) -> list[SeriesPoint]:
        """The run over time: per minute where only folded rows remain, per round in the raw window."""
        minutes = self._read(
            "SELECT minute, max_round, loss_sum, loss_count, eval_loss, samples_per_s_sum, reports, peers,"
            " sent_bytes, fp32_bytes, coalesce(compared_sent_bytes, sent_bytes) FROM minutes"
            " WHERE run_id = ? AND minute >= ? ORDER BY minute",
            (run_id, since / 60),
        )
        points = [
            SeriesPoint(
                time=m * 60.0,
                round=rnd,
                loss=(ls / lc) if lc else None,
                eval_loss=ev,
                # A minute holds several rounds of each peer: per-peer throughputs average over them.
                samples_per_s=sps / max(1, reports) * peers,
                members=peers,
                sent_bytes=sent,
                # Over the compared reports, as per round (rows folded before schema 3 kept no
                # compared bytes apart: theirs is over all their bytes, None where none compared).
                compression_ratio=(fp32 / compared) if fp32 and compared else None,
            )
            for m, rnd, ls, lc, ev, sps, reports, peers, sent, fp32, compared in minutes
        ]
        rounds = self._read(
            "SELECT round, max(time), avg(loss), max(eval_loss), sum(samples_per_s), count(*), sum(sent_bytes),"
            f" sum(sent_bytes * compression_ratio), {COMPARED_SENT} FROM reports WHERE run_id = ? AND time >= ?"
            " GROUP BY round ORDER BY round DESC LIMIT ?",
            (run_id, since, max_points),
        )
        points += [
            SeriesPoint(
                time=t,
                round=rnd,
                loss=loss,
                eval_loss=ev,
                samples_per_s=sps,
                members=n,
                sent_bytes=sent,
                compression_ratio=(fp32 / compared) if compared else None,
            )
            for rnd, t, loss, ev, sps, n, sent, fp32, compared in reversed(rounds)
        ]
        return points[-max_points:]

    def counts(self) -> dict[str, int]:
        """Rows per table (the retention benchmark and tests read it)."""
        return {
            table: self._read(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("runs", "peers", "reports", "minutes", "checkpoints", "providers")
        }
