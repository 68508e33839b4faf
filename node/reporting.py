"""Reports to the coordinator, off the training path.

The training loop hands each round's report (and each published checkpoint) to ``Reporter.submit``,
which only appends to a queue. A thread of its own signs (with the node's identity) and sends batches
to the coordinator; when the coordinator is down, slow, restarting or asks to slow down, reports wait
in the queue (bounded: the oldest go first once ``max_pending`` is reached, with a warning) and are
sent when it answers again. Resending a batch whose answer was lost is harmless: the coordinator
counts a (run, peer, round) once. What the coordinator will never take (malformed, not permitted, a
run it does not serve) is dropped with a warning; an announcement ahead of what the other members
have reported is tried again a few times.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Callable
from datetime import timedelta

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.client import CoordinatorClient
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb

logger = logging.getLogger("swarm.node")

MAX_BATCH = 256
"""Round reports sent in one request."""
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
"""Retries after a failed request back off from RETRY_MIN_S, doubling, up to RETRY_MAX_S."""
RPC_TIMEOUT = timedelta(seconds=5)
"""Limit for one request to the coordinator: the reporter's own thread waits, never training."""
FLUSH_TIMEOUT = timedelta(seconds=5)
"""How long a leaving node tries to deliver what is still queued."""
ANNOUNCE_ATTEMPTS = 6
"""Tries of an announcement the coordinator finds ahead of the members' reports (FAILED_PRECONDITION),
backing off like any retry (about a minute in all), before it is dropped."""
NEVER_TAKEN = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND}
)
"""Answers that sending the same request again cannot change: it is dropped."""


