"""One averaging round on libp2p streams: rendezvous, sharded reduce, transactional commit.

Rendezvous. Members publish heartbeats in the DHT; the live member with the lowest peer id
conducts, so every member picks the same conductor without a vote. A member ready for a round
opens a rendezvous stream to it and sends a JoinRequest with the round id and digest of its x'; a
conductor still training holds the request until it gathers. The conductor waits for every live
member up to a grace time, then fixes one roster: the members whose (round, digest) is the
majority's (a tie goes to the higher round). Members with another base get ``included=False`` and
repair their x' from a peer; while fewer than ``min_group`` share the base, they are answered and
the gathering waits on for them to come back on it. A
conductor that learns of a lower live peer hands its joiners a Redirect; a busy or unreachable
candidate is passed over for a few seconds (twice the join grace), then tried again. The roster
is fixed before anything is sent.

Newcomers. A node that joined by taking x' from peers is *fresh* (in its heartbeat and join
request) until it first commits a round. Its x' can be a round behind already: a member alone
commits rounds while joiners download. So fresh members rank after every established one for
conducting; a fresh member behind an established member in the same gathering does not vote on
the base (it repairs forward instead of sending that member back to the copy it gave out); and a
gathering of fresh members only waits past the grace for the established members it sees live.
Two groups never commit the same round on one base this way, as long as their views of the
member list agree.

Reduce. Shards go to owners by rendezvous hashing over the roster. Every member sends its encoded
part of each shard to the shard's owner on one shard stream per owner and waits on that stream
for the owner's result: the weighted mean of the parts that arrived before the owner's deadline,
encoded once, the same bytes to every member, naming the members it included.

Commit. Each member tells the conductor which results it holds (a Receipt); the conductor answers
every member with the intersection (a Commit). A shard whose owner died before all members had
its result is in nobody's commit: no member applies it. Should the conductor itself die while
sending commits, the members' x' may differ; the digest check at the next rendezvous finds the
minority and it repairs from a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import torch

from swarm.auth import Gate
from swarm.averaging.defence import BanList, Defence, centered_clip, find_outliers
from swarm.averaging.journal import JournalEntry, RoundJournal
from swarm.averaging.reduce import ContributionError, apply_error_feedback, check_contribution, weighted_mean
from swarm.averaging.shards import ShardLayout, Span, assign_owners, gather, supports
from swarm.averaging.state import GlobalCopy, ShardUpdate, digest_of
from swarm.averaging.timing import RoundTiming
from swarm.compression.codecs import Codec, CodecContext, CodecError, Fp32Codec, all_finite
from swarm.dht.records import MemberRecord, members_key
from swarm.p2p import SwarmHost, peer_from_name, peer_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import ByteCounter, FramedStream, StreamClosed, WireError

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "1"
STATE_CHUNK_BYTES = 1 << 20
CONTROL_FRAME_BYTES = 64 * 1024
"""Limit for rendezvous and state-request frames: they carry ids, digests and counters only."""
STATE_FRAME_BYTES = STATE_CHUNK_BYTES + 4096
MAX_STATE_STREAMS = 2
"""State transfers served at once: each holds a copy of x'."""
MAX_JOIN_WEIGHT = 1000.0
MAX_JOIN_SAMPLES = 1 << 40
MAX_JOIN_LOCAL_STEPS = 1 << 20


def _protocol(run_id: str, name: str) -> str:
    return f"/swarm/{run_id}/{name}/{PROTOCOL_VERSION}"


def _short(peer: bytes) -> str:
    return peer_name(peer)[-8:]


def _conductor_rank(live: dict[bytes, bool]) -> Callable[[bytes], tuple[bool, bytes]]:
    """Order of conductor candidates: established members (lowest peer id first), then fresh ones.

    Every member reads the same heartbeats, so every member picks the same conductor; while an
    established member is live, newcomers (whose x' may be behind already) gather at it.
    """
    return lambda peer: (live.get(peer, True), peer)


@dataclass(kw_only=True)
class Contribution:
    """What a member brings to a round: its delta x_i - x' and its work since the last one.

    ``delta`` is either dense (``[n]`` fp32 on the CPU, ``round`` None) or, with ``round`` set, only
    its entries on that round's supports (``Averager.supports(round)``, one shard after another),
    fp32 on any device: all that the round's codec reads. A GPU member gathers and encodes on its
    GPU and moves a few bytes per parameter less to the host; every member skips a flat copy of
    the model.
    """

    delta: torch.Tensor
    weight: float
    samples: int
    local_steps: int
    round: int | None = None


class ReplayError(ValueError):
    """A journal that does not replay onto our x' (undecodable part, or a digest that differs)."""


class Status(Enum):
    COMMITTED = "committed"
    REPAIR = "repair"
    NO_GROUP = "no_group"
    ABORTED = "aborted"


@dataclass(kw_only=True)
class RoundOutcome:
    status: Status
    round: int = 0
    members: list[bytes] = field(default_factory=list)
    updates: list[ShardUpdate] = field(default_factory=list)
    aborted_shards: list[int] = field(default_factory=list)
    repair_from: list[bytes] = field(default_factory=list)
    global_step_increment: int = 0
    samples: int = 0
    duration_s: float = 0.0
    transfer_s: float = 0.0
    folds: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    """Owner-side error this member held for shards it no longer owns, moved into its own residual:
    add each ``(start, values)`` to x_i whatever the status (x' does not change)."""
    codec: str = ""
    bytes_sent: int = 0
    """Bytes written to rendezvous and shard streams while this round ran (length prefixes included)."""
    bytes_received: int = 0
    fp32_bytes: int = 0
    """Payload bytes the fp32 codec would have moved for this member in the same roster."""

    @property
    def compression_ratio(self) -> float:
        """fp32 payload bytes over the bytes actually moved (control messages included)."""
        moved = self.bytes_sent + self.bytes_received
        return self.fp32_bytes / moved if moved else 0.0


@dataclass(frozen=True)
class Misbehaviour:
    """What a hostile member sends instead of its parts (tests and the byzantine benchmark only)."""

    mode: str
    """nan, oversized (a frame above the owner's limit), scale (the part times ``factor``) or
    random (Gaussian noise with ``factor`` times the part's norm)."""
    factor: float = 100.0
    seed: int = 0

    MODES = ("nan", "oversized", "scale", "random")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"misbehaviour must be one of {', '.join(self.MODES)}, got {self.mode!r}")

    def payload(
        self, codec: Codec, values: torch.Tensor, num_elements: int, ctx: CodecContext, frame_limit: int
    ) -> bytes:
        """What to send for a shard of ``num_elements`` whose honest delta on the support is ``values``."""
        if self.mode == "oversized":
            return bytes(frame_limit + 1)
        if self.mode == "nan":
            return Fp32Codec().encode(torch.full((num_elements,), math.nan), ctx)
        values = values.cpu()
        if self.mode == "scale":
            return codec.encode_support(values * self.factor, num_elements, ctx)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.round * 1009 + ctx.shard)
        noise = torch.randn(values.shape, generator=generator)
        scale = (
            self.factor
            * float(torch.linalg.vector_norm(values))
            / max(1e-30, float(torch.linalg.vector_norm(noise)))
        )
        return codec.encode_support(noise * scale, num_elements, ctx)


class _Gathering:
    """The conductor's side of one round attempt."""

    def __init__(self) -> None:
        self.requests: dict[bytes, pb.JoinRequest] = {}
        self.replies: dict[bytes, asyncio.Future[pb.Frame]] = {}
        self.receipts: dict[bytes, asyncio.Future[pb.Receipt]] = {}
        self.commit: asyncio.Future[pb.Commit] = asyncio.get_running_loop().create_future()
        self.my_base: tuple[int, bytes] | None = None
        self.changed = asyncio.Event()
        self.closed = False


class _OwnerGroup:
    """An owner's side of one round: parts per owned shard until the deadline, then the results.

    A result future resolves to None when the shard has no result (no valid part arrived).
    """

    def __init__(self, roster: pb.Roster, layout: ShardLayout, shards: list[int], deadline: float):
        self.roster = roster
        self.weights = {bytes(m.peer_id): m.weight for m in roster.members}
        self.layout, self.shards, self.deadline = layout, shards, deadline
        self.parts: dict[int, dict[bytes, tuple[float, torch.Tensor]]] = {s: {} for s in shards}
        self.failed: dict[int, set[bytes]] = {s: set() for s in shards}
        self.arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.results: dict[int, asyncio.Future[pb.ShardResult | None]] = {
            s: loop.create_future() for s in shards
        }
        self.pending_error: dict[int, tuple[int, int, torch.Tensor]] = {}
        """Owner-side residuals of this round on each shard's support, (offset, stride, values):
        written into the error buffers only for shards that commit."""

    def resolve_missing(self) -> None:
        for future in self.results.values():
            if not future.done():
                future.set_result(None)

    def complete(self) -> bool:
        return all(len(self.parts[s]) + len(self.failed[s]) >= len(self.weights) for s in self.shards)


