"""A property of the coordinator's validation: whatever numbers a report carries, the core records it
exactly when every field is in its range (an oracle written from the documented bounds, not from the
code), refuses it otherwise with InvalidArgument and nothing else, and no accepted sequence of reports
can make a later read, the retention pass or a restart fail (two reports of 2^63 - 1 samples once made
the retention pass overflow SQLite's integers, every restart)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.core import (
    MAX_BYTES_PER_ROUND,
    MAX_COMPRESSION_RATIO,
    MAX_ROUND,
    MAX_SAMPLES_PER_ROUND,
    MAX_SAMPLES_PER_S,
    STATUSES,
    Coordinator,
    InvalidArgument,
    NodeReports,
    ServedRun,
)
from coordinator.rows import Report
from coordinator.store import Retention, Store

RUN = "prop." + "a" * 16
NOW = 1_800_000_000.0

uint64 = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from(
        [
            0,
            1,
            MAX_ROUND,
            MAX_ROUND + 1,
            MAX_SAMPLES_PER_ROUND,
            MAX_SAMPLES_PER_ROUND + 1,
            2**63 - 1,
            2**63,
            2**64 - 1,
        ]
    ),
)
number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -1.0, 1e300, MAX_SAMPLES_PER_S, MAX_COMPRESSION_RATIO * 2]),
)
ADVERSARIAL = {
    "round": uint64,
    "global_step": uint64,
    "loss": number,
    "samples": uint64,
    "samples_per_s": number,
    "sent_bytes": uint64,
    "received_bytes": uint64,
    "compression_ratio": number,
    "group_size": st.integers(0, 2**32 - 1),
    "time": st.one_of(st.floats(NOW - 7200, NOW + 7200), number),
    "eval_loss": number,
    "status": st.text(max_size=12),
}


@st.composite
def reports(draw: st.DrawFn) -> Report:
    """A plausible report with, most of the time, one field set to anything its wire type allows."""
    r = draw(st.integers(0, 10**6))
    report = Report(
        round=r, global_step=2 * r, loss=draw(st.none() | st.floats(0, 20)), samples=draw(st.integers(0, 4096)),
        samples_per_s=draw(st.floats(0, 1e4)), sent_bytes=draw(st.integers(0, 2**30)),
        received_bytes=draw(st.integers(0, 2**30)), compression_ratio=draw(st.floats(0, 1000)),
        group_size=draw(st.integers(1, 64)), time=draw(st.floats(NOW - 3600, NOW)),
        eval_loss=draw(st.none() | st.floats(0, 20)), status=draw(st.sampled_from(sorted(STATUSES))),
    )  # fmt: skip
    field = draw(st.sampled_from([None, *ADVERSARIAL]))
    if field is None:
        return report
    return replace(report, **{field: draw(ADVERSARIAL[field])})


def acceptable(r: Report) -> bool:
    """The documented ranges (coordinator.proto, coordinator.core), independently of the code."""
    finite = all(math.isfinite(x) for x in (r.samples_per_s, r.compression_ratio, r.time)) and r.time >= 0
    optional = all(x is None or math.isfinite(x) for x in (r.loss, r.eval_loss))
    return (
        r.status in STATUSES
        and finite
        and optional
        and 0 <= r.samples_per_s <= MAX_SAMPLES_PER_S
        and 0 <= r.compression_ratio <= MAX_COMPRESSION_RATIO
        and r.round <= MAX_ROUND
        and r.global_step <= MAX_ROUND
        and r.samples <= MAX_SAMPLES_PER_ROUND
        and r.sent_bytes <= MAX_BYTES_PER_ROUND
        and r.received_bytes <= MAX_BYTES_PER_ROUND
        and r.time <= NOW + 300
        and r.group_size <= 100_000
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(reports(), min_size=1, max_size=3), min_size=1, max_size=6))
def test_reports_are_recorded_exactly_when_in_range_and_nothing_recorded_breaks_a_read(
    batches: list[list[Report]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "c.db"
        store = Store(db, Retention(raw_window_s=60, downsampled_window_s=86400))
        core = Coordinator(store, runs=(ServedRun(RUN),), clock=lambda: NOW)
        for peer, batch in enumerate(batches):
            request = NodeReports(
                run_id=RUN,
                peer_id=f"peer{peer}",
                device="cpu",
                metrics_url="",
                addrs=(),
                reports=tuple(batch),
            )
            try:
                core.report(request)
                recorded = True
            except InvalidArgument:
                recorded = False
            assert recorded == all(acceptable(r) for r in batch), batch
        # Every read, the retention pass (an hour later: everything folds) and a restart still work.
        summary = store.run_summary(RUN, now=NOW)
        store.apply_retention(now=NOW + 3600)
        store.series(RUN)
        store.close()
        reopened = Store(db)
        try:
            after = reopened.run_summary(RUN, now=NOW)
            assert (summary is None) == (after is None)
            if after is not None:
                assert isinstance(after.samples, int) and 0 <= after.samples < 2**63
                reopened.peers(RUN)
        finally:
            reopened.close()
