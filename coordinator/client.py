"""A client of the coordinator's gRPC API, with a named timeout on every call.

Used by nodes (``node.reporting``) and by tests; imports grpc and the generated stubs only.
"""

from __future__ import annotations

from datetime import timedelta

import grpc

from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = timedelta(seconds=10)
"""Bound on every call: a node's report must never wait long on the optional coordinator."""
READY_TIMEOUT = timedelta(seconds=30)
"""How long ``wait_ready`` waits for the channel by default: a coordinator starting beside the caller."""


class CoordinatorClient:
    """``address`` is host:port. Calls raise ``grpc.RpcError`` (its ``code()`` says why)."""

    def __init__(self, address: str, *, timeout: timedelta = DEFAULT_TIMEOUT):
        self.address = address
        self.timeout = timeout
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

    def report(self, request: pb.ReportMetricsRequest) -> pb.ReportMetricsResponse:
        return self._stub.ReportMetrics(request, timeout=self._timeout_s)

    def announce(self, request: pb.AnnounceCheckpointRequest) -> pb.AnnounceCheckpointResponse:
        return self._stub.AnnounceCheckpoint(request, timeout=self._timeout_s)

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
