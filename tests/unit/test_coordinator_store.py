"""The coordinator's SQLite record: idempotent reports, retention, checkpoint trimming, reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.rows import CheckpointInfo, Provider, Report
from coordinator.store import Retention, Store

T0 = 1_800_000_000.0  # a fixed clock: retention is tested by moving "now", never by sleeping


def report(
    round: int, t: float, *, loss: float = 2.0, eval_loss: float | None = None, alone: bool = False
) -> Report:
    """``alone``: the member was alone in its round; it reports compression 0 (no comparison)."""
    return Report(round=round, global_step=2 * round, loss=loss, samples=16, samples_per_s=8.0, sent_bytes=1000,
                  received_bytes=1000, compression_ratio=0.0 if alone else 160.0, group_size=1 if alone else 2,
                  time=t, eval_loss=eval_loss, status="committed")  # fmt: skip


def record(store: Store, peer: str, rounds: range, start: float, now: float, **kw) -> int:
    reports = [report(r, start + 10 * (r - rounds.start), **kw) for r in rounds]
    return store.record_reports("run", peer, device="cpu", metrics_url="", addrs=(), reports=reports, now=now)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(
        tmp_path / "c.db", Retention(raw_window_s=600, downsampled_window_s=3600, checkpoints_per_run=3)
    )
    yield s
    s.close()


def test_raw_reports_fold_into_minutes_and_credit_stays(store: Store) -> None:
    # Two peers, 30 rounds 10 s apart = 5 minutes of reports.
    assert record(store, "a", range(1, 31), T0, T0 + 300, loss=2.0, eval_loss=1.9) == 30
    assert record(store, "b", range(1, 31), T0, T0 + 300, loss=4.0) == 30
    before = store.series("run")
    assert [p.round for p in before] == list(range(1, 31)) and before[0].loss == pytest.approx(3.0)

    # Ten minutes later nothing is folded yet (raw window 600 s covers rounds from T0 + 10 on).
    assert store.apply_retention(now=T0 + 300) == 0
    # At T0 + 1000 every report is older than 600 s: all 60 fold into 5 minute rows.
    assert store.apply_retention(now=T0 + 1000) == 60
    counts = store.counts()
    assert counts["reports"] == 0 and 5 <= counts["minutes"] <= 6
    after = store.series("run")
    assert len(after) == counts["minutes"] and after[-1].round == 30
    assert all(p.loss == pytest.approx(3.0) and p.members == 2 for p in after)
    assert all(p.compression_ratio == pytest.approx(160.0) for p in after)
    assert any(p.eval_loss == pytest.approx(1.9) for p in after)
    # A minute holds several rounds per peer: throughput is per round, summed over peers.
    assert all(p.samples_per_s == pytest.approx(16.0) for p in after)
    # Per-peer credit is never folded away.
    assert {p.peer_id: (p.rounds, p.samples) for p in store.peers("run")} == {"a": (30, 480), "b": (30, 480)}
    summary = store.run_summary("run", now=T0 + 1000)
    assert summary is not None and summary.round == 30 and summary.samples == 960

    # Past the downsampled window the minutes go too.
    store.apply_retention(now=T0 + 300 + 3600 + 120)
    assert store.counts()["minutes"] == 0


def test_rounds_alone_keep_out_of_a_folded_minutes_compression(store: Store) -> None:
    """The first minute, "a" exchanges while "b" is alone; the second, only "b" reports, alone. Per
    round and per folded minute alike, the ratio is over the compared bytes only: 160 where "a"
    compared, None where nobody did (not 80, not 0). The first minute folds in two parts, as when
    a straggler's reports arrive after a fold."""
    record(store, "a", range(1, 7), T0, T0 + 60)
    record(store, "b", range(1, 7), T0, T0 + 60, alone=True)
    record(store, "b", range(7, 13), T0 + 60, T0 + 120, alone=True)
    per_round = [p.compression_ratio for p in store.series("run")]
    assert per_round == [pytest.approx(160.0)] * 6 + [None] * 6
    assert store.apply_retention(now=T0 + 600 + 30) == 6  # rounds 1-3 of both peers
    assert store.apply_retention(now=T0 + 600 + 200) == 12
    assert store.counts() == {**store.counts(), "reports": 0, "minutes": 2}
    assert [p.compression_ratio for p in store.series("run")] == [pytest.approx(160.0), None]


def test_a_resent_report_counts_once_and_a_too_old_one_not_at_all(store: Store) -> None:
    assert record(store, "a", range(1, 6), T0, T0 + 60) == 5
    assert record(store, "a", range(3, 9), T0 + 20, T0 + 90) == 3
    assert record(store, "a", range(20, 22), T0 - 10_000, T0 + 90) == 0  # older than the raw window
    (peer,) = store.peers("run")
    assert (peer.rounds, peer.samples, peer.last_round) == (8, 128, 8)


