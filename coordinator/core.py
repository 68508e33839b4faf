"""The coordinator's core: who may write, validation, and the record, with no transport.

A write (a report, an announcement) is admitted (``admit``) only in a run the coordinator serves
(``ServedRun``: pinned to its creator as the DHT pins it, with the owner's key when it is closed), within
the rate limits of its source address and its run, signed by the peer it names (``coordinator.writes``),
and in a closed run with that peer's credential. Its body is then checked before it touches the
store: sizes, identifiers, integer ranges, finite numbers, a manifest that hashes to what it claims,
a peer that writes only its own rows. Announcements must fit what the members attest: the provider
is an online member, the round one the members have reached, few manifests per round and one per
provider, and the run's manifests within a byte cap.

Each refusal is a ``CoordinatorError`` whose class the gRPC layer maps to a status code in one place
(``coordinator.service``), and is counted by reason (``on_reject``). Pure: no grpc, no asyncio.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.limits import Buckets, Rate
from coordinator.rows import CheckpointInfo, PeerInfo, Provider, Report, RunSummary, SeriesPoint
from coordinator.store import Store
from coordinator.writes import Write, WriteRefused, open_write, scrape_target
from swarm.auth import Gate
from swarm.checkpoint.bounds import DEFAULT_MAX_CHECKPOINT_BYTES, check_plausible
from swarm.checkpoint.manifest import Manifest, ManifestError
from swarm.dht.records import split_run_id
from swarm.peer_names import peer_from_name

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
ANNOUNCE_LEAD = 2
"""An announced checkpoint's round may be at most this far past the round the online members attest:
a member reports its round before it announces that round's checkpoint, and the others' reports of
it may lag by a moment (the node retries a refused announcement)."""
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


class PermissionDenied(CoordinatorError):
    """A write not signed by the peer it names, or without the closed run's credential."""


class ResourceExhausted(CoordinatorError):
    """Over a rate limit or a cap: the writer may try again later."""


class FailedPrecondition(CoordinatorError):
    """Not yet: an announcement ahead of what the members attest (the node retries it)."""


