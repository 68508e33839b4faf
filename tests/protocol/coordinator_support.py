"""The coordinator as ``swarm-coordinator serve`` wires it up, served in the test's process over a real
SQLite file and reached through a real gRPC channel and HTTP; and the reports the tests send it.

The tests' peers have fixed Ed25519 keys (``PEERS``, by nickname): ``Served.client`` signs each write
with the key of the peer it names (its peer id, or an announcement's provider), as that peer's own
node would; a write for a nickname-less peer id goes out signed by nobody's key and is refused."""

from __future__ import annotations

import hashlib
import math
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.client import CoordinatorClient
from coordinator.core import Coordinator, Limits, ServedRun
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import GrpcServer
from coordinator.store import Store
from coordinator.web import HttpServer
from swarm.dht.records import pinned_run_id
from swarm.identity import peer_id_of, public_key_protobuf
from swarm.peer_names import peer_name
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb

KEYS = {
    nickname: Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)
    for i, nickname in enumerate(("peerA", "peerB", "peerC", "mallory"))
}


def name_of(key: Ed25519PrivateKey) -> str:
    return peer_name(peer_id_of(public_key_protobuf(key.public_key())))


PEERS = {nickname: name_of(key) for nickname, key in KEYS.items()}
"""Each test peer's real peer id (base58), by nickname."""
KEY_OF = {PEERS[nickname]: key for nickname, key in KEYS.items()}


def pinned(name: str) -> str:
    """Run ``name`` as peerA creates it."""
    return pinned_run_id(name, peer_id_of(public_key_protobuf(KEYS["peerA"].public_key())))


RUN = pinned("api-run")
RUNS = (ServedRun(RUN), ServedRun(pinned("churn")), ServedRun(pinned("flat")))
"""The runs ``Served`` serves by default."""


class SigningClient(CoordinatorClient):
    """Signs each write with the key of the peer the request names (see the module docstring)."""

    def _key_for(self, peer: str) -> None:
        self.key = KEY_OF.get(peer, KEYS["mallory"])

    def report(self, request: pb.ReportMetricsRequest) -> pb.ReportMetricsResponse:
        self._key_for(request.peer_id)
        return super().report(request)

    def announce(self, request: pb.AnnounceCheckpointRequest) -> pb.AnnounceCheckpointResponse:
        self._key_for(request.provider)
        return super().announce(request)


class Served:
    def __init__(self, db: Path, *, runs: tuple[ServedRun, ...] = RUNS, limits: Limits | None = None):
        self.store = Store(db)
        self.metrics = CoordinatorMetrics(self.store)
        self.core = Coordinator(
            self.store, runs=runs, limits=limits,
            on_reject=lambda reason: self.metrics.rejected.labels(reason=reason).inc(),
        )  # fmt: skip
        self.grpc = GrpcServer(self.core, self.metrics, host="127.0.0.1", port=0)
        self.http = HttpServer(self.core, self.metrics, host="127.0.0.1", port=0)
        self.grpc.start()
        self.http.start()
        self.address = f"127.0.0.1:{self.grpc.port}"
        self.client = SigningClient(self.address)
        self.client.wait_ready()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http.port}{path}", timeout=10) as r:
            return r.read()

    def close(self) -> None:
        self.client.close()
        self.grpc.stop(0)
        self.http.stop()
        self.store.close()


def checkpoint_files(tag: str, size: int = 2048) -> dict[str, bytes]:
    """A checkpoint's three files, distinct for each ``tag``, and no chunk of them repeating (a
    manifest that repeats a non-zero chunk is refused as implausible)."""
    model = b"".join(hashlib.sha256(f"{tag}/{i}".encode()).digest() for i in range(-(-size // 32)))[:size]
    return {"model.safetensors": model, "config.json": f'{{"c":"{tag}"}}'.encode(),
            "swarm.json": f'{{"s":"{tag}"}}'.encode()}  # fmt: skip


def round_report(
    round: int, *, loss: float = 2.5, samples: int = 16, t: float | None = None
) -> pb.RoundReport:
    return pb.RoundReport(
        round=round, global_step=round * 2, loss=loss, samples=samples, samples_per_s=8.0,
        sent_bytes=1000, received_bytes=900, compression_ratio=150.0, group_size=2,
        time=time.time() if t is None else t, eval_loss=math.nan if round % 2 else loss + 0.1, status="committed",
    )  # fmt: skip


def report(peer: str, rounds: range, **fields) -> pb.ReportMetricsRequest:
    """``peer``: a nickname of ``PEERS`` (or any peer id)."""
    return pb.ReportMetricsRequest(
        run_id=RUN, peer_id=PEERS.get(peer, peer), device="cpu", metrics_url=fields.pop("metrics_url", "127.0.0.1:9101"),
        addrs=["/ip4/127.0.0.1/tcp/4001"], reports=[round_report(r, **fields) for r in rounds],
    )  # fmt: skip