def test_only_the_newest_checkpoints_are_kept_with_their_providers(store: Store) -> None:
    for rnd in (10, 20, 30, 40):
        info = CheckpointInfo(run_id="run", round=rnd, global_step=rnd, manifest_hash=f"{rnd:064x}",
                              total_bytes=100, first_announced=T0 + rnd, archived=False)  # fmt: skip
        assert store.record_checkpoint(
            info, b"{}", Provider(peer_id="a", addrs=("/ip4/1.2.3.4/tcp/1",), last_announced=T0)
        )
    assert not store.record_checkpoint(info, b"{}", Provider(peer_id="b", addrs=(), last_announced=T0 + 1))
    assert [c.round for c in store.checkpoints("run")] == [40, 30, 20]
    assert store.counts()["providers"] == 4  # 3 kept checkpoints, the newest with two providers
    latest = store.checkpoint("run")
    assert latest is not None and [p.peer_id for p in latest.providers] == ["b", "a"]
    assert store.checkpoint("run", round=10) is None


def test_the_record_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    first = Store(path)
    record(first, "a", range(1, 4), T0, T0 + 30)
    first.close()
    again = Store(path)
    try:
        (peer,) = again.peers("run")
        assert peer.rounds == 3 and again.runs() == ["run"]
    finally:
        again.close()


def test_a_version_1_file_gains_the_left_column(tmp_path: Path) -> None:
    """Files written before nodes said they left open as they are, and learn who leaves from then on."""
    path = tmp_path / "v1.db"
    first = Store(path)
    record(first, "a", range(1, 3), T0, T0 + 20)
    first._db.execute("ALTER TABLE peers DROP COLUMN left_at")  # the tables of version 1
    first._db.execute("ALTER TABLE minutes DROP COLUMN compared_sent_bytes")
    first._db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    first.close()
    again = Store(path)
    try:
        assert [p.peer_id for p in again.peers("run", online=True, now=T0 + 30)] == ["a"]
        again.mark_left("run", "a", now=T0 + 40)
        assert again.peers("run", online=True, now=T0 + 50) == []
        assert again.run_summary("run", now=T0 + 50).members_online == 0  # type: ignore[union-attr]
    finally:
        again.close()


def test_a_version_2_file_gains_the_compared_bytes_of_minutes(tmp_path: Path) -> None:
    """Minutes folded before version 3 kept no compared bytes apart: their ratio stays over all their
    bytes, as it was (None where nobody compared); minutes folded from then on have it over their
    compared reports."""
    path = tmp_path / "v2.db"
    retention = Retention(raw_window_s=600, downsampled_window_s=3600)
    first = Store(path, retention)
    record(first, "a", range(1, 7), T0, T0 + 60)
    record(first, "b", range(1, 7), T0, T0 + 60, alone=True)
    record(first, "b", range(7, 13), T0 + 60, T0 + 120, alone=True)
    assert first.apply_retention(now=T0 + 600 + 120) == 18
    first._db.execute("ALTER TABLE minutes DROP COLUMN compared_sent_bytes")  # the minutes of version 2
    first._db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    first.close()
    again = Store(path, retention)
    try:
        record(again, "a", range(13, 19), T0 + 120, T0 + 600 + 120)
        record(again, "b", range(13, 19), T0 + 120, T0 + 600 + 120, alone=True)
        assert again.apply_retention(now=T0 + 600 + 180) == 12
        ratios = [p.compression_ratio for p in again.series("run")]
        assert ratios == [pytest.approx(80.0), None, pytest.approx(160.0)]
    finally:
        again.close()


def test_aggregates_saturate_instead_of_overflowing(store: Store) -> None:
    """However many rows hold huge counts (the core bounds each report; a record written before, or by
    hand, need not be), no fold or update can overflow SQLite's integers: aggregates stop at SATURATE."""
    from dataclasses import replace

    from coordinator.store import SATURATE

    for peer in ("a", "b", "c"):
        huge = [replace(report(r, T0 + r), samples=2**62, sent_bytes=2**62) for r in range(1, 4)]
        store.record_reports("run", peer, device="cpu", metrics_url="", addrs=(), reports=huge, now=T0 + 10)
    assert store.apply_retention(now=T0 + 3000) == 9  # one minute of nine reports, folded
    summary = store.run_summary("run", now=T0 + 10)
    assert summary is not None and summary.samples == summary.sent_bytes == int(SATURATE)
    assert len(store.series("run")) == 1  # the folded minute reads back
    assert {p.peer_id: p.samples for p in store.peers("run")} == {p: int(SATURATE) for p in "abc"}
