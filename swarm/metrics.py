"""Every Prometheus metric of a node, declared in one place.

Metrics live in a registry owned by a ``NodeMetrics`` instance (nothing registers at import).
Names follow Prometheus conventions: prefix ``swarm_``, base units, ``_total`` for counters, and no
per-peer or per-step labels.

| metric | type | meaning |
|---|---|---|
| swarm_step | gauge | local optimizer steps this node has run |
| swarm_global_step | gauge | the swarm's global step, carried with x' |
| swarm_round | gauge | round id of this node's x' |
| swarm_loss | gauge | training loss of the last local step |
| swarm_eval_loss | gauge | held-out loss of x', nats per byte |
| swarm_checkpoint_round | gauge | round of the newest checkpoint this node wrote and serves |
| swarm_samples_total | counter | sequences this node trained on |
| swarm_rounds_total{status} | counter | rounds by outcome: committed, aborted, no_group, repair |
| swarm_sent_bytes_total | counter | bytes the averager wrote to streams |
| swarm_received_bytes_total | counter | bytes the averager read from streams |
| swarm_round_sent_bytes | gauge | bytes the averager wrote during the last round |
| swarm_round_received_bytes | gauge | bytes the averager read during the last round |
| swarm_compression_ratio | gauge | fp32 payload bytes over bytes moved, last committed round |
| swarm_round_period_seconds | gauge | wall-clock seconds between rounds: the period the swarm uses now; with --local-steps (no period) the measured time between this node's last two rounds, 0 until it has two |
| swarm_round_duration_seconds | histogram | from rendezvous to commit |
| swarm_loop_cpu_seconds_total | counter | CPU time of the node's averaging: the event loop thread (encoding, decoding, reductions, applying rounds, the protocol) and the worker that hashes x' (training has its own thread) |
| swarm_training_idle_seconds_total | counter | wall time the training thread stood still between rounds: waiting for the last round's exchange, applying it, preparing the next contribution |
| swarm_group_size | gauge | members in the last round |
| swarm_local_steps_per_round | gauge | local steps before the last round |
| swarm_aborted_shards_total | counter | shards of committed rounds that nobody applied |
| swarm_rejected_messages_total | counter | malformed or invalid messages from peers |
| swarm_repairs_total | counter | times this node replaced its x' from a peer |
| swarm_excluded_parts_total | counter | shard parts this node excluded as an owner (invalid, NaN/Inf, outlier, banned) |
| swarm_banned_peers | gauge | peers this node refuses now for an excluded part |
| swarm_peers | gauge | peers this node's libp2p host is connected to |
| swarm_relayed_peers | gauge | of those, peers reached only through a relay (/p2p-circuit) |
| swarm_paused | gauge | 1 while the volunteer paused local training (swarm-node pause) |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.step = Gauge("swarm_step", "Local optimizer steps this node has run", registry=r)
        self.global_step = Gauge("swarm_global_step", "Global step carried with x'", registry=r)
        self.round = Gauge("swarm_round", "Round id of this node's x'", registry=r)
        self.loss = Gauge("swarm_loss", "Training loss of the last local step", registry=r)
        self.eval_loss = Gauge("swarm_eval_loss", "Held-out loss of x' in nats per byte", registry=r)
        self.checkpoint_round = Gauge(
            "swarm_checkpoint_round", "Round of the newest checkpoint this node wrote and serves", registry=r
        )
        self.samples = Counter("swarm_samples", "Sequences this node trained on", registry=r)
        self.artifact_bytes = Counter(
            "swarm_artifact_fetched_bytes",
            "Bytes of the run's artifacts (model, data) this node fetched from members",
            ["kind"],
            registry=r,
        )
        self.rounds = Counter("swarm_rounds", "Rounds by outcome", ["status"], registry=r)
        self.sent_bytes = Counter("swarm_sent_bytes", "Bytes the averager wrote to streams", registry=r)
        self.received_bytes = Counter(
            "swarm_received_bytes", "Bytes the averager read from streams", registry=r
        )
        self.round_sent_bytes = Gauge(
            "swarm_round_sent_bytes", "Bytes the averager wrote during the last round", registry=r
        )
        self.round_received_bytes = Gauge(
            "swarm_round_received_bytes", "Bytes the averager read during the last round", registry=r
        )
        self.compression_ratio = Gauge(
            "swarm_compression_ratio",
            "fp32 payload bytes over bytes moved in the last committed round",
            registry=r,
        )
        self.round_period = Gauge(
            "swarm_round_period_seconds",
            "Wall-clock seconds between rounds: the period the swarm uses now; with --local-steps, where"
            " rounds start when their steps are done and follow no period, the measured time between this"
            " node's last two rounds (0 until it has two)",
            registry=r,
        )
        self.round_duration = Histogram(
            "swarm_round_duration_seconds",
            "Round time from rendezvous to commit",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120, 300),
            registry=r,
        )
        self.loop_cpu = Counter(
            "swarm_loop_cpu_seconds",
            "CPU time of averaging: the event loop thread (codec, reductions, applying rounds, protocol) and the x' hashing worker",
            registry=r,
        )
        self.training_idle = Counter(
            "swarm_training_idle_seconds",
            "Wall time training stood still between rounds: waiting for a round, applying it, preparing the next",
            registry=r,
        )
        self.group_size = Gauge("swarm_group_size", "Members in the last round", registry=r)
        self.local_steps_per_round = Gauge(
            "swarm_local_steps_per_round", "Local steps before the last round", registry=r
        )
        self.aborted_shards = Counter(
            "swarm_aborted_shards", "Shards of committed rounds nobody applied", registry=r
        )
        self.rejected = Counter(
            "swarm_rejected_messages", "Malformed or invalid messages from peers", registry=r
        )
        self.repairs = Counter("swarm_repairs", "Times this node replaced its x' from a peer", registry=r)
        self.excluded_parts = Counter(
            "swarm_excluded_parts", "Shard parts excluded as an owner (invalid, NaN/Inf, outlier)", registry=r
        )
        self.banned_peers = Gauge("swarm_banned_peers", "Peers refused now for an excluded part", registry=r)
        self.peers = Gauge("swarm_peers", "Connected libp2p peers", registry=r)
        self.relayed_peers = Gauge(
            "swarm_relayed_peers", "Connected peers reached only through a relay", registry=r
        )
        self.paused = Gauge("swarm_paused", "1 while local training is paused", registry=r)
        for status in ("committed", "aborted", "no_group", "repair"):
            self.rounds.labels(status=status)

    def count_bytes(self, sent: int, received: int) -> None:
        if sent:
            self.sent_bytes.inc(sent)
        if received:
            self.received_bytes.inc(received)

    def serve(self, port: int, host: str) -> int:
        """Start the /metrics HTTP server in a thread; returns the bound port (useful with port 0)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
