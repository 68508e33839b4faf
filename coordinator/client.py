"""A client of the coordinator's gRPC API, with a named timeout on every call.

Writes (reports, announcements) are signed with the client's Ed25519 key (a node's libp2p identity),
over the exact bytes sent (``coordinator.writes``). Used by nodes (``node.reporting``), tools and
tests; imports grpc, the generated stubs and the pure signing module.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.writes import ANNOUNCEMENTS, REPORTS, sign_write
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = timedelta(seconds=10)
"""Bound on every call: a node's report must never wait long on the optional coordinator."""
READY_TIMEOUT = timedelta(seconds=30)
"""How long ``wait_ready`` waits for the channel by default: a coordinator starting beside the caller."""


class CoordinatorClient:
    """``address`` is host:port. Calls raise ``grpc.RpcError`` (its ``code()`` says why). Writes need
    ``key`` (the peer's identity; the request's peer id must be that key's) and, in a closed run, the
    peer's ``credential``."""

    def __init__(
        self,
        address: str,
        *,
        timeout: timedelta = DEFAULT_TIMEOUT,
        key: Ed25519PrivateKey | None = None,
        credential: bytes = b"",
    ):
        self.address = address
        self.timeout = timeout
        self.key = key
        self.credential = credential
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.CoordinatorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: timedelta = READY_TIMEOUT) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout.total_seconds())

    @property
    def _timeout_s(self) -> float:
        return self.timeout.total_seconds()

    def signed(self, run_id: str, family: str, body: bytes) -> pb.SignedWrite:
        if self.key is None:
            raise ValueError("writes to the coordinator are signed: give the client the peer's key")
        write = sign_write(self.key, run_id=run_id, family=family, body=body, credential=self.credential)
        return pb.SignedWrite(
            run_id=write.run_id, peer_id=write.peer_id, header=write.header, signature=write.signature,
            credential=write.credential,
        )  # fmt: skip

    def report(self, request: pb.ReportMetricsRequest) -> pb.ReportMetricsResponse:
        signed = self.signed(request.run_id, REPORTS, request.SerializeToString())
        return self._stub.ReportMetrics(signed, timeout=self._timeout_s)

    def announce(self, request: pb.AnnounceCheckpointRequest) -> pb.AnnounceCheckpointResponse:
        signed = self.signed(request.run_id, ANNOUNCEMENTS, request.SerializeToString())
        return self._stub.AnnounceCheckpoint(signed, timeout=self._timeout_s)

    def checkpoints(self, run_id: str, limit: int = 0) -> list[pb.Checkpoint]:
        request = pb.ListCheckpointsRequest(run_id=run_id, limit=limit)
        return list(self._stub.ListCheckpoints(request, timeout=self._timeout_s).checkpoints)

    def checkpoint(
        self, run_id: str, *, round: int | None = None, manifest_hash: str | None = None
    ) -> pb.GetCheckpointResponse:
        request = pb.GetCheckpointRequest(run_id=run_id)
        if manifest_hash is not None:
            request.manifest_hash = manifest_hash
        elif round is not None:
            request.round = round
        else:
            request.latest = True
        return self._stub.GetCheckpoint(request, timeout=self._timeout_s)

    def peers(self, run_id: str, seen_within_s: float = 0.0) -> list[pb.Peer]:
        request = pb.ListPeersRequest(run_id=run_id, seen_within_s=seen_within_s)
        return list(self._stub.ListPeers(request, timeout=self._timeout_s).peers)

    def run_info(self, run_id: str) -> pb.GetRunInfoResponse:
        return self._stub.GetRunInfo(pb.GetRunInfoRequest(run_id=run_id), timeout=self._timeout_s)
