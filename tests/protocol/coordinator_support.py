"""The coordinator as ``swarm-coordinator serve`` wires it up, served in the test's process over a real
SQLite file and reached through a real gRPC channel and HTTP; and the reports the tests send it."""

from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path

from coordinator.client import CoordinatorClient
from coordinator.core import Coordinator
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import GrpcServer
from coordinator.store import Store
from coordinator.web import HttpServer
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb

RUN = "api-run"


class Served:
    def __init__(self, db: Path):
        self.store = Store(db)
        self.core = Coordinator(self.store)
        self.metrics = CoordinatorMetrics(self.store)
        self.grpc = GrpcServer(self.core, self.metrics, host="127.0.0.1", port=0)
        self.http = HttpServer(self.core, self.metrics, host="127.0.0.1", port=0)
        self.grpc.start()
        self.http.start()
        self.address = f"127.0.0.1:{self.grpc.port}"
        self.client = CoordinatorClient(self.address)
        self.client.wait_ready()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http.port}{path}", timeout=10) as r:
            return r.read()

    def close(self) -> None:
        self.client.close()
        self.grpc.stop(0)
        self.http.stop()
        self.store.close()


def round_report(
    round: int, *, loss: float = 2.5, samples: int = 16, t: float | None = None
) -> pb.RoundReport:
    return pb.RoundReport(
        round=round, global_step=round * 2, loss=loss, samples=samples, samples_per_s=8.0,
        sent_bytes=1000, received_bytes=900, compression_ratio=150.0, group_size=2,
        time=time.time() if t is None else t, eval_loss=math.nan if round % 2 else loss + 0.1, status="committed",
    )  # fmt: skip


def report(peer: str, rounds: range, **fields) -> pb.ReportMetricsRequest:
    return pb.ReportMetricsRequest(
        run_id=RUN, peer_id=peer, device="cpu", metrics_url=fields.pop("metrics_url", "127.0.0.1:9101"),
        addrs=["/ip4/127.0.0.1/tcp/4001"], reports=[round_report(r, **fields) for r in rounds],
    )  # fmt: skip
