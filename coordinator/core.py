"""The coordinator's core: validation and the record, with no transport.

Every request from the network is checked here before it touches the store: sizes, identifiers,
finite numbers, a manifest that hashes to what it claims. A bad request raises ``InvalidArgument``,
a question about something the coordinator never heard of raises ``NotFound``; the gRPC layer maps
these to status codes in one place (``coordinator.service``). Pure: no grpc, no asyncio.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.rows import CheckpointInfo, PeerInfo, Provider, Report, RunSummary, SeriesPoint
from coordinator.store import Store
from swarm.checkpoint.manifest import Manifest, ManifestError

MAX_ID_CHARS = 128
MAX_DEVICE_CHARS = 64
MAX_ADDR_CHARS = 256
MAX_ADDRS = 8
MAX_REPORTS = 256
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_LIST = 1000
MAX_ROUND = 2**40
"""Bound on a reported round or global step: 10^12, far beyond any run, so that sums of them stay
inside SQLite's 64-bit integers (a report of 2^63 - 1 made the retention pass overflow)."""
MAX_SAMPLES_PER_ROUND = 2**32
MAX_BYTES_PER_ROUND = 2**40
"""Bounds on what one round's report may claim: a terabyte of traffic, 4 billion sequences."""
MAX_SAMPLES_PER_S = 1e9
MAX_COMPRESSION_RATIO = 1e6
MAX_CHECKPOINT_BYTES = 2**46
"""64 TiB: a checkpoint claiming more is no model anyone trains here."""
CLOCK_SKEW_S = 300.0
STATUSES = frozenset({"committed", "aborted", "repair", "no_group"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CoordinatorError(Exception):
    """A request the coordinator cannot honour; the message is meant for the caller."""


class InvalidArgument(CoordinatorError):
    pass


class NotFound(CoordinatorError):
    pass


@dataclass(frozen=True, kw_only=True)
class NodeReports:
    """One ReportMetrics call, as the core sees it."""

    run_id: str
    peer_id: str
    device: str
    metrics_url: str
    addrs: tuple[str, ...]
    reports: tuple[Report, ...]
    leaving: bool = False
    """The node is leaving (its last call): it stops counting as online once its reports are in."""


@dataclass(frozen=True, kw_only=True)
class Announcement:
    run_id: str
    round: int
    global_step: int
    manifest_hash: str
    total_bytes: int
    provider: str
    addrs: tuple[str, ...]
    manifest: bytes


def _identifier(what: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{what} has {len(value)} characters, at most {MAX_ID_CHARS}")
    if not _ID.match(value):
        raise InvalidArgument(f"{what} {value[:40]!r} has characters outside [A-Za-z0-9._:-]")
    return value


def _addrs(addrs: tuple[str, ...]) -> tuple[str, ...]:
    if len(addrs) > MAX_ADDRS:
        raise InvalidArgument(f"{len(addrs)} addresses, at most {MAX_ADDRS}")
    for a in addrs:
        if not a.startswith("/") or len(a) > MAX_ADDR_CHARS:
            raise InvalidArgument(
                f"address {a[:40]!r} is not a multiaddr of at most {MAX_ADDR_CHARS} characters"
            )
    return addrs


def _finite(what: str, value: float, *, low: float = 0.0) -> float:
    if not math.isfinite(value) or value < low:
        raise InvalidArgument(f"{what} must be a finite number >= {low}, got {value}")
    return value


def _optional_loss(what: str, value: float) -> float | None:
    """NaN means "none" on the wire; infinities are refused."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise InvalidArgument(f"{what} is infinite")
    return value


def _at_most(what: str, value: int | float, bound: int | float) -> None:
    if value > bound:
        raise InvalidArgument(f"{what} {value} is over {bound:g}")


def check_report(r: Report, now: float) -> Report:
    if r.status not in STATUSES:
        raise InvalidArgument(f"report status {r.status[:20]!r} is not one of {sorted(STATUSES)}")
    _at_most("samples_per_s", _finite("samples_per_s", r.samples_per_s), MAX_SAMPLES_PER_S)
    _at_most("compression_ratio", _finite("compression_ratio", r.compression_ratio), MAX_COMPRESSION_RATIO)
    for what, count, bound in (
        ("round", r.round, MAX_ROUND),
        ("global_step", r.global_step, MAX_ROUND),
        ("samples", r.samples, MAX_SAMPLES_PER_ROUND),
        ("sent_bytes", r.sent_bytes, MAX_BYTES_PER_ROUND),
        ("received_bytes", r.received_bytes, MAX_BYTES_PER_ROUND),
    ):
        _at_most(what, count, bound)
    _finite("time", r.time)
    if r.time > now + CLOCK_SKEW_S:
        raise InvalidArgument(f"report time is {r.time - now:.0f} s in the future (check the node's clock)")
    if r.group_size > 100_000:
        raise InvalidArgument(f"group size {r.group_size} is not plausible")
    for what, value in (("loss", r.loss), ("eval_loss", r.eval_loss)):
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{what} is not finite")
    return r


class Coordinator:
    """What the coordinator knows about runs: reports, peers, checkpoints. Thread-safe.

    ``on_checkpoint`` is called (from the calling thread) with every checkpoint the coordinator
    hears of for the first time; the archive uses it.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        on_checkpoint: Callable[[CheckpointInfo], None] | None = None,
    ):
        self.store = store
        self._clock = clock
        self._on_checkpoint = on_checkpoint
        self.reports_recorded = 0
        self.requests_rejected = 0

    def report(self, request: NodeReports) -> int:
        """Record a node's round reports; returns how many were new."""
        try:
            run_id = _identifier("run_id", request.run_id)
            peer_id = _identifier("peer_id", request.peer_id)
            if len(request.device) > MAX_DEVICE_CHARS:
                raise InvalidArgument(
                    f"device has {len(request.device)} characters, at most {MAX_DEVICE_CHARS}"
                )
            if request.metrics_url and not (
                len(request.metrics_url) <= MAX_ADDR_CHARS and _HOST_PORT.match(request.metrics_url)
            ):
                raise InvalidArgument(f"metrics_url {request.metrics_url[:40]!r} is not host:port")
            if not (0 if request.leaving else 1) <= len(request.reports) <= MAX_REPORTS:
                raise InvalidArgument(
                    f"{len(request.reports)} reports in one call, 1 to {MAX_REPORTS} allowed"
                )
            now = self._clock()
            reports = [check_report(r, now) for r in request.reports]
            addrs = _addrs(request.addrs)
        except InvalidArgument:
            self.requests_rejected += 1
            raise
        new = self.store.record_reports(
            run_id, peer_id, device=request.device, metrics_url=request.metrics_url, addrs=addrs,
            reports=reports, now=now,
        ) if reports else 0  # fmt: skip
        if request.leaving:
            self.store.mark_left(run_id, peer_id, now=now)
        self.reports_recorded += new
        return new

    def announce(self, a: Announcement) -> bool:
        """Record a published checkpoint and its provider; True if the checkpoint is new here."""
        try:
            run_id = _identifier("run_id", a.run_id)
            provider = _identifier("provider", a.provider)
            if not _HEX64.match(a.manifest_hash):
                raise InvalidArgument("manifest_hash must be 64 lowercase hex characters")
            if len(a.manifest) > MAX_MANIFEST_BYTES:
                raise InvalidArgument(f"manifest of {len(a.manifest)} bytes, at most {MAX_MANIFEST_BYTES}")
            try:
                manifest = Manifest.from_bytes(a.manifest, expected_hash=a.manifest_hash)
            except ManifestError as e:
                raise InvalidArgument(f"manifest rejected: {e}") from None
            _at_most("round", a.round, MAX_ROUND)
            _at_most("global_step", a.global_step, MAX_ROUND)
            _at_most("total_bytes", a.total_bytes, MAX_CHECKPOINT_BYTES)
            claimed = (run_id, a.round, a.global_step, a.total_bytes)
            actual = (manifest.run_id, manifest.round, manifest.global_step, manifest.total_bytes)
            if claimed != actual:
                raise InvalidArgument(
                    f"announcement (run, round, step, bytes) {claimed} does not match its manifest {actual}"
                )
            addrs = _addrs(a.addrs)
        except InvalidArgument:
            self.requests_rejected += 1
            raise
        now = self._clock()
        checkpoint = CheckpointInfo(
            run_id=run_id, round=a.round, global_step=a.global_step, manifest_hash=a.manifest_hash,
            total_bytes=a.total_bytes, first_announced=now, archived=False,
        )  # fmt: skip
        new = self.store.record_checkpoint(
            checkpoint, a.manifest, Provider(peer_id=provider, addrs=addrs, last_announced=now)
        )
        if new and self._on_checkpoint is not None:
            self._on_checkpoint(checkpoint)
        return new

    def _known_run(self, run_id: str) -> str:
        _identifier("run_id", run_id)
        if self.store.run_summary(run_id) is None:
            raise NotFound(f"no run {run_id!r} here: no node has reported in it")
        return run_id

    def checkpoints(self, run_id: str, limit: int = 0) -> list[CheckpointInfo]:
        if limit > MAX_LIST:
            raise InvalidArgument(f"limit {limit} is over {MAX_LIST}")
        return self.store.checkpoints(self._known_run(run_id), limit=limit or 20)

    def checkpoint(
        self, run_id: str, *, manifest_hash: str | None = None, round: int | None = None
    ) -> tuple[CheckpointInfo, bytes]:
        """A checkpoint (by hash, by round, or the newest) and its manifest bytes."""
        self._known_run(run_id)
        if manifest_hash is not None and not _HEX64.match(manifest_hash):
            raise InvalidArgument("manifest_hash must be 64 lowercase hex characters")
        found = self.store.checkpoint(run_id, manifest_hash=manifest_hash, round=round)
        if found is None:
            which = (
                f"manifest {manifest_hash[:12]}"
                if manifest_hash
                else f"round {round}"
                if round is not None
                else "any"
            )
            raise NotFound(f"run {run_id!r} has no checkpoint ({which})")
        manifest = self.store.manifest(run_id, found.manifest_hash)
        assert manifest is not None
        return found, manifest

    def peers(self, run_id: str, seen_within_s: float = 0.0) -> list[PeerInfo]:
        _finite("seen_within_s", seen_within_s)
        return self.store.peers(self._known_run(run_id), seen_within_s=seen_within_s, now=self._clock())

    def run(self, run_id: str) -> RunSummary:
        summary = self.store.run_summary(_identifier("run_id", run_id), now=self._clock())
        if summary is None:
            raise NotFound(f"no run {run_id!r} here: no node has reported in it")
        return summary

    def series(self, run_id: str, since: float = 0.0) -> list[SeriesPoint]:
        return self.store.series(self._known_run(run_id), since=since)
