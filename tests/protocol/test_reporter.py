"""The node's reporter against a real coordinator server: it keeps reports while the coordinator is
away, delivers them once it is up, drops the oldest when its queue is full, and never blocks."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

from coordinator.core import Coordinator, ServedRun
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import GrpcServer
from coordinator.store import Store
from node.reporting import Reporter
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb
from tests.protocol.coordinator_support import KEYS, PEERS, RUN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def round_report(round: int) -> pb.RoundReport:
    return pb.RoundReport(
        round=round, global_step=round, loss=2.0, samples=8, samples_per_s=4.0, sent_bytes=10, received_bytes=10,
        compression_ratio=1.0, group_size=2, time=time.time(), eval_loss=math.nan, status="committed",
    )  # fmt: skip


def wait_until(check, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reports_wait_for_the_coordinator_and_the_oldest_go_when_the_queue_is_full(tmp_path: Path) -> None:
    port = free_port()
    reporter = Reporter(
        f"127.0.0.1:{port}",
        key=KEYS["peerA"],
        run_id=RUN,
        peer_id=PEERS["peerA"],
        device="cpu",
        max_pending=50,
    )
    reporter.start()
    store = Store(tmp_path / "c.db")
    server = None
    try:
        started = time.monotonic()
        for r in range(1, 81):  # nobody listens yet: submit must not wait for the network
            reporter.submit(round_report(r))
        assert time.monotonic() - started < 1.0
        assert reporter.dropped_reports == 30 and reporter.pending == 50

        core = Coordinator(store, runs=(ServedRun(RUN),))
        server = GrpcServer(core, CoordinatorMetrics(store), host="127.0.0.1", port=port)
        server.start()
        wait_until(lambda: reporter.pending == 0)
        (peer,) = store.peers(RUN)
        assert peer.rounds == 50 and peer.last_round == 80  # rounds 31-80: the 30 oldest were dropped
        assert reporter.sent_reports == 50
    finally:
        reporter.stop()
        if server is not None:
            server.stop(0)
        store.close()
