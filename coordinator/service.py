"""The coordinator's gRPC face: a thin servicer over ``coordinator.core``, health and reflection.

Handlers are built from the service descriptor, so every RPC of ``coordinator.proto`` is served by
the method of the same name below and nothing else. Two things happen in one place here: a request
that does not parse is answered INVALID_ARGUMENT (gRPC's default would be INTERNAL), and the core's
domain errors become status codes (``STATUS_OF``). A request over ``MAX_MESSAGE_BYTES`` is refused
by gRPC itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from coordinator.core import (
    Announcement,
    Coordinator,
    CoordinatorError,
    FailedPrecondition,
    InvalidArgument,
    NodeReports,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from coordinator.metrics import CoordinatorMetrics
from coordinator.ports import check_free
from coordinator.rows import CheckpointInfo, PeerInfo, Report
from coordinator.writes import ANNOUNCEMENTS, REPORTS, Write
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb

logger = logging.getLogger("swarm.coordinator")

SERVICE = pb.DESCRIPTOR.services_by_name["Coordinator"]
SERVICE_NAME = SERVICE.full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
M = TypeVar("M", bound=Message)
REFUSAL_LOG_INTERVAL_S = 10.0
STOP_GRACE_S = 5.0
"""On stop, calls in flight get this long to finish before they are cancelled."""
THREAD_EXIT_S = 5.0
"""After the grace, how long ``stop`` waits for the server's thread (a daemon) to end."""
STATUS_OF: dict[type[CoordinatorError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


class _Unparsable:
    """What the deserializer hands over when a request's bytes are not the declared message."""

    def __init__(self, error: Exception):
        self.error = error


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def checkpoint_pb(c: CheckpointInfo) -> pb.Checkpoint:
    return pb.Checkpoint(
        run_id=c.run_id, round=c.round, global_step=c.global_step, manifest_hash=c.manifest_hash,
        total_bytes=c.total_bytes, first_announced=c.first_announced, archived=c.archived,
        providers=[pb.Provider(peer_id=p.peer_id, addrs=list(p.addrs), last_announced=p.last_announced)
                   for p in c.providers],
    )  # fmt: skip


def peer_pb(p: PeerInfo) -> pb.Peer:
    return pb.Peer(
        peer_id=p.peer_id, device=p.device, metrics_url=p.metrics_url, addrs=list(p.addrs),
        first_seen=p.first_seen, last_seen=p.last_seen, last_round=p.last_round, rounds=p.rounds,
        samples=p.samples,
    )  # fmt: skip


class CoordinatorServicer:
    """One method per RPC; each turns the message into the core's types and back."""

    def __init__(
        self,
        core: Coordinator,
        metrics: CoordinatorMetrics,
        archive_pointers: Callable[[str], list[bytes]] | None = None,
    ):
        self.core = core
        self.metrics = metrics
        self.archive_pointers = archive_pointers

    def _body(self, signed: pb.SignedWrite, family: str, message: type[M], source: str) -> tuple[M, str]:
        """The signed write's body, parsed, and its writer; the core admits it first."""
        write = Write(
            run_id=signed.run_id, peer_id=signed.peer_id, header=signed.header,
            signature=signed.signature, credential=signed.credential,
        )  # fmt: skip
        raw = self.core.admit(write, family=family, source=source)
        try:
            body = message.FromString(raw)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise InvalidArgument(f"the signed body is not a {message.__name__}: {e}") from None
        if getattr(body, "run_id", None) != signed.run_id:
            raise InvalidArgument("the signed body names another run than the write")
        return body, signed.peer_id

    def ReportMetrics(self, signed: pb.SignedWrite, source: str) -> pb.ReportMetricsResponse:
        request, writer = self._body(signed, REPORTS, pb.ReportMetricsRequest, source)
        reports = tuple(
            Report(
                round=r.round,
                global_step=r.global_step,
                loss=None if math.isnan(r.loss) else r.loss,
                samples=r.samples,
                samples_per_s=r.samples_per_s,
                sent_bytes=r.sent_bytes,
                received_bytes=r.received_bytes,
                compression_ratio=r.compression_ratio,
                group_size=r.group_size,
                time=r.time,
                eval_loss=None if math.isnan(r.eval_loss) else r.eval_loss,
                status=r.status,
            )
            for r in request.reports
        )
        recorded = self.core.report(
            NodeReports(
                run_id=request.run_id,
                peer_id=request.peer_id,
                device=request.device,
                metrics_url=request.metrics_url,
                source=source,
                addrs=tuple(request.addrs),
                reports=reports,
                leaving=request.leaving,
                writer=writer,
            )
        )
        self.metrics.reports.inc(recorded)
        pointers = self.archive_pointers(request.run_id) if self.archive_pointers is not None else []
        return pb.ReportMetricsResponse(recorded=recorded, archive_pointers=pointers)

    def AnnounceCheckpoint(self, signed: pb.SignedWrite, source: str) -> pb.AnnounceCheckpointResponse:
        request, writer = self._body(signed, ANNOUNCEMENTS, pb.AnnounceCheckpointRequest, source)
        new = self.core.announce(
            Announcement(
                run_id=request.run_id,
                round=request.round,
                global_step=request.global_step,
                manifest_hash=request.manifest_hash,
                total_bytes=request.total_bytes,
                provider=request.provider,
                addrs=tuple(request.addrs),
                manifest=request.manifest,
                writer=writer,
            )
        )
        self.metrics.checkpoints.inc()
        return pb.AnnounceCheckpointResponse(new_checkpoint=new)

    def ListCheckpoints(self, request: pb.ListCheckpointsRequest, source: str) -> pb.ListCheckpointsResponse:
        found = self.core.checkpoints(request.run_id, request.limit)
        return pb.ListCheckpointsResponse(checkpoints=[checkpoint_pb(c) for c in found])

    def GetCheckpoint(self, request: pb.GetCheckpointRequest, source: str) -> pb.GetCheckpointResponse:
        which = request.WhichOneof("which")
        found, manifest = self.core.checkpoint(
            request.run_id,
            manifest_hash=request.manifest_hash if which == "manifest_hash" else None,
            round=request.round if which == "round" else None,
        )
        return pb.GetCheckpointResponse(checkpoint=checkpoint_pb(found), manifest=manifest)

    def ListPeers(self, request: pb.ListPeersRequest, source: str) -> pb.ListPeersResponse:
        return pb.ListPeersResponse(
            peers=[peer_pb(p) for p in self.core.peers(request.run_id, request.seen_within_s)]
        )

    def GetRunInfo(self, request: pb.GetRunInfoRequest, source: str) -> pb.GetRunInfoResponse:
        s = self.core.run(request.run_id)
        response = pb.GetRunInfoResponse(
            run_id=s.run_id, first_seen=s.first_seen, last_seen=s.last_seen, round=s.round,
            global_step=s.global_step, members_online=s.members_online, samples_per_s=s.samples_per_s,
            loss=_nan_if_none(s.loss), eval_loss=_nan_if_none(s.eval_loss), samples=s.samples,
            sent_bytes=s.sent_bytes, compression_ratio=_nan_if_none(s.compression_ratio),
            peers_seen=s.peers_seen,
        )  # fmt: skip
        if s.latest_checkpoint is not None:
            response.latest_checkpoint.CopyFrom(checkpoint_pb(s.latest_checkpoint))
        return response


def _deserializer(message: type[Message]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Message | _Unparsable:
        try:
            return message.FromString(raw)
        except (DecodeError, ValueError, RuntimeError) as e:  # RuntimeError: bad UTF-8 in a string
            return _Unparsable(e)

    return parse


class _Refusals:
    """Logs refusals at most once per ``REFUSAL_LOG_INTERVAL_S`` for each method and code, with how
    many went unlogged: a flood of bad writes must not flood the log (the metric counts them all)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, grpc.StatusCode], float] = {}
        self._quiet: dict[tuple[str, grpc.StatusCode], int] = {}

    def log(self, name: str, code: grpc.StatusCode, error: Exception) -> None:
        key, now = (name, code), time.monotonic()
        if now - self._last.get(key, -math.inf) < REFUSAL_LOG_INTERVAL_S:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._last[key] = now
        quiet = self._quiet.pop(key, 0)
        more = f" (and {quiet} more since the last line)" if quiet else ""
        logger.info("%s refused (%s): %s%s", name, code.name, error, more)


def _behaviour(
    name: str, method: Callable[[Any, str], Message], metrics: CoordinatorMetrics, refusals: _Refusals
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]:
    # The core's calls are short SQLite transactions (~0.2 ms): they run on the event loop itself,
    # which costs less than handing each one to a thread.
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Message:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, _Unparsable):
                code = grpc.StatusCode.INVALID_ARGUMENT
                metrics.rejected.labels(reason="malformed").inc()
                await context.abort(
                    code, f"{name}: the request is not a valid {name}Request: {request.error}"
                )
            try:
                return method(request, context.peer())
            except CoordinatorError as e:
                code = STATUS_OF[type(e)]
                refusals.log(name, code, e)
                await context.abort(code, str(e))
        finally:
            metrics.rpc_seconds.labels(method=name, code=code.name).observe(time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")

    return handle


def service_handler(servicer: CoordinatorServicer) -> grpc.GenericRpcHandler:
    handlers, refusals = {}, _Refusals()
    for method in SERVICE.methods:
        request_class = pb.DESCRIPTOR.message_types_by_name[method.input_type.name]
        request_type = getattr(pb, request_class.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _behaviour(method.name, getattr(servicer, method.name), servicer.metrics, refusals),
            request_deserializer=_deserializer(request_type),
            response_serializer=lambda m: m.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class GrpcServer:
    """The Coordinator service plus grpc.health.v1 and reflection, on one port (grpc.aio, own thread).

    ``start()`` returns once the port is bound and serving; ``port`` is the real one. A port another
    process holds raises ``PortInUseError``: the server does not share it (no SO_REUSEPORT), so a
    second coordinator on the same port fails instead of taking half of the calls.
    """

    def __init__(
        self,
        core: Coordinator,
        metrics: CoordinatorMetrics,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        archive_pointers: Callable[[str], list[bytes]] | None = None,
    ):
        self._handler = service_handler(CoordinatorServicer(core, metrics, archive_pointers))
        self._host, self._asked_port = host, port
        self._address = f"{host}:{port}"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._grace_s = STOP_GRACE_S
        self._thread = threading.Thread(target=self._run, name="grpc", daemon=True)

    def start(self) -> None:
        check_free(self._host, self._asked_port, "gRPC")
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise OSError(f"cannot serve gRPC on {self._address}: {self._error}")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Refuse new calls, let running ones finish for up to ``grace_s``."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._grace_s = grace_s
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(grace_s + THREAD_EXIT_S)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start(); nothing else to do on this thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers((self._handler,))
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError("the port is taken or the address is not local")
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ready.set()
        await self._stop.wait()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(self._grace_s)
