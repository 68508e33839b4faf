"""Every Prometheus metric the coordinator exports (the reference table is in docs/metrics.md).

Swarm-wide aggregates per run are computed from the store when Prometheus scrapes, so they are right
after a restart and never hold per-peer series: the run is the only label (a coordinator serves a
handful of runs). Per-peer detail is in the coordinator's API and dashboard, never in labels.
Nothing registers at import: metrics live in a registry owned by a ``CoordinatorMetrics``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.store import Store

RUN_GAUGES: dict[str, str] = {
    "swarm_run_members_online": "Peers that reported in the last 60 s and did not say they left",
    "swarm_run_peers_seen": "Peers that ever reported in the run",
    "swarm_run_samples_per_second": "Sum of the online peers' latest training throughput (sequences/s)",
    "swarm_run_round": "Round the online peers reached (lower median of their newest reports)",
    "swarm_run_global_step": "Global optimizer step of the newest reported round",
    "swarm_run_loss": "Mean training loss the peers reported for the newest round",
    "swarm_run_eval_loss": "Newest held-out loss of x' a peer reported (nats per byte)",
    "swarm_run_compression_ratio": "fp32 bytes over bytes actually sent, newest round, all peers",
    "swarm_run_latest_checkpoint_round": "Round of the newest checkpoint announced to the coordinator",
}
RUN_COUNTERS: dict[str, str] = {
    "swarm_run_samples": "Sequences trained in the run, all peers",
    "swarm_run_sent_bytes": "Bytes all peers' averagers sent",
}


class _RunCollector(Collector):
    def __init__(self, store: Store):
        self._store = store

    def collect(self) -> Iterator[Metric]:
        gauges = {name: GaugeMetricFamily(name, doc, labels=["run"]) for name, doc in RUN_GAUGES.items()}
        counters = {
            name: CounterMetricFamily(name, doc, labels=["run"]) for name, doc in RUN_COUNTERS.items()
        }
        for run_id in self._store.runs():
            s = self._store.run_summary(run_id)
            if s is None:
                continue
            values = {
                "swarm_run_members_online": s.members_online,
                "swarm_run_peers_seen": s.peers_seen,
                "swarm_run_samples_per_second": s.samples_per_s,
                "swarm_run_round": s.round,
                "swarm_run_global_step": s.global_step,
                "swarm_run_loss": math.nan if s.loss is None else s.loss,
                "swarm_run_eval_loss": math.nan if s.eval_loss is None else s.eval_loss,
                "swarm_run_compression_ratio": math.nan
                if s.compression_ratio is None
                else s.compression_ratio,
                "swarm_run_latest_checkpoint_round": (
                    math.nan if s.latest_checkpoint is None else s.latest_checkpoint.round
                ),
            }
            for name, value in values.items():
                gauges[name].add_metric([run_id], float(value))
            counters["swarm_run_samples"].add_metric([run_id], float(s.samples))
            counters["swarm_run_sent_bytes"].add_metric([run_id], float(s.sent_bytes))
        yield from gauges.values()
        yield from counters.values()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # computed at scrape time; describing would query the store at registration


class CoordinatorMetrics:
    """The coordinator's registry: its own counters plus the per-run aggregates read from ``store``."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reports = Counter(
            "swarm_coordinator_reports", "Round reports recorded (resent ones once)", registry=r
        )
        self.checkpoints = Counter(
            "swarm_coordinator_checkpoints_announced", "Checkpoint announcements accepted", registry=r
        )
        self.rpc_seconds = Histogram(
            "swarm_coordinator_rpc_seconds",
            "Time to answer a gRPC call, by method and status code",
            ["method", "code"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.rejected = Counter(
            "swarm_coordinator_rejected",
            "Requests refused, by reason (malformed, invalid, unserved_run, rate_address, rate_run,"
            " signature, credential, peer_cap, not_member, ahead, conflicting, manifest_cap, manifest_bytes)",
            ["reason"],
            registry=r,
        )
        self.archived = Counter(
            "swarm_coordinator_archived_checkpoints", "Checkpoints downloaded into the archive", registry=r
        )
        r.register(_RunCollector(store))