class Averager:
    """Runs rounds for one node over its ``SwarmHost``; serves rendezvous, shard and state streams."""

    def __init__(
        self,
        host: SwarmHost,
        *,
        run_id: str,
        codec: Codec,
        global_copy: GlobalCopy,
        num_shards: int,
        timing: RoundTiming,
        warmup_rounds: int = 0,
        exact_every: int = 0,
        defence: Defence | None = None,
        gate: Gate | None = None,
        on_send: Callable[[str], None] | None = None,
    ):
        self.host, self.run_id, self.codec, self.copy = host, run_id, codec, global_copy
        self.warmup_rounds, self.exact_every = warmup_rounds, exact_every
        self._exact = Fp32Codec()
        self.round_traffic = ByteCounter()
        """Bytes of rendezvous and shard streams (not state transfers)."""
        self.layout = ShardLayout(num_elements=global_copy.values.numel(), num_shards=num_shards)
        self.timing = timing
        self._on_send = on_send or (lambda kind: None)
        self._gathering: _Gathering | None = None
        self._gathering_open = asyncio.Event()
        self._joining = asyncio.Event()
        self._joining_target: bytes | None = None
        """The conductor this node is asking for a roster right now, if any."""
        self._owner_groups: dict[bytes, _OwnerGroup] = {}
        self._groups_changed = asyncio.Event()
        self._owner_error: dict[int, torch.Tensor] = {}
        self._transfer_ema_s: float | None = None
        self._background: set[asyncio.Task] = set()
        self._copy_advanced = asyncio.Condition()
        self._settling: asyncio.Task[bytes] | None = None
        """Hashing x' after the node applied a round (``applied``); the next round waits for it."""
        self._state_slots = asyncio.Semaphore(MAX_STATE_STREAMS)
        # A part is at most one shard in fp32 (the widest codec) plus the frame's own fields.
        largest_shard = max(self.layout.size(s) for s in range(self.layout.num_shards))
        self.shard_frame_bytes = 4 * largest_shard + 4096
        self.rejections = 0
        self.defence = defence or Defence()
        self.gate = gate or Gate(run_id=run_id)
        """Who may take part: in a closed run, joins and heartbeats need a credential."""
        self.bans = BanList()
        """Peers whose parts this node excluded as an owner: their joins and parts are refused."""
        self.excluded_parts = 0
        """Parts this node excluded as an owner (malformed, NaN/Inf, outlier, banned sender)."""
        self.lose_results_round: int | None = None
        """Test hook (SWARM_FAULT=lose_results:R): drop the highest other owner's results in round R."""
        self.misbehave: Misbehaviour | None = None
        """Test hook (SWARM_FAULT=misbehave:...): send hostile parts to the other owners."""
        self._hurry_until = math.inf
        """Set by ``hurry``: no rendezvous goes on past this instant."""
        self.journal = RoundJournal(min(4 * self.layout.num_elements, MAX_JOURNAL_BYTES))
        """Rounds committed since x' was last replaced (see ``record_committed``), for joiners."""
        self.fresh = False
        """This node took x' from peers when it joined and has committed no round since (the node
        sets it before catching up; the first round it commits clears it). Its x' may be a round
        behind its source's already: it neither conducts nor outvotes an established member."""

    def owner_errors(self) -> dict[int, torch.Tensor]:
        """Owner-side error buffers by shard (for the node's resume state)."""
        return dict(self._owner_error)

    def restore_owner_errors(self, errors: dict[int, torch.Tensor]) -> None:
        """Take back saved buffers; those of shards that moved meanwhile fold at the next round."""
        for shard, error in errors.items():
            if not 0 <= shard < self.layout.num_shards or error.numel() != self.layout.size(shard):
                raise ValueError(f"saved owner error for shard {shard} does not fit this run's layout")
            self._owner_error[shard] = error.to(torch.float32).contiguous()

    def record_committed(self, outcome: RoundOutcome) -> None:
        """Journal a committed round once the node has applied it to x' (and set x's counters)."""
        self.journal.append(
            JournalEntry(
                round=outcome.round,
                global_step_increment=outcome.global_step_increment,
                samples=outcome.samples,
                parts=tuple((u.shard, u.payload) for u in outcome.updates),
                digest=self.copy.digest,
            )
        )

    def replay(self, entries: Sequence[JournalEntry], target: GlobalCopy) -> None:
        """Apply journaled rounds to ``target`` exactly as their members did (decode, then add, per
        shard), then check x's digest against the last round's.

        Raises ReplayError on a part this run cannot decode or a digest that differs; ``target`` is
        then partly changed, so callers replay into a copy they can throw away.
        """
        for entry in entries:
            if entry.round != target.round + 1:
                raise ReplayError(f"journal round {entry.round} does not follow round {target.round}")
            codec = self.codec_for(entry.round)
            for shard, payload in entry.parts:
                if not 0 <= shard < self.layout.num_shards:
                    raise ReplayError(f"journal part names shard {shard} of {self.layout.num_shards}")
                start, end = self.layout.bounds(shard)
                ctx = CodecContext(round=entry.round, shard=shard)
                try:
                    update = codec.decode_support(payload, end - start, ctx)
                except CodecError as e:
                    raise ReplayError(f"round {entry.round}, shard {shard}: {e}") from None
                offset, stride = codec.support(end - start, ctx)
                target.apply_shard(start + offset, update, stride)
            target.round = entry.round
            target.global_step += entry.global_step_increment
            target.swarm_samples += entry.samples
        # One hash for the whole replay: x' after the last round is what must match (a joiner of a
        # 1B-parameter run replaying 40 rounds would otherwise hash 4 GB 40 times).
        if entries and target.digest != entries[-1].digest:
            raise ReplayError(
                f"x' after replaying rounds {entries[0].round}..{entries[-1].round} differs from the journaled digest"
            )

    def hurry(self, grace_s: float) -> None:
        """This node is stopping: a round still forming gets ``grace_s`` more, then gives up
        (instead of waiting up to ``join_timeout_s`` for a group that may never come)."""
        self._hurry_until = min(self._hurry_until, time.monotonic() + grace_s)

    @property
    def me(self) -> bytes:
        return self.host.peer_id

    def codec_for(self, round_id: int) -> Codec:
        """The codec of round ``round_id``: exact fp32 during the run's warm-up rounds and on every
        ``exact_every``-th round (a flush of all residuals and owner errors), else the run's."""
        if round_id <= self.warmup_rounds or (self.exact_every and round_id % self.exact_every == 0):
            return self._exact
        return self.codec

    def supports(self, round_id: int) -> list[Span]:
        """Every shard's support in round ``round_id`` (``shards.supports`` of its codec)."""
        return supports(self.codec_for(round_id), self.layout, round_id)

    async def start(self) -> None:
        await self.host.add_handler(
            _protocol(self.run_id, "rendezvous"),
            self._handle_join,
            max_frame_bytes=CONTROL_FRAME_BYTES,
            counter=self.round_traffic,
        )
        await self.host.add_handler(
            _protocol(self.run_id, "shard"),
            self._handle_shard,
            max_frame_bytes=self.shard_frame_bytes,
            counter=self.round_traffic,
        )
        await self.host.add_handler(
            _protocol(self.run_id, "state"), self._handle_state, max_frame_bytes=CONTROL_FRAME_BYTES
        )

    def applied(self, outcome: RoundOutcome | None) -> asyncio.Task[bytes]:
        """The node applied a committed round (``outcome``) to x', or replaced x' (None): hash x' on
        a worker thread while the node trains on, then journal the round and wake the state and
        journal requests waiting for it. The task's result is x's new digest; the node's next round,
        and any state or journal it serves, wait for it. x' must not change before it is done."""
        self.copy.hash_in_background()
        self._settling = asyncio.create_task(self._settle(outcome))
        if outcome is not None:
            self.fresh = False
        return self._settling

    async def _settle(self, outcome: RoundOutcome | None) -> bytes:
        digest = await self.copy.digest_async()
        if outcome is not None:
            self.record_committed(outcome)
        async with self._copy_advanced:
            self._copy_advanced.notify_all()
        return digest

    async def settled(self) -> None:
        """Wait until the last ``applied`` is done (its digest known, its round journaled)."""
        if self._settling is not None and not self._settling.done():
            await asyncio.shield(self._settling)

    async def announce_leaving(self) -> None:
        """Mark our member record as leaving, so that conductors stop waiting for us."""
        # A subkey keeps the value with the latest expiration: outlive the records we stored before.
        ttl_s = max(self.timing.join_timeout_s, self.timing.heartbeat_ttl_s) + 1.0
        record = MemberRecord(
            round=self.copy.round, global_step=self.copy.global_step, local_steps_per_round=0, leaving=True,
            credential=self.gate.own_credential,
        )  # fmt: skip
        with contextlib.suppress(Exception):
            await self.host.dht_store(
                members_key(self.run_id), record.to_wire(), ttl_s=ttl_s, subkey=self.host.peer_name
            )

    async def shutdown(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    def _transfer_deadline_s(self) -> float:
        t = self.timing
        if self._transfer_ema_s is None:
            return t.min_transfer_s
        return min(t.max_transfer_s, max(t.min_transfer_s, t.transfer_factor * self._transfer_ema_s))

    def _missed_deadline(self, deadline_s: float) -> None:
        """Results missing at the deadline: a slow link or a dead owner. Double the next deadline
        (up to the ceiling), so that a link slower than the floor still completes rounds; completed
        rounds bring it back down through the EMA."""
        t = self.timing
        self._transfer_ema_s = min(t.max_transfer_s, 2 * deadline_s) / t.transfer_factor

    def _record_transfer(self, seconds: float, deadline_s: float, *, every_part: bool) -> None:
        # A transfer in which an owner waited for a missing part until the deadline measures the
        # deadline, not the network: feeding it back would ratchet the deadline up round after
        # round. One in which every result holds every member's part measures the network, however
        # close to the deadline it finished (ignoring those kept a floor deadline that one member's
        # slightly slower link missed in every round).
        if not every_part and seconds >= 0.9 * deadline_s:
            return
        ema = self._transfer_ema_s
        self._transfer_ema_s = seconds if ema is None else 0.7 * ema + 0.3 * seconds

    # ------------------------------------------------------------------ rendezvous: member side

    async def live_members(self) -> dict[bytes, MemberRecord]:
        records = await self.host.dht_get_subkeys(members_key(self.run_id), MemberRecord.from_wire)
        live = {}
        for name, record in records.items():
            try:
                peer = peer_from_name(name)
            except ValueError:
                logger.warning("ignoring a member record with a malformed peer id %r", name)
                continue
            problem = self.gate.problem(peer, record.credential)
            if problem is not None:
                logger.debug("ignoring the heartbeat of %s: %s", name[-8:], problem)
                continue
            live[peer] = record
            if peer != self.me:
                self.host.remember_addresses(peer, record.addrs)
        return live

    async def _live_peers(self) -> dict[bytes, bool]:
        """Members with a fresh heartbeat that have not announced they are leaving, and us: whether
        each is fresh, as its heartbeat says (ours too, so that we rank ourselves as the others do;
        until our first heartbeat is in, our own flag)."""
        try:
            async with asyncio.timeout(self.timing.connect_timeout_s):
                records = await self.live_members()
        except Exception as e:  # the DHT is unreachable for now: act on what we know, ourselves
            logger.warning("could not read the member list from the DHT: %s", e)
            return {self.me: self.fresh}
        live = {p: record.fresh for p, record in records.items() if not record.leaving}
        live.setdefault(self.me, self.fresh)
        return live

    def _join_request(self, contribution: Contribution) -> pb.JoinRequest:
        return pb.JoinRequest(
            run_id=self.run_id,
            round=self.copy.round,
            digest=self.copy.digest,
            samples=contribution.samples,
            local_steps=contribution.local_steps,
            weight=contribution.weight,
            credential=self.gate.own_credential,
            fresh=self.fresh,
        )

    async def run_round(self, contribution: Contribution) -> RoundOutcome:
        """Get into a roster, reduce, commit. Never waits past the round's deadlines.

        The outcome counts the bytes of rendezvous and shard streams while the round ran: one round
        runs at a time on a node, so these are the round's bytes (parts that reach an owner before its
        own round starts count towards its previous round).
        """
        sent, received = self.round_traffic.sent, self.round_traffic.received
        outcome = await self._run_round(contribution)
        outcome.bytes_sent = self.round_traffic.sent - sent
        outcome.bytes_received = self.round_traffic.received - received
        return outcome

    async def _run_round(self, contribution: Contribution) -> RoundOutcome:
        if contribution.round is None:
            if contribution.delta.shape != self.copy.values.shape:
                raise ValueError("contribution delta must have the shape of x'")
        else:
            if contribution.round != self.copy.round + 1:
                raise ValueError(
                    f"contribution packed for round {contribution.round}, but the next round is"
                    f" {self.copy.round + 1}"
                )
            entries = sum(span.count for span in self.supports(contribution.round))
            if contribution.delta.shape != (entries,):
                raise ValueError(
                    f"packed contribution has shape {tuple(contribution.delta.shape)}; round"
                    f" {contribution.round}'s supports hold {entries} entries"
                )
        if not all_finite(contribution.delta):
            raise ValueError("contribution delta holds NaN or Inf values")
        await self.settled()
        await self.copy.digest_async()  # hashed on the worker thread while the node trained
        started = time.monotonic()
        request = self._join_request(contribution)
        deadline = started + self.timing.join_timeout_s
        # Conductors that were busy or unreachable, passed over until the time given. Not for the
        # whole round: a peer busy repairing gathers a few seconds later, and everyone must then
        # come back to it (the lowest live peer), or two gatherings wait for each other until the
        # join timeout (with --min-group above half the swarm, neither can start).
        skip: dict[bytes, float] = {}
        target: bytes | None = None
        joined: tuple[pb.Roster, FramedStream | None, _Gathering | None] | None = None
        while joined is None and time.monotonic() < min(deadline, self._hurry_until):
            deadline = min(deadline, self._hurry_until)
            now = time.monotonic()
            for peer in [p for p, until in skip.items() if until <= now]:
                del skip[peer]
            if target is None:
                live = await self._live_peers()
                target = min((p for p in live if p not in skip or p == self.me), key=_conductor_rank(live))
            attempt: tuple[pb.Roster, FramedStream | None, _Gathering | None] | bytes | None
            if target == self.me:
                attempt = await self._conduct(request, deadline, skip)
            else:
                # Joiners that reach us meanwhile are sent on to the same conductor.
                self._joining_target = target
                self._joining.set()
                try:
                    attempt = await self._join(target, request, deadline)
                finally:
                    self._joining_target = None
                    self._joining.clear()
            if isinstance(attempt, tuple):
                joined = attempt
            elif isinstance(attempt, bytes):
                target = attempt if attempt not in skip else None
            else:  # busy, unreachable or gave up: pass it over for a while, re-read the DHT
                if target != self.me:
                    skip[target] = time.monotonic() + self._skip_s()
                target = None
                await asyncio.sleep(0.1)
        if joined is None:
            return RoundOutcome(status=Status.NO_GROUP, duration_s=time.monotonic() - started)
        roster, conductor_stream, gathering = joined
        problem = self._roster_problem(roster)
        if problem is not None or not roster.included:
            if conductor_stream is not None:
                conductor_stream.close()
            if problem is not None:
                self.rejections += 1
                logger.warning("refusing a roster for round %d: %s", roster.round, problem)
                return RoundOutcome(status=Status.ABORTED, duration_s=time.monotonic() - started)
            return RoundOutcome(
                status=Status.REPAIR,
                round=roster.round,
                repair_from=[bytes(p) for p in roster.repair_from if bytes(p) != self.me],
                duration_s=time.monotonic() - started,
            )
        result = await self._reduce_and_commit(roster, contribution, conductor_stream, gathering)
        result.duration_s = time.monotonic() - started
        return result

    def _roster_problem(self, roster: pb.Roster) -> str | None:
        """Why a roster from a conductor (an untrusted peer) cannot be acted on, or None."""
        members = [bytes(m.peer_id) for m in roster.members]
        if roster.num_shards != self.layout.num_shards:
            return f"{roster.num_shards} shards, the run uses {self.layout.num_shards}"
        if not members or members != sorted(set(members)):
            return "members are empty, unsorted or repeated"
        if (self.me in members) != roster.included:
            return "the roster's member list contradicts its included flag"
        if not (0 < roster.deadline_s <= 2 * self.timing.max_transfer_s):
            return f"deadline {roster.deadline_s} s is outside (0, {2 * self.timing.max_transfer_s}]"
        if any(not (0 < m.weight <= MAX_JOIN_WEIGHT) for m in roster.members):
            return "a member weight is out of range"
        if roster.included and (
            roster.round != self.copy.round + 1 or roster.base_digest != self.copy.digest
        ):
            return "it includes us on a base other than our x'"
        if not roster.included and len(roster.repair_from) > 16:
            return "too many repair sources"
        return None

    async def _join(
        self, conductor: bytes, request: pb.JoinRequest, deadline: float
    ) -> tuple[pb.Roster, FramedStream, None] | bytes | None:
        try:
            stream = await self.host.open_stream(
                conductor,
                _protocol(self.run_id, "rendezvous"),
                timeout_s=self.timing.connect_timeout_s,
                max_frame_bytes=CONTROL_FRAME_BYTES,
                counter=self.round_traffic,
            )
        except Exception as e:
            logger.info("conductor %s unreachable: %s", _short(conductor), e)
            return None
        try:
            await asyncio.wait_for(stream.send(pb.Frame(join=request)), timeout=self.timing.connect_timeout_s)
            frame = await asyncio.wait_for(
                stream.expect("roster", "redirect", "busy"), timeout=max(0.1, deadline - time.monotonic())
            )
        except (TimeoutError, WireError, ConnectionError) as e:
            logger.info("rendezvous with %s failed: %s", _short(conductor), e)
            stream.close()
            return None
        kind = frame.WhichOneof("body")
        if kind == "roster":
            return frame.roster, stream, None
        stream.close()
        if kind == "redirect" and len(frame.redirect.conductor) <= 64:
            return bytes(frame.redirect.conductor)
        return None

    # ------------------------------------------------------------------ rendezvous: conductor side

    def _skip_s(self) -> float:
        """How long a busy or unreachable conductor is passed over: as long as a joiner waits for
        a conductor that is not gathering (``_handle_join``)."""
        return 2 * self.timing.join_grace_s

    async def _conduct(
        self, request: pb.JoinRequest, deadline: float, skip: dict[bytes, float]
    ) -> tuple[pb.Roster, None, _Gathering] | bytes | None:
        gathering = _Gathering()
        gathering.requests[self.me] = request
        gathering.my_base = (request.round, bytes(request.digest))
        self._gathering = gathering
        self._gathering_open.set()
        started = time.monotonic()
        t = self.timing
        try:
            while True:
                live = await self._live_peers()
                rank = _conductor_rank(live)
                now = time.monotonic()
                before = [p for p in live if rank(p) < rank(self.me) and skip.get(p, 0.0) <= now]
                if before:
                    target = min(before, key=rank)
                    self._close_gathering(gathering, pb.Frame(redirect=pb.Redirect(conductor=target)))
                    return target
                joined = set(gathering.requests)
                waited = time.monotonic() - started
                enough = len(joined) >= t.min_group
                # Newcomers alone do not start a round without the established members they see
                # live (one that was busy when they came): its x' may be a round ahead of theirs,
                # and two groups committing the same round would fork x'.
                grace = waited >= t.join_grace_s and not (
                    all(r.fresh for r in gathering.requests.values())
                    and any(not fresh for p, fresh in live.items() if p not in joined)
                )
                if enough and waited >= t.gather_s and (set(live) <= joined or grace):
                    base = self._majority_base(gathering)
                    if len(self._on_base(gathering, base)) >= t.min_group:
                        break
                    # Fewer than --min-group joiners share the majority's base: no round on it yet.
                    # The others are sent to repair from those that hold it (they come back on it);
                    # a conductor that must repair itself lets its joiners go.
                    mine = self._send_to_repair(gathering, base)
                    if mine is not None:
                        self._close_gathering(gathering, pb.Frame(busy=pb.Busy(reason="conductor repairing")))
                        return mine, None, gathering
                    continue
                logger.debug(
                    "gathering: %d joined %s, %d live %s, waited %.1fs",
                    len(joined),
                    sorted(_short(p) for p in joined),
                    len(live),
                    sorted(_short(p) for p in live),
                    waited,
                )
                if time.monotonic() >= min(deadline, self._hurry_until):
                    self._close_gathering(gathering, pb.Frame(busy=pb.Busy(reason="not enough members")))
                    return None
                gathering.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gathering.changed.wait(), timeout=0.25)
            gathering.closed = True
            self._gathering_open.clear()
            rosters = self._make_rosters(gathering, base)
            for peer, future in gathering.replies.items():
                if not future.done():
                    future.set_result(pb.Frame(roster=rosters[peer]))
            mine = rosters[self.me]
            self._spawn(self._coordinate_commit(gathering, mine))
            return mine, None, gathering
        finally:
            if self._gathering is gathering:
                self._gathering = None
                self._gathering_open.clear()

    def _close_gathering(self, gathering: _Gathering, reply: pb.Frame) -> None:
        gathering.closed = True
        self._gathering_open.clear()
        for future in gathering.replies.values():
            if not future.done():
                future.set_result(reply)

    @staticmethod
    def _majority_base(gathering: _Gathering) -> tuple[int, bytes]:
        """The (round, digest) most joiners hold; on a tie the higher round, then the conductor's own.

        A tie between rounds is a member that was cut off (a partition, a reset relay) meeting one
        that went on: the one that went on is right, and the stale one repairs from it. A tie on one
        round (diverged digests) goes to the conductor. A stranger claiming a made-up round can only
        win a tie in a group of two, where as a conductor it could dictate the roster anyway; closed
        runs keep strangers out of gatherings altogether.

        A fresh joiner on a round below an established member's does not vote: it took x' from a
        member that has committed a round since (a lone member goes on while joiners download), and
        two newcomers must not send that member back to the copy it gave them, dropping its round.
        """
        established = max((r.round for r in gathering.requests.values() if not r.fresh), default=0)
        bases = Counter(
            (r.round, bytes(r.digest))
            for r in gathering.requests.values()
            if not r.fresh or r.round >= established
        )
        base, _ = max(
            bases.items(), key=lambda item: (item[1], item[0][0], item[0] == gathering.my_base, item[0][1])
        )
        return base

    @staticmethod
    def _on_base(gathering: _Gathering, base: tuple[int, bytes]) -> list[bytes]:
        return sorted(p for p, r in gathering.requests.items() if (r.round, bytes(r.digest)) == base)

    @staticmethod
    def _members(gathering: _Gathering, peers: list[bytes]) -> list[pb.Member]:
        return [
            pb.Member(
                peer_id=p,
                weight=gathering.requests[p].weight,
                samples=gathering.requests[p].samples,
                local_steps=gathering.requests[p].local_steps,
            )
            for p in peers
        ]

    def _roster(
        self,
        base: tuple[int, bytes],
        members: list[pb.Member],
        *,
        group_id: bytes,
        inside: bool,
        deadline_s: float,
    ) -> pb.Roster:
        """The roster of round ``base[0] + 1`` on ``members``; one outside them repairs from them."""
        return pb.Roster(
            group_id=group_id,
            round=base[0] + 1,
            base_digest=base[1],
            members=members,
            num_shards=self.layout.num_shards,
            included=inside,
            repair_from=[] if inside else [m.peer_id for m in members[:4]],
            deadline_s=deadline_s,
        )

    def _send_to_repair(self, gathering: _Gathering, base: tuple[int, bytes]) -> pb.Roster | None:
        """Answer every joiner off ``base`` with a repair roster and drop it; the conductor's own, if off it."""
        sources = self._on_base(gathering, base)
        roster = self._roster(
            base,
            self._members(gathering, sources),
            group_id=secrets.token_bytes(16),
            inside=False,
            deadline_s=self._transfer_deadline_s(),
        )
        mine = None
        for peer in [p for p in gathering.requests if p not in sources]:
            if peer == self.me:
                mine = roster
                continue
            logger.info(
                "gathering: %s is on round %d, the majority on %d: it repairs first",
                _short(peer),
                gathering.requests[peer].round,
                base[0],
            )
            reply = gathering.replies.pop(peer, None)
            if reply is not None and not reply.done():
                reply.set_result(pb.Frame(roster=roster))
            del gathering.requests[peer]
        gathering.changed.set()
        return mine

    def _make_rosters(self, gathering: _Gathering, base: tuple[int, bytes]) -> dict[bytes, pb.Roster]:
        included = self._on_base(gathering, base)
        members = self._members(gathering, included)
        group_id = secrets.token_bytes(16)
        deadline_s = self._transfer_deadline_s()
        rosters = {}
        for peer in gathering.requests:
            inside = peer in included
            rosters[peer] = self._roster(
                base, members, group_id=group_id, inside=inside, deadline_s=deadline_s
            )
            if inside:
                gathering.receipts[peer] = asyncio.get_running_loop().create_future()
        return rosters

    async def _coordinate_commit(self, gathering: _Gathering, roster: pb.Roster) -> None:
        margin = self._margin(roster)
        wait_s = roster.deadline_s + 2 * margin
        done, _ = await asyncio.wait(list(gathering.receipts.values()), timeout=wait_s)
        receipts = [f.result() for f in done if not f.cancelled() and f.exception() is None]
        # A shard commits when a strict majority of the reporting members hold its result with the
        # same bytes: one member (a hostile one whose parts an owner refused, or one that lost an
        # owner's stream) cannot veto it. A member without those bytes repairs its x' afterwards.
        holders: dict[int, Counter[bytes]] = {}
        for receipt in receipts:
            for shard, digest in zip(receipt.shards, receipt.result_digests, strict=False):
                holders.setdefault(shard, Counter())[bytes(digest)] += 1
        agreed: dict[int, bytes] = {}
        for shard, counts in holders.items():
            digest, count = counts.most_common(1)[0]
            if 2 * count > len(receipts):
                agreed[shard] = digest
        split = [s for s, counts in holders.items() if len(counts) > 1]
        if split:
            logger.warning(
                "round %d: owners sent different bytes to different members for shards %s",
                roster.round,
                split,
            )
        commit = pb.Commit(
            group_id=roster.group_id,
            shards=sorted(agreed),
            result_digests=[agreed[s] for s in sorted(agreed)],
        )
        gathering.commit.set_result(commit)
        if any(not set(agreed) <= set(receipt.shards) for receipt in receipts):
            # A member missed results the others got in time: its link needs a longer deadline
            # (else it repairs every round). The conductor sets the deadline, so it takes note.
            self._missed_deadline(roster.deadline_s)
        logger.info(
            "round %d: %d/%d receipts, committing %d/%d shards",
            roster.round,
            len(receipts),
            len(gathering.receipts),
            len(agreed),
            roster.num_shards,
        )

    @staticmethod
    def _margin(roster: pb.Roster) -> float:
        return max(1.0, 0.5 * roster.deadline_s)

    def _join_problem(self, request: pb.JoinRequest) -> str | None:
        if request.run_id != self.run_id:
            return f"this node trains run {self.run_id!r}"
        if len(request.digest) != 32:
            return "digest is not 32 bytes"
        if not (0 < request.weight <= MAX_JOIN_WEIGHT):
            return f"weight {request.weight} is outside (0, {MAX_JOIN_WEIGHT}]"
        if request.samples > MAX_JOIN_SAMPLES or request.local_steps > MAX_JOIN_LOCAL_STEPS:
            return "sample or step counts are implausibly large"
        if request.round > self.copy.round + 1_000_000:
            return "round id is implausibly far ahead"
        return None

    async def _handle_join(self, peer: bytes, stream: FramedStream) -> None:
        frame = await asyncio.wait_for(stream.expect("join"), timeout=self.timing.connect_timeout_s)
        request = frame.join
        problem = self._join_problem(request)
        if problem is None:
            problem = self.gate.problem(peer, bytes(request.credential))
        if problem is None and self.bans.banned(peer):
            problem = "banned for sending an invalid or outlying part"
        if problem is not None:
            if request.run_id == self.run_id:
                self.rejections += 1
                logger.warning("rejected a join request from %s: %s", _short(peer), problem)
            await stream.send(pb.Frame(busy=pb.Busy(reason=problem)))
            return
        # Everyone picks the same conductor; one that is still training (or just closed a roster)
        # keeps the joiner waiting for its next gathering rather than splitting the group. A node
        # that is itself joining another conductor (one the joiner has not seen yet) redirects it.
        waited_until = time.monotonic() + 2 * self.timing.join_grace_s
        while (gathering := self._gathering) is None or gathering.closed:
            target = self._joining_target
            if target is not None and target != peer:
                logger.debug("redirecting %s to %s, the conductor we join", _short(peer), _short(target))
                await stream.send(pb.Frame(redirect=pb.Redirect(conductor=target)))
                return
            remaining = waited_until - time.monotonic()
            if remaining <= 0:
                await stream.send(pb.Frame(busy=pb.Busy(reason="not gathering a round")))
                return
            waiters = {
                asyncio.ensure_future(self._gathering_open.wait()),
                asyncio.ensure_future(self._joining.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        reply: asyncio.Future[pb.Frame] = asyncio.get_running_loop().create_future()
        logger.debug(
            "join request from %s enters the gathering (%d joined)", _short(peer), len(gathering.requests) + 1
        )
        gathering.requests[peer] = request
        gathering.replies[peer] = reply
        gathering.changed.set()
        # Watch the stream while waiting: a joiner that gives up (closes) must not enter the roster.
        gone = asyncio.ensure_future(stream.recv())
        try:
            await asyncio.wait(
                {reply, gone}, timeout=self.timing.join_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gone.cancel()
            await asyncio.wait({gone})  # let it finish cancelling: only one reader at a time
            if not reply.done() and not gathering.closed:
                gathering.requests.pop(peer, None)
                gathering.replies.pop(peer, None)
                gathering.changed.set()
        if not reply.done():
            return
        answer = reply.result()
        await stream.send(answer)
        if answer.WhichOneof("body") != "roster" or not answer.roster.included:
            return
        roster = answer.roster
        margin = self._margin(roster)
        commit_ready = time.monotonic() + roster.deadline_s + 3 * margin
        try:
            receipt = await asyncio.wait_for(stream.expect("receipt"), timeout=roster.deadline_s + 2 * margin)
        except (TimeoutError, WireError, ConnectionError):
            logger.info("round %d: no receipt from %s", roster.round, _short(peer))
            gathering.receipts[peer].cancel()  # gone: the commit need not wait for it
            return
        valid = (
            receipt.receipt.group_id == roster.group_id
            and len(receipt.receipt.shards) == len(receipt.receipt.result_digests)
            and len(receipt.receipt.shards) <= roster.num_shards
        )
        if valid and not gathering.receipts[peer].done():
            gathering.receipts[peer].set_result(receipt.receipt)
        commit = await asyncio.wait_for(
            asyncio.shield(gathering.commit), timeout=max(0.1, commit_ready - time.monotonic())
        )
        await asyncio.wait_for(stream.send(pb.Frame(commit=commit)), timeout=self.timing.connect_timeout_s)

    # ------------------------------------------------------------------ reduce and commit

    async def _reduce_and_commit(
        self,
        roster: pb.Roster,
        contribution: Contribution,
        conductor_stream: FramedStream | None,
        gathering: _Gathering | None,
    ) -> RoundOutcome:
        roster_time = time.monotonic()
        members = [bytes(m.peer_id) for m in roster.members]
        layout = self.layout
        owners = assign_owners(self.run_id, layout.num_shards, members)
        margin = self._margin(roster)
        my_shards = [s for s, owner in enumerate(owners) if owner == self.me]
        group_id = bytes(roster.group_id)
        codec = self.codec_for(roster.round)
        if contribution.round not in (None, roster.round):
            raise ValueError(f"contribution packed for round {contribution.round}, roster of {roster.round}")
        spans = self.supports(roster.round)
        delta = contribution.delta if contribution.round is not None else gather(contribution.delta, spans)
        delta, folds = self._fold_moved_errors(roster, delta, spans, set(my_shards))
        mine = sum(layout.size(s) for s in my_shards)
        fp32_bytes = 4 * (2 * (layout.num_elements - mine) + 2 * (len(members) - 1) * mine)
        group = _OwnerGroup(roster, layout, my_shards, roster_time + roster.deadline_s)
        self._owner_groups[group_id] = group
        self._groups_changed.set()
        try:
            self._spawn(self._finish_owned_shards(group))
            # Encode every part once; C[delta_i] is what this member subtracts if its part is included.
            # Decoded values live on each shard's support (codec.support): all that a round changes.
            parts: dict[int, pb.ShardPart] = {}
            own_decoded: dict[int, torch.Tensor] = {}
            for shard, values in enumerate(delta.split([span.count for span in spans])):
                size = layout.size(shard)
                ctx = CodecContext(round=roster.round, shard=shard)
                payload = codec.encode_support(values, size, ctx)
                own_decoded[shard] = codec.decode_support(payload, size, ctx)
                if self.misbehave is not None and shard not in my_shards:
                    payload = self.misbehave.payload(codec, values, size, ctx, self.shard_frame_bytes)
                parts[shard] = pb.ShardPart(
                    group_id=roster.group_id,
                    shard=shard,
                    weight=contribution.weight,
                    codec=codec.name,
                    payload=payload,
                )
            for shard in my_shards:
                self._accept_part(group, self.me, parts[shard])

            results: dict[int, tuple[pb.ShardResult, torch.Tensor]] = {}
            by_owner: dict[bytes, list[int]] = {}
            for shard, owner in enumerate(owners):
                by_owner.setdefault(owner, []).append(shard)
            results_deadline = roster_time + roster.deadline_s + margin
            exchanges = [
                self._exchange_with_owner(
                    owner, roster, [parts[s] for s in shards], results, results_deadline
                )
                for owner, shards in by_owner.items()
                if owner != self.me
            ]
            local = [self._collect_local(group, results, results_deadline)] if my_shards else []
            await asyncio.gather(*exchanges, *local)
            transfer_s = time.monotonic() - roster_time
            if len(results) == layout.num_shards:
                every_part = all(len(result.included) == len(members) for result, _ in results.values())
                self._record_transfer(transfer_s, roster.deadline_s, every_part=every_part)
            elif len(members) > 1:
                self._missed_deadline(roster.deadline_s)

            receipt = pb.Receipt(
                group_id=roster.group_id,
                shards=sorted(results),
                result_digests=[hashlib.sha256(results[s][0].payload).digest() for s in sorted(results)],
            )
            commit = await self._send_receipt(receipt, roster, conductor_stream, gathering, roster_time)
        finally:
            if conductor_stream is not None:
                conductor_stream.close()
            self._spawn(self._forget_group(group_id, delay_s=roster.deadline_s + 4 * margin))
        if commit is None:
            logger.warning("round %d: no commit from the conductor; applying nothing", roster.round)
            return RoundOutcome(
                status=Status.ABORTED,
                round=roster.round,
                members=members,
                transfer_s=transfer_s,
                folds=folds,
                codec=codec.name,
                fp32_bytes=fp32_bytes,
            )

        committed = dict(zip(commit.shards, commit.result_digests, strict=False))
        updates = []
        lacking = []
        for shard in sorted(committed):
            held = results.get(shard)
            if held is None or hashlib.sha256(held[0].payload).digest() != committed[shard]:
                lacking.append(shard)  # the majority's bytes, which we lack: repair below
                continue
            result, aggregate = held
            start, end = layout.bounds(shard)
            offset, stride = codec.support(end - start, CodecContext(round=roster.round, shard=shard))
            included = tuple(bytes(p) for p in result.included)
            updates.append(
                ShardUpdate(
                    shard=shard,
                    start=start,
                    aggregate=aggregate,
                    own=own_decoded[shard] if self.me in included else None,
                    offset=offset,
                    stride=stride,
                    size=end - start,
                    payload=bytes(result.payload),
                    owner=owners[shard],
                    included=included,
                )
            )
        # Owner-side error feedback survives only for shards that committed: an aborted shard's
        # deltas come back next round, and its residual must not be counted twice.
        for shard in my_shards:
            if shard in committed and shard in group.pending_error:
                self._keep_owner_error(shard, *group.pending_error[shard])
        if lacking:
            # The others apply these shards; we cannot. Apply nothing and take their x' (a replay of
            # this round from their journal, which holds our parts); until then, and if that fails,
            # our delta stays in x_i - x' like any unsent work.
            logger.warning(
                "round %d: the commit names shards %s whose results this member lacks; repairing",
                roster.round,
                lacking,
            )
            return RoundOutcome(
                status=Status.REPAIR,
                round=roster.round,
                members=members,
                repair_from=[m for m in members if m != self.me],
                transfer_s=transfer_s,
                folds=folds,
                codec=codec.name,
                fp32_bytes=fp32_bytes,
            )
        return RoundOutcome(
            status=Status.COMMITTED,
            round=roster.round,
            members=members,
            updates=updates,
            aborted_shards=sorted(set(range(layout.num_shards)) - set(committed)),
            global_step_increment=round(sum(m.local_steps for m in roster.members) / len(members)),
            samples=sum(m.samples for m in roster.members),
            transfer_s=transfer_s,
            folds=folds,
            codec=codec.name,
            fp32_bytes=fp32_bytes,
        )

    def _keep_owner_error(self, shard: int, offset: int, stride: int, left: torch.Tensor) -> None:
        """A committed shard's owner error: ``left`` (what its result did not carry) on the support,
        the buffer as it was elsewhere (entries off the support were not in this round's mean)."""
        size = self.layout.size(shard)
        if left.numel() == size:  # the support is the whole shard (an exact codec): nothing else is kept
            if bool(left.any()):
                self._owner_error[shard] = left
            else:
                self._owner_error.pop(shard, None)
            return
        error = self._owner_error.get(shard)
        if error is None:
            if not bool(left.any()):
                return
            error = self._owner_error[shard] = torch.zeros(size)
        error[offset::stride] = left

    def _fold_moved_errors(
        self, roster: pb.Roster, delta: torch.Tensor, spans: Sequence[Span], my_shards: set[int]
    ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """Move owner-side error of shards this member no longer owns into its own residual.

        The owner error e of a shard is averaged mass that x' has not received yet. When membership
        changes and the shard gets another owner, this member adds e / share (its share of the mean)
        to its delta now and to x_i afterwards (``RoundOutcome.folds``): the new owner's mean then
        carries e, and whatever compression leaves of it stays in x_i - x' like any unsent work. So
        ``x' + sum_i share_i (x_i - x') + sum(owner errors)`` is conserved; only an owner that leaves
        the swarm takes its error with it (at most one round's compression error of its shards).
        ``delta`` holds the round's supports (``spans``); the folds are dense per shard.
        """
        moved = sorted(shard for shard in self._owner_error if shard not in my_shards)
        if not moved:
            return delta, []
        weights = {bytes(m.peer_id): m.weight for m in roster.members}
        share = weights[self.me] / sum(weights.values())
        delta = delta.clone()
        per_shard = delta.split([span.count for span in spans])  # views: adding to them adds to delta
        folds = []
        for shard in moved:
            error = self._owner_error.pop(shard)
            start, _ = self.layout.bounds(shard)
            values = error / share
            span = spans[shard]
            on_support = values[span.first - start : span.stop - start : span.stride]
            per_shard[shard].add_(on_support.to(delta.device))
            folds.append((start, values))
        logger.info(
            "round %d: moved owner error of %d shards into this member's residual", roster.round, len(folds)
        )
        return delta, folds

    async def _send_receipt(
        self,
        receipt: pb.Receipt,
        roster: pb.Roster,
        conductor_stream: FramedStream | None,
        gathering: _Gathering | None,
        roster_time: float,
    ) -> pb.Commit | None:
        margin = self._margin(roster)
        commit_deadline = roster_time + roster.deadline_s + 3 * margin
        if gathering is not None:  # we conduct this round
            future = gathering.receipts.get(self.me)
            if future is not None and not future.done():
                future.set_result(receipt)
            try:
                return await asyncio.wait_for(
                    asyncio.shield(gathering.commit), timeout=max(0.1, commit_deadline - time.monotonic())
                )
            except TimeoutError:
                return None
        assert conductor_stream is not None
        try:
            async with asyncio.timeout_at(_loop_time(commit_deadline)):
                await conductor_stream.send(pb.Frame(receipt=receipt))
                frame = await conductor_stream.expect("commit")
        except (TimeoutError, WireError, ConnectionError) as e:
            logger.warning("round %d: lost the conductor before the commit: %s", roster.round, e)
            return None
        if frame.commit.group_id != roster.group_id:
            return None
        return frame.commit

    async def _exchange_with_owner(
        self,
        owner: bytes,
        roster: pb.Roster,
        parts: list[pb.ShardPart],
        results: dict[int, tuple[pb.ShardResult, torch.Tensor]],
        deadline: float,
    ) -> None:
        expected = {p.shard for p in parts}
        stream: FramedStream | None = None
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                stream = await self.host.open_stream(
                    owner,
                    _protocol(self.run_id, "shard"),
                    timeout_s=self.timing.connect_timeout_s,
                    max_frame_bytes=self.shard_frame_bytes,
                    counter=self.round_traffic,
                )
                for part in parts:
                    await stream.send(pb.Frame(part=part))
                    self._on_send("part")
                while expected:
                    frame = await stream.expect("result", "reject")
                    if frame.WhichOneof("body") == "reject":
                        logger.warning("owner %s rejected our parts: %s", _short(owner), frame.reject.reason)
                        return
                    result = frame.result
                    decoded = self._decode_result(result, roster) if result.shard in expected else None
                    if decoded is None:
                        self.rejections += 1
                        logger.warning(
                            "dropping an invalid result for shard %d from %s", result.shard, _short(owner)
                        )
                        return
                    expected.discard(result.shard)
                    if roster.round == self.lose_results_round and owner == max(
                        bytes(m.peer_id) for m in roster.members if bytes(m.peer_id) != self.me
                    ):
                        continue  # the test hook: as if this result never arrived
                    results[result.shard] = (result, decoded)
        except (TimeoutError, WireError, ConnectionError) as e:
            logger.info("lost owner %s with %d shard results missing: %s", _short(owner), len(expected), e)
        except Exception as e:  # p2pd refused the stream (the owner is gone)
            logger.info("owner %s unreachable: %s", _short(owner), e)
        finally:
            if stream is not None:
                stream.close()

    def _decode_result(self, result: pb.ShardResult, roster: pb.Roster) -> torch.Tensor | None:
        """The aggregate of a result, decoded exactly as it will be applied; None if it is invalid."""
        codec = self.codec_for(roster.round)
        if result.group_id != roster.group_id or result.codec != codec.name:
            return None
        if not 0 <= result.shard < self.layout.num_shards:
            return None
        members = {bytes(m.peer_id) for m in roster.members}
        included = [bytes(p) for p in result.included]
        if not included or not set(included) <= members:
            return None
        start, end = self.layout.bounds(result.shard)
        try:
            return codec.decode_support(
                bytes(result.payload), end - start, CodecContext(round=roster.round, shard=result.shard)
            )
        except CodecError:
            return None

    async def _collect_local(
        self, group: _OwnerGroup, results: dict[int, tuple[pb.ShardResult, torch.Tensor]], deadline: float
    ) -> None:
        for shard in group.shards:
            try:
                result = await asyncio.wait_for(
                    asyncio.shield(group.results[shard]), timeout=max(0.05, deadline - time.monotonic())
                )
            except TimeoutError:
                return
            if result is not None:
                decoded = self._decode_result(result, group.roster)
                if decoded is not None:
                    results[shard] = (result, decoded)

    # ------------------------------------------------------------------ owner side

    def _accept_part(self, group: _OwnerGroup, peer: bytes, part: pb.ShardPart) -> None:
        shard = part.shard
        if shard not in group.parts or peer in group.parts[shard] or peer in group.failed[shard]:
            raise WireError(f"unexpected part for shard {shard}")
        try:
            codec = self.codec_for(group.roster.round)
            if part.codec != codec.name:
                raise ContributionError(f"part uses codec {part.codec!r}, this round uses {codec.name!r}")
            start, end = group.layout.bounds(shard)
            ctx = CodecContext(round=group.roster.round, shard=shard)
            values = codec.decode_support(bytes(part.payload), end - start, ctx)
            weight = group.weights[peer]
            offset, stride = codec.support(end - start, ctx)
            check_contribution(values, weight, len(range(offset, end - start, stride)))
        except (CodecError, ContributionError) as e:
            self.rejections += 1
            group.failed[shard].add(peer)
            self._exclude(group, peer, shard, str(e))
        else:
            group.parts[shard][peer] = (weight, values)
        group.arrived.set()

    def _exclude(self, group: _OwnerGroup, peer: bytes, shard: int, reason: str, ban: bool = True) -> None:
        """Count an excluded part and ban its sender (its later parts and joins are refused)."""
        self.excluded_parts += 1
        banned = ban and not self.bans.banned(peer)
        if ban:
            self.bans.ban(peer, self.defence.ban_s)
        logger.warning(
            "round %d: excluded %s from shard %d: %s%s",
            group.roster.round,
            _short(peer),
            shard,
            reason,
            f"; banned for {self.defence.ban_s:.0f} s" if banned and self.defence.ban_s else "",
        )

    def _exclude_sender(self, group: _OwnerGroup, peer: bytes, reason: str, ban: bool = True) -> None:
        """None of the peer's remaining parts will come (its stream broke or it is banned): do not
        wait for them. ``ban``: it broke the protocol, not merely its connection."""
        pending = [s for s in group.shards if peer not in group.parts[s] and peer not in group.failed[s]]
        for shard in pending:
            group.failed[shard].add(peer)
        if pending:
            self._exclude(group, peer, pending[0], reason, ban=ban)
        group.arrived.set()

    def _aggregate(self, group: _OwnerGroup, shard: int) -> torch.Tensor | None:
        """The shard's aggregate over its valid parts, outliers excluded first; None without parts."""
        contributions = group.parts[shard]
        for peer, reason in find_outliers(contributions, self.defence.outlier_factor).items():
            del contributions[peer]
            group.failed[shard].add(peer)
            self._exclude(group, peer, shard, reason)
        if not contributions:
            return None
        if self.defence.aggregation == "centered-clip":
            return centered_clip(contributions, self.defence.clip_factor, self.defence.clip_iterations)
        return weighted_mean(contributions)

    async def _finish_owned_shards(self, group: _OwnerGroup) -> None:
        try:
            while not group.complete() and time.monotonic() < group.deadline:
                group.arrived.clear()
                try:
                    await asyncio.wait_for(
                        group.arrived.wait(), timeout=max(0.01, group.deadline - time.monotonic())
                    )
                except TimeoutError:
                    break
            codec = self.codec_for(group.roster.round)
            for shard in group.shards:
                aggregate = self._aggregate(group, shard)
                if aggregate is None:
                    continue
                contributions = group.parts[shard]
                start, end = group.layout.bounds(shard)
                ctx = CodecContext(round=group.roster.round, shard=shard)
                # Parts and their mean live on the support; so does all the error feedback can change.
                offset, stride = codec.support(end - start, ctx)
                error = self._owner_error.get(shard)
                corrected = apply_error_feedback(aggregate, None if error is None else error[offset::stride])
                payload = codec.encode_support(corrected, end - start, ctx)
                left = corrected - codec.decode_support(payload, end - start, ctx)
                group.pending_error[shard] = (offset, stride, left)
                group.results[shard].set_result(
                    pb.ShardResult(
                        group_id=group.roster.group_id,
                        shard=shard,
                        included=sorted(contributions),
                        codec=codec.name,
                        payload=payload,
                    )
                )
        finally:
            group.resolve_missing()  # never leave a member's stream waiting on a result that will not come
            for contributions in group.parts.values():
                contributions.clear()

    async def _wait_owner_group(self, group_id: bytes, timeout_s: float) -> _OwnerGroup | None:
        deadline = time.monotonic() + timeout_s
        while group_id not in self._owner_groups and time.monotonic() < deadline:
            self._groups_changed.clear()
            try:
                await asyncio.wait_for(
                    self._groups_changed.wait(), timeout=max(0.01, deadline - time.monotonic())
                )
            except TimeoutError:
                break
        return self._owner_groups.get(group_id)

    async def _forget_group(self, group_id: bytes, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._owner_groups.pop(group_id, None)

    async def _handle_shard(self, peer: bytes, stream: FramedStream) -> None:
        try:
            first = await asyncio.wait_for(stream.expect("part"), timeout=self.timing.connect_timeout_s)
        except StreamClosed:
            raise
        except WireError as e:  # oversized or malformed before we know its round: every round it is in
            self.rejections += 1
            self.bans.ban(peer, self.defence.ban_s)
            for owned in list(self._owner_groups.values()):
                if peer in owned.weights:
                    self._exclude_sender(owned, peer, str(e))
            raise
        group_id = bytes(first.part.group_id)
        group = await self._wait_owner_group(group_id, timeout_s=self.timing.join_timeout_s)
        if group is None or peer not in group.weights:
            self.rejections += 1
            reason = "unknown round" if group is None else "not a member of this round"
            logger.warning("rejected shard parts from %s: %s", _short(peer), reason)
            await stream.send(pb.Frame(reject=pb.Reject(reason=reason)))
            return
        if self.bans.banned(peer):
            self.rejections += 1
            self._exclude_sender(group, peer, "banned", ban=False)
            await stream.send(pb.Frame(reject=pb.Reject(reason="banned for an invalid or outlying part")))
            return
        margin = self._margin(group.roster)
        async with asyncio.timeout_at(_loop_time(group.deadline + 2 * margin)):
            frame: pb.Frame | None = first
            for _ in group.shards:
                try:
                    if frame is None:
                        frame = await stream.expect("part")
                    if frame.part.group_id != group_id:
                        raise WireError("parts of two rounds on one stream")
                except StreamClosed as e:  # it left or its connection broke: not its fault
                    self._exclude_sender(group, peer, str(e), ban=False)
                    raise
                except WireError as e:  # oversized or malformed: the rest of its parts cannot come
                    self.rejections += 1
                    self._exclude_sender(group, peer, str(e))
                    raise
                self._accept_part(group, peer, frame.part)
                frame = None
            for shard in group.shards:
                result = await asyncio.shield(group.results[shard])
                if result is None:
                    continue
                await stream.send(pb.Frame(result=result))
                self._on_send("result")

    # ------------------------------------------------------------------ state transfer

    async def _wait_for_round(self, round_id: int) -> None:
        """A repairing member asks for the round being committed now: wait (bounded) for it."""
        if round_id > self.copy.round:
            with contextlib.suppress(TimeoutError):
                async with self._copy_advanced:
                    await asyncio.wait_for(
                        self._copy_advanced.wait_for(lambda: self.copy.round >= round_id),
                        timeout=min(self.timing.max_transfer_s, 4 * self._transfer_deadline_s()),
                    )

    async def _handle_state(self, peer: bytes, stream: FramedStream) -> None:
        frame = await asyncio.wait_for(
            stream.expect("state_request", "journal_request"), timeout=self.timing.connect_timeout_s
        )
        request = frame.state_request if frame.HasField("state_request") else frame.journal_request
        if request.run_id != self.run_id:
            await stream.send(pb.Frame(reject=pb.Reject(reason=f"this node trains run {self.run_id!r}")))
            return
        await self._wait_for_round(request.min_round)
        await self.settled()
        await self.copy.digest_async()
        if frame.HasField("journal_request"):
            await self._send_journal(frame.journal_request.after_round, stream)
            return
        if self._state_slots.locked():
            logger.info("state request from %s waits for a free slot", _short(peer))
        async with self._state_slots, asyncio.timeout(STATE_TRANSFER_TIMEOUT_S):
            # Snapshot in one synchronous step: x' only changes on this event loop.
            data = self.copy.values.numpy().tobytes()
            header = pb.StateHeader(
                round=self.copy.round,
                global_step=self.copy.global_step,
                digest=self.copy.digest,
                num_elements=self.copy.values.numel(),
                swarm_samples=self.copy.swarm_samples,
            )
            await stream.send(pb.Frame(state_header=header))
            for offset in range(0, len(data), STATE_CHUNK_BYTES):
                chunk = pb.StateChunk(offset=offset, data=data[offset : offset + STATE_CHUNK_BYTES])
                await stream.send(pb.Frame(state_chunk=chunk))
            await stream.send(pb.Frame(state_end=pb.StateEnd()))

    async def _send_journal(self, after_round: int, stream: FramedStream) -> None:
        # Snapshot in one synchronous step (the journal only changes on this event loop).
        entries = self.journal.after(after_round)
        current = self.copy.round
        if entries is None or (current > after_round and (not entries or entries[-1].round != current)):
            held = f"{self.journal.first_round}..{self.journal.last_round}" if len(self.journal) else "none"
            await stream.send(
                pb.Frame(reject=pb.Reject(reason=f"journal holds rounds {held}, x' is at round {current}"))
            )
            return
        async with self._state_slots, asyncio.timeout(STATE_TRANSFER_TIMEOUT_S):
            for entry in entries:
                for shard, payload in entry.parts:
                    await stream.send(
                        pb.Frame(journal_part=pb.JournalPart(round=entry.round, shard=shard, payload=payload))
                    )
                journal_round = pb.JournalRound(
                    round=entry.round,
                    global_step_increment=entry.global_step_increment,
                    samples=entry.samples,
                    digest=entry.digest,
                )
                await stream.send(pb.Frame(journal_round=journal_round))
            await stream.send(
                pb.Frame(journal_end=pb.JournalEnd(round=entries[-1].round if entries else after_round))
            )


STATE_TRANSFER_TIMEOUT_S = 600.0
MAX_JOURNAL_BYTES = 1 << 30
"""A member's round journal holds at most this much (or the size of x', if smaller)."""


def _loop_time(monotonic_deadline: float) -> float:
    """``time.monotonic()`` deadline -> the running loop's clock (they may differ)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed", exc_info=task.exception())


async def fetch_state(
    host: SwarmHost,
    peer: bytes,
    *,
    run_id: str,
    num_elements: int,
    min_round: int = 0,
    connect_timeout_s: float,
    timeout_s: float,
) -> tuple[pb.StateHeader, torch.Tensor]:
    """Download x' from ``peer`` (at ``min_round`` or later if it gets there in time) and verify it."""
    stream = await host.open_stream(
        peer, _protocol(run_id, "state"), timeout_s=connect_timeout_s, max_frame_bytes=STATE_FRAME_BYTES
    )
    try:
        async with asyncio.timeout(timeout_s):
            await stream.send(pb.Frame(state_request=pb.StateRequest(run_id=run_id, min_round=min_round)))
            frame = await stream.expect("state_header", "reject")
            if frame.WhichOneof("body") == "reject":
                raise WireError(f"peer refused the state transfer: {frame.reject.reason}")
            header = frame.state_header
            if header.num_elements != num_elements:
                raise WireError(
                    f"peer's x' has {header.num_elements} elements, this model has {num_elements}"
                )
            buffer = bytearray(num_elements * 4)
            received = 0
            while True:
                frame = await stream.expect("state_chunk", "state_end")
                if frame.WhichOneof("body") == "state_end":
                    break
                chunk = frame.state_chunk
                if chunk.offset != received or received + len(chunk.data) > len(buffer):
                    raise WireError("state chunk out of order or past the end")
                buffer[received : received + len(chunk.data)] = chunk.data
                received += len(chunk.data)
            if received != len(buffer):
                raise WireError(f"state transfer ended after {received} of {len(buffer)} bytes")
    finally:
        stream.close()
    values = torch.frombuffer(buffer, dtype=torch.float32).clone()
    if digest_of(values) != header.digest:
        raise WireError("downloaded x' does not match the digest its provider announced")
    return header, values


async def fetch_journal(
    host: SwarmHost,
    peer: bytes,
    *,
    run_id: str,
    after_round: int,
    min_round: int = 0,
    num_shards: int,
    max_part_bytes: int,
    max_total_bytes: int,
    connect_timeout_s: float,
    timeout_s: float,
) -> list[JournalEntry]:
    """The rounds ``peer`` committed after ``after_round`` (checked for shape, not yet for digests).

    Raises WireError when the peer refuses (its journal does not reach back) or sends anything
    malformed: rounds out of order, shards out of range or repeated, more than ``max_total_bytes``.
    """
    stream = await host.open_stream(
        peer, _protocol(run_id, "state"), timeout_s=connect_timeout_s, max_frame_bytes=max_part_bytes + 4096
    )
    entries: list[JournalEntry] = []
    try:
        async with asyncio.timeout(timeout_s):
            request = pb.JournalRequest(run_id=run_id, after_round=after_round, min_round=min_round)
            await stream.send(pb.Frame(journal_request=request))
            parts: list[tuple[int, bytes]] = []
            total = 0
            expected = after_round + 1
            while True:
                frame = await stream.expect("journal_part", "journal_round", "journal_end", "reject")
                kind = frame.WhichOneof("body")
                if kind == "reject":
                    raise WireError(f"peer has no journal for us: {frame.reject.reason}")
                if kind == "journal_end":
                    if parts or frame.journal_end.round != expected - 1:
                        raise WireError("journal ended in the middle of a round")
                    break
                if kind == "journal_part":
                    part = frame.journal_part
                    if part.round != expected or not 0 <= part.shard < num_shards:
                        raise WireError(
                            f"journal part for round {part.round}, shard {part.shard} is out of place"
                        )
                    if parts and part.shard <= parts[-1][0]:
                        raise WireError("journal parts are not in shard order")
                    total += len(part.payload)
                    if total > max_total_bytes:
                        raise WireError(f"journal exceeds {max_total_bytes} bytes")
                    parts.append((part.shard, bytes(part.payload)))
                    continue
                closing = frame.journal_round
                if closing.round != expected or len(closing.digest) != 32:
                    raise WireError(f"journal round {closing.round} is out of place or has a bad digest")
                entries.append(
                    JournalEntry(
                        round=closing.round,
                        global_step_increment=closing.global_step_increment,
                        samples=closing.samples,
                        parts=tuple(parts),
                        digest=bytes(closing.digest),
                    )
                )
                parts, expected = [], expected + 1
    finally:
        stream.close()
    return entries