@dataclass(frozen=True)
class ServedRun:
    """A run the coordinator serves: its id, pinned to its creator (``name.pin``), and for a closed
    run the owner's Ed25519 public key (hex), whose credentials the run's writes must carry."""

    run_id: str
    owner_key: str = ""

    @classmethod
    def parse(cls, text: str) -> ServedRun:
        """``NAME.PIN`` or ``NAME@PIN`` (an open run), with ``=OWNER_KEY`` for a closed one."""
        run, _, owner = text.partition("=")
        name, at, pin = run.partition("@")
        run_id = f"{name}.{pin}" if at else run
        if split_run_id(run_id)[1] is None:
            raise ValueError(
                f"--run {text!r}: a run is NAME.PIN, pinned to its creator (the id `swarm-node join` prints)"
            )
        try:
            _identifier("run id", run_id)
        except InvalidArgument as e:
            raise ValueError(f"--run {text!r}: {e}") from None
        if owner and (len(owner) != 64 or any(c not in "0123456789abcdef" for c in owner)):
            raise ValueError(f"--run {text!r}: the owner key is 64 hex characters")
        return cls(run_id=run_id, owner_key=owner)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one source address, one run and one run's record may take."""

    per_address: Rate = field(default_factory=lambda: Rate(rate=50.0, burst=500.0))
    """Writes per second from one source address (a lab of nodes behind one NAT shares it)."""
    per_run: Rate = field(default_factory=lambda: Rate(rate=2000.0, burst=10_000.0))
    """Writes per second into one run, all addresses together."""
    peers_per_run: int = 100_000
    """Peers a run's record may hold; a new one beyond is refused."""
    manifests_per_round: int = 3
    """Distinct manifests one round may have (an honest run has one)."""
    manifest_bytes_per_run: int = 64 * 1024 * 1024
    """Bytes of manifests a run's record may hold."""
    max_checkpoint_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES
    """A checkpoint announced (and archived) may be at most this large (``--max-checkpoint-gb``)."""


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
    writer: str | None = None
    """The peer that signed the write (``admit``); it may write only its own rows. None: a caller
    inside the coordinator's process (tests, tools), trusted."""
    source: str | None = None
    """gRPC's peer string of the connection the write came on. With it, the record keeps as the
    node's metrics address that source's IP with the port of ``metrics_url`` (``scrape_target``):
    Prometheus is never sent to an address a report merely names. None: ``metrics_url`` as given."""


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
    writer: str | None = None
    """The peer that signed the write; it must be the provider."""


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

    ``runs``: the runs it serves (writes in any other are refused; reads of them find nothing new).
    ``on_checkpoint`` is called (from the calling thread) with the run of every accepted announcement;
    the archive uses it. ``on_reject`` is called with the reason of every refused request (a metric).
    """

    def __init__(
        self,
        store: Store,
        *,
        runs: tuple[ServedRun, ...] = (),
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        on_checkpoint: Callable[[str], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.runs = {run.run_id: run for run in runs}
        self.limits = limits or Limits()
        self._gates = {r.run_id: Gate(run_id=r.run_id, owner_key=r.owner_key) for r in runs}
        self._by_address = Buckets(self.limits.per_address)
        self._by_run = {r.run_id: Buckets(self.limits.per_run, max_tracked=1) for r in runs}
        self._lock = threading.Lock()
        self._clock = clock
        self._on_checkpoint = on_checkpoint
        self._on_reject = on_reject
        self.reports_recorded = 0
        self.requests_rejected = 0

    def _reject(self, reason: str, error: CoordinatorError) -> CoordinatorError:
        self.requests_rejected += 1
        if self._on_reject is not None:
            self._on_reject(reason)
        return error

    def admit(self, write: Write, *, family: str, source: str) -> bytes:
        """The body of a signed write, once the run is served, the rate limits allow it, the signature
        verifies, and (closed run) the writer's credential does; else the refusal, counted."""
        now = self._clock()
        try:
            run_id = _identifier("run_id", write.run_id)
            _identifier("peer_id", write.peer_id)
        except InvalidArgument as e:
            raise self._reject("malformed", e) from None
        if run_id not in self.runs:
            raise self._reject("unserved_run", NotFound(f"this coordinator does not serve run {run_id!r}"))
        address = source.rsplit(":", 1)[0] if source.startswith(("ipv4:", "ipv6:")) else source
        with self._lock:
            address_ok = self._by_address.take(address, now)
            run_ok = address_ok and self._by_run[run_id].take(run_id, now)
        if not address_ok:
            raise self._reject(
                "rate_address", ResourceExhausted(f"too many writes from {address}: slow down")
            )
        if not run_ok:
            raise self._reject(
                "rate_run", ResourceExhausted(f"too many writes into run {run_id!r}: slow down")
            )
        try:
            body = open_write(write, family=family, now=now)
        except WriteRefused as e:
            raise self._reject("signature", PermissionDenied(str(e))) from None
        gate = self._gates[run_id]
        if gate.closed:
            try:
                writer = peer_from_name(write.peer_id)  # it verified: a valid peer id
            except ValueError:
                writer = b""
            problem = gate.problem(writer, write.credential, now=now)
            if problem is not None:
                raise self._reject(
                    "credential",
                    PermissionDenied(f"peer {write.peer_id[:16]} in closed run {run_id!r}: {problem}"),
                )
        return body

    def report(self, request: NodeReports) -> int:
        """Record a node's round reports; returns how many were new."""
        try:
            run_id = _identifier("run_id", request.run_id)
            peer_id = _identifier("peer_id", request.peer_id)
            if request.writer is not None and peer_id != request.writer:
                raise InvalidArgument(f"peer {request.writer[:16]} may report only its own rounds")
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
        except InvalidArgument as e:
            raise self._reject("invalid", e) from None
        if (
            reports
            and not self.store.known_peer(run_id, peer_id)
            and self.store.peer_count(run_id) >= self.limits.peers_per_run
        ):
            raise self._reject(
                "peer_cap",
                ResourceExhausted(f"run {run_id!r} holds {self.limits.peers_per_run} peers already"),
            )
        metrics_url = request.metrics_url
        if request.source is not None:
            metrics_url = scrape_target(request.source, metrics_url)
        new = self.store.record_reports(
            run_id, peer_id, device=request.device, metrics_url=metrics_url, addrs=addrs,
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
            if a.writer is not None and provider != a.writer:
                raise InvalidArgument(f"peer {a.writer[:16]} may announce only what it provides itself")
            if not _HEX64.match(a.manifest_hash):
                raise InvalidArgument("manifest_hash must be 64 lowercase hex characters")
            if len(a.manifest) > MAX_MANIFEST_BYTES:
                raise InvalidArgument(f"manifest of {len(a.manifest)} bytes, at most {MAX_MANIFEST_BYTES}")
            try:
                manifest = Manifest.from_bytes(a.manifest, expected_hash=a.manifest_hash)
                check_plausible(manifest, param_count=None, max_bytes=self.limits.max_checkpoint_bytes)
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
        except InvalidArgument as e:
            raise self._reject("invalid", e) from None
        now = self._clock()
        if a.writer is not None:
            self._check_attested(run_id, provider, a.round, a.manifest_hash, len(a.manifest), now)
        checkpoint = CheckpointInfo(
            run_id=run_id, round=a.round, global_step=a.global_step, manifest_hash=a.manifest_hash,
            total_bytes=a.total_bytes, first_announced=now, archived=False,
        )  # fmt: skip
        new = self.store.record_checkpoint(
            checkpoint, a.manifest, Provider(peer_id=provider, addrs=addrs, last_announced=now)
        )
        if self._on_checkpoint is not None:
            self._on_checkpoint(run_id)
        return new

    def _check_attested(
        self, run_id: str, provider: str, round: int, manifest_hash: str, size: int, now: float
    ) -> None:
        """An announcement fits what the run's members attest, and the run's caps; else refused."""
        if not self.store.online(run_id, provider, now=now):
            raise self._reject(
                "not_member",
                FailedPrecondition(f"peer {provider[:16]} announces a checkpoint before reporting a round"),
            )
        reached = self.store.attested_round(run_id, now=now)
        if reached is not None and round > reached + ANNOUNCE_LEAD:
            raise self._reject(
                "ahead",
                FailedPrecondition(f"checkpoint of round {round}: the run's members attest round {reached}"),
            )
        manifests = self.store.manifests_at(run_id, round)
        if any(provider in peers for digest, peers in manifests.items() if digest != manifest_hash):
            raise self._reject(
                "conflicting",
                InvalidArgument(f"peer {provider[:16]} announced another manifest for round {round}"),
            )
        if manifest_hash not in manifests:
            if len(manifests) >= self.limits.manifests_per_round:
                raise self._reject(
                    "manifest_cap",
                    ResourceExhausted(f"round {round} has {len(manifests)} manifests already"),
                )
            if self.store.manifest_bytes(run_id) + size > self.limits.manifest_bytes_per_run:
                raise self._reject(
                    "manifest_bytes",
                    ResourceExhausted(
                        f"run {run_id!r} holds {self.limits.manifest_bytes_per_run} bytes of manifests"
                    ),
                )

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
        found = self.store.checkpoint(run_id, manifest_hash=manifest_hash, round=round, now=self._clock())
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