def local_address_towards(address: str) -> str:
    """The IP this machine uses to reach ``address`` (host:port): what Prometheus next to it can scrape."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # no packet is sent: UDP connect only picks the route
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class Reporter:
    """Sends round reports and checkpoint announcements to one coordinator from a daemon thread."""

    def __init__(
        self,
        address: str,
        *,
        key: Ed25519PrivateKey,
        credential: bytes = b"",
        run_id: str,
        peer_id: str,
        device: str,
        metrics_url: str = "",
        addrs: tuple[str, ...] = (),
        max_pending: int = 10_000,
        timeout: timedelta = RPC_TIMEOUT,
        on_archive_pointers: Callable[[list[bytes]], None] | None = None,
    ):
        self.address = address
        self._client = CoordinatorClient(address, timeout=timeout, key=key, credential=credential)
        self._base = pb.ReportMetricsRequest(
            run_id=run_id, peer_id=peer_id, device=device[:64], metrics_url=metrics_url, addrs=list(addrs[:8])
        )
        self._reports: deque[pb.RoundReport] = deque()
        self._announcements: deque[pb.AnnounceCheckpointRequest] = deque(maxlen=16)
        self._max_pending = max_pending
        self._on_archive_pointers = on_archive_pointers
        self._wake = threading.Condition()
        self._stopping = False
        self._reachable: bool | None = None
        self.sent_reports = 0
        self.dropped_reports = 0
        self.refused = 0
        self._announce_attempts = 0
        self._thread = threading.Thread(target=self._loop, name="coordinator-reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, report: pb.RoundReport) -> None:
        """Queue a round's report; never blocks on the network."""
        with self._wake:
            if len(self._reports) >= self._max_pending:
                self._reports.popleft()
                self.dropped_reports += 1
                if self.dropped_reports == 1 or self.dropped_reports % 1000 == 0:
                    logger.warning(
                        "coordinator %s unreachable for long: dropped %d oldest reports (queue of %d)",
                        self.address, self.dropped_reports, self._max_pending,
                    )  # fmt: skip
            self._reports.append(report)
            self._wake.notify()

    def announce(self, announcement: pb.AnnounceCheckpointRequest) -> None:
        with self._wake:
            self._announcements.append(announcement)
            self._wake.notify()

    @property
    def pending(self) -> int:
        with self._wake:
            return len(self._reports) + len(self._announcements)

    def stop(self, flush_timeout: timedelta = FLUSH_TIMEOUT) -> None:
        """Try to deliver what is queued, then say that this node leaves (it stops counting as online
        at once, not a minute later), for up to ``flush_timeout`` in all; then stop."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(flush_timeout.total_seconds())
        self._client.close()

    def _loop(self) -> None:
        retry_s = RETRY_MIN_S
        while True:
            with self._wake:
                while not (self._reports or self._announcements or self._stopping):
                    self._wake.wait()
                if self._stopping and not (self._reports or self._announcements):
                    break
                batch = [self._reports[i] for i in range(min(MAX_BATCH, len(self._reports)))]
                announcement = self._announcements[0] if self._announcements else None
            sending: list[pb.RoundReport] = batch
            try:
                if batch:
                    self._send(batch)
                    self._forget(batch, None)
                    self.sent_reports += len(batch)
                sending = []
                if announcement is not None:
                    self._announce_attempts += 1
                    self._client.announce(announcement)
                    self._forget([], announcement)
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else None
                details = e.details() if isinstance(e, grpc.Call) else str(e)
                given_up = (
                    not sending
                    and code == grpc.StatusCode.FAILED_PRECONDITION
                    and self._announce_attempts >= ANNOUNCE_ATTEMPTS
                )
                if code in NEVER_TAKEN or given_up:
                    # The coordinator will never take these: drop them, loudly, and go on.
                    self._refused_once(code, details)
                    self._forget(sending, None if sending else announcement)
                    self._set_reachable(True)
                    continue
                if code not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    self._set_reachable(False, f"{code.name if code else 'error'}")
                with self._wake:
                    if self._stopping:
                        return
                    self._wake.wait(retry_s)
                retry_s = min(RETRY_MAX_S, retry_s * 2)
                continue
            self._set_reachable(True)
            retry_s = RETRY_MIN_S
        self._say_leaving()

    def _send(self, batch: list[pb.RoundReport]) -> None:
        request = pb.ReportMetricsRequest()
        request.CopyFrom(self._base)
        request.reports.extend(batch)
        answer = self._client.report(request)
        if answer.archive_pointers and self._on_archive_pointers is not None:
            try:
                self._on_archive_pointers(list(answer.archive_pointers))
            # The boundary of this thread's work for the node: whatever the node's callback
            # raises (its event loop may be closing), reporting goes on.
            except Exception as e:
                logger.debug("archive pointers not handed over: %s", e)

    def _refused_once(self, code: grpc.StatusCode | None, details: str) -> None:
        """Warn of a refusal the first time and every hundredth: a coordinator that refuses this node
        (a run it does not serve) must not fill the node's log, one line per round."""
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            logger.warning(
                "coordinator %s refused a report or announcement (%s, %d so far): %s",
                self.address, code.name if code else "error", self.refused, details,
            )  # fmt: skip

    def _say_leaving(self) -> None:
        request = pb.ReportMetricsRequest()
        request.CopyFrom(self._base)
        request.leaving = True
        try:
            self._client.report(request)
        except grpc.RpcError as e:  # the coordinator then counts the node online for its window
            logger.debug("coordinator not told that this node leaves: %s", e)

    def _forget(self, batch: list[pb.RoundReport], announcement: pb.AnnounceCheckpointRequest | None) -> None:
        delivered = {id(r) for r in batch}  # the queue's head may have moved if it overflowed meanwhile
        with self._wake:
            while self._reports and id(self._reports[0]) in delivered:
                self._reports.popleft()
            if announcement is not None and self._announcements and self._announcements[0] is announcement:
                self._announcements.popleft()
                self._announce_attempts = 0

    def _set_reachable(self, reachable: bool, why: str = "") -> None:
        if reachable == self._reachable:
            return
        self._reachable = reachable
        if reachable:
            logger.info("coordinator %s: reporting", self.address)
        else:
            logger.warning(
                "coordinator %s unreachable (%s); training goes on, %d reports kept for later",
                self.address, why, self.pending,
            )  # fmt: skip
