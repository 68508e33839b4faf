"""The metrics reference lists exactly what the processes export; Grafana queries only those."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client import generate_latest

from coordinator.metrics import CoordinatorMetrics
from coordinator.rows import Report
from coordinator.store import Store
from swarm.metrics import NodeMetrics

ROOT = Path(__file__).resolve().parents[2]


def exported(registry) -> set[str]:
    """Metric names as Prometheus stores them (counters with _total; histograms by their base name)."""
    text = generate_latest(registry).decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if name.endswith("_created"):
            continue  # the client library's creation timestamps of counters and histograms
        names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


def coordinator_metrics(tmp_path: Path) -> set[str]:
    store = Store(tmp_path / "c.db")
    try:
        report = Report(round=1, global_step=1, loss=2.0, samples=4, samples_per_s=1.0, sent_bytes=10,
                        received_bytes=10, compression_ratio=100.0, group_size=2, time=time.time(),
                        eval_loss=2.1, status="committed")  # fmt: skip
        store.record_reports("r", "p", device="cpu", metrics_url="", addrs=(), reports=[report])
        return exported(CoordinatorMetrics(store).registry)
    finally:
        store.close()


def documented() -> set[str]:
    table = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(swarm_[a-z_]+)` \|", table, re.M))


def test_the_reference_table_lists_exactly_the_exported_metrics(tmp_path: Path) -> None:
    actual = exported(NodeMetrics().registry) | coordinator_metrics(tmp_path)
    assert documented() == actual, {
        "exported, not documented": actual - documented(),
        "documented, not exported": documented() - actual,
    }
    assert all(name.startswith("swarm_") for name in actual)


def test_every_metric_the_grafana_dashboard_queries_exists(tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "swarm.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)
    ]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", m) for e in expressions for m in re.findall(r"swarm_[a-z_]+", e)
    }
    assert len(used) >= 10
    actual = exported(NodeMetrics().registry) | coordinator_metrics(tmp_path)
    assert used <= actual, f"the dashboard queries metrics nobody exports: {sorted(used - actual)}"
