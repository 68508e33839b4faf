"""The coordinator's SQLite schema, its retention settings, and the SQL pieces its queries share.

Pure: the standard library only (``coordinator.store`` runs the queries).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 3
"""2: peers.left_at (when a node said it left). 3: minutes.compared_sent_bytes (the compared
reports' bytes, apart; NULL in rows folded before). An older file gains the columns when opened."""
ONLINE_WINDOW_S = 60.0
"""A peer is online while it reported within this window and has not said it left."""
MAX_INTEGER = 2**63 - 1
SATURATE = 9.0e18
"""Every integer aggregate stops here, below SQLite's 2^63: sums are taken as floats (``total``) and
added as floats, so no stored row, however many, can make a fold or an update overflow."""


def saturating_sum(expression: str) -> str:
    """SQL: the sum of an integer ``expression`` over a group, saturating at ``SATURATE``."""
    return f"CAST(min(total({expression}), {SATURATE}) AS INTEGER)"


def saturating_plus(column: str, addend: str) -> str:
    """SQL: ``column + addend``, saturating at ``SATURATE``."""
    return f"CAST(min(CAST({column} AS REAL) + {addend}, {SATURATE}) AS INTEGER)"


COMPARED_SENT = "sum(CASE WHEN compression_ratio > 0 THEN sent_bytes END)"
"""Bytes sent in reports that carry a compression ratio: a member alone in its round moves nothing
and reports 0 (no comparison, not "no compression"); its rounds have no ratio (None), and within
a round only the members that exchanged count. A folded minute keeps them apart
(``minutes.compared_sent_bytes``): its ratio is the same one over its compared reports."""
PROVIDED = (
    "(SELECT count(*) FROM providers p WHERE p.run_id = c.run_id AND p.manifest_hash = c.manifest_hash)"
)
"""How many providers announced checkpoint ``c``: among manifests of one round, the most provided
is the one the members attest."""
ADDED_COLUMNS = (("peers", "left_at", "REAL"), ("minutes", "compared_sent_bytes", "INTEGER"))
"""Columns that later schema versions added: (table, column, type)."""
BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another connection's lock on the file (a backup, an inspecting
sqlite3 shell) before it fails."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    samples INTEGER NOT NULL DEFAULT 0, sent_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS peers (
    run_id TEXT NOT NULL, peer_id TEXT NOT NULL, device TEXT NOT NULL, metrics_url TEXT NOT NULL,
    addrs TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    last_round INTEGER NOT NULL, samples_per_s REAL NOT NULL,
    rounds INTEGER NOT NULL, samples INTEGER NOT NULL, left_at REAL,
    PRIMARY KEY (run_id, peer_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
    run_id TEXT NOT NULL, peer_id TEXT NOT NULL, round INTEGER NOT NULL, global_step INTEGER NOT NULL,
    loss REAL, samples INTEGER NOT NULL, samples_per_s REAL NOT NULL, sent_bytes INTEGER NOT NULL,
    received_bytes INTEGER NOT NULL, compression_ratio REAL NOT NULL, group_size INTEGER NOT NULL,
    time REAL NOT NULL, eval_loss REAL, status TEXT NOT NULL,
    PRIMARY KEY (run_id, peer_id, round)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reports_by_time ON reports (run_id, time);
CREATE TABLE IF NOT EXISTS minutes (
    run_id TEXT NOT NULL, minute INTEGER NOT NULL, reports INTEGER NOT NULL, peers INTEGER NOT NULL,
    max_round INTEGER NOT NULL, loss_sum REAL NOT NULL, loss_count INTEGER NOT NULL,
    eval_loss REAL, samples INTEGER NOT NULL, samples_per_s_sum REAL NOT NULL,
    sent_bytes INTEGER NOT NULL, received_bytes INTEGER NOT NULL, fp32_bytes REAL NOT NULL,
    compared_sent_bytes INTEGER,
    PRIMARY KEY (run_id, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL, manifest_hash TEXT NOT NULL, round INTEGER NOT NULL,
    global_step INTEGER NOT NULL, total_bytes INTEGER NOT NULL, first_announced REAL NOT NULL,
    manifest BLOB NOT NULL, archived INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, manifest_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkpoints_by_round ON checkpoints (run_id, round);
CREATE TABLE IF NOT EXISTS providers (
    run_id TEXT NOT NULL, manifest_hash TEXT NOT NULL, peer_id TEXT NOT NULL, addrs TEXT NOT NULL,
    last_announced REAL NOT NULL,
    PRIMARY KEY (run_id, manifest_hash, peer_id)
) WITHOUT ROWID;
"""


@dataclass(kw_only=True)
class Retention:
    raw_window_s: float = 3600.0
    """Raw round reports older than this are folded into per-minute rows."""
    downsampled_window_s: float = 30 * 86400.0
    """Per-minute rows older than this are dropped."""
    checkpoints_per_run: int = 100
    """Checkpoints kept per run (newest rounds); older ones and their providers are dropped."""

    def __post_init__(self) -> None:
        if not (60 <= self.raw_window_s <= self.downsampled_window_s):
            raise ValueError("retention needs 60 <= raw_window_s <= downsampled_window_s")
        if self.checkpoints_per_run < 1:
            raise ValueError("checkpoints_per_run must be at least 1")
