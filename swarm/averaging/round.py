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

Where each role lives (all under ``swarm.averaging``):
- ``outcome``: Contribution, Status, RoundOutcome, ReplayError.
- ``context``: the collaborators the roles share (``RoundServices``) and one round's ``RoundContext``.
- ``membership``: the member list in the DHT; ``conductor`` with ``gathering``: rosters and commit.
- ``rendezvous``: the member's way to a roster; ``exchange``: its parts, results, receipt, commit.
- ``owner`` with ``owner_errors``: the shard owner's reduction, defence and error feedback.
- ``transfer``: serving and fetching x' and the journal; ``replay``: applying a journal.
- ``faults``: test fault injection. ``swarm.clock``: the clock every deadline is read on.
This module composes them into the node's ``Averager``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import torch

from swarm.auth import Gate
from swarm.averaging.conductor import Conductor
from swarm.averaging.context import (
    CONTROL_FRAME_BYTES,
    CodecSchedule,
    RoundServices,
    TransferDeadline,
    protocol_name,
)
from swarm.averaging.defence import BanList, Defence
from swarm.averaging.exchange import MemberExchange
from swarm.averaging.faults import Faults
from swarm.averaging.host import RoundHost
from swarm.averaging.journal import JournalEntry, RoundJournal
from swarm.averaging.membership import Membership
from swarm.averaging.outcome import Contribution, RoundOutcome, Status
from swarm.averaging.owner import ShardOwner
from swarm.averaging.owner_errors import OwnerErrors
from swarm.averaging.rendezvous import Rendezvous
from swarm.averaging.replay import replay
from swarm.averaging.shards import ShardLayout, Span
from swarm.averaging.state import GlobalCopy
from swarm.averaging.timing import RoundTiming
from swarm.averaging.transfer import StateServer
from swarm.clock import Clock, SystemClock
from swarm.compression.codecs import Codec, all_finite
from swarm.dht.records import MemberRecord
from swarm.wire.asyncio_streams import ByteCounter

logger = logging.getLogger(__name__)

MAX_JOURNAL_BYTES = 1 << 30
"""A member's round journal holds at most this much (or the size of x', if smaller)."""
PART_FRAME_OVERHEAD_BYTES = 4096
"""Room for a part's own fields next to its payload."""


class Averager:
    """Runs rounds for one node over its host; serves rendezvous, shard and state streams.

    Composes the roles of the round (see the module docstring) around one ``RoundServices``.
    ``clock`` is the event loop's by default; ``faults`` is for tests and benchmarks only.
    """

    def __init__(
        self,
        host: RoundHost,
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
        clock: Clock | None = None,
        faults: Faults | None = None,
    ):
        self.host, self.run_id, self.codec, self.copy, self.timing = host, run_id, codec, global_copy, timing
        self.layout = ShardLayout(num_elements=global_copy.values.numel(), num_shards=num_shards)
        self.codecs = CodecSchedule(codec, self.layout, warmup_rounds=warmup_rounds, exact_every=exact_every)
        # A part is at most one shard in fp32 (the widest codec) plus the frame's own fields.
        largest_shard = max(self.layout.size(s) for s in range(self.layout.num_shards))
        self.shard_frame_bytes = 4 * largest_shard + PART_FRAME_OVERHEAD_BYTES
        self.defence = defence or Defence()
        self.gate = gate or Gate(run_id=run_id)
        """Who may take part: in a closed run, joins and heartbeats need a credential."""
        clock = clock or SystemClock()
        self.bans = BanList(clock=clock.now)
        """Peers whose parts this node excluded as an owner: their joins and parts are refused."""
        self.services = RoundServices(
            host=host,
            clock=clock,
            run_id=run_id,
            copy=global_copy,
            layout=self.layout,
            codecs=self.codecs,
            timing=timing,
            gate=self.gate,
            defence=self.defence,
            bans=self.bans,
            transfer=TransferDeadline(timing),
            shard_frame_bytes=self.shard_frame_bytes,
            on_send=on_send or (lambda kind: None),
        )
        self.round_traffic: ByteCounter = self.services.traffic
        """Bytes of rendezvous and shard streams (not state transfers)."""
        self.journal = RoundJournal(min(4 * self.layout.num_elements, MAX_JOURNAL_BYTES))
        """Rounds committed since x' was last replaced (see ``record_committed``), for joiners."""
        self._errors = OwnerErrors(self.layout)
        self.membership = Membership(self.services)
        self.conductor = Conductor(self.services, self.membership)
        self.rendezvous = Rendezvous(self.services, self.membership, self.conductor)
        self.owner = ShardOwner(self.services, self._errors)
        self.faults = faults or Faults()
        """Test fault injection (tests and the byzantine benchmark; empty on an honest node)."""
        self.exchange = MemberExchange(self.services, self.owner, self._errors, self.faults)
        self.state_server = StateServer(self.services, self.journal, self.settled)
        self._settling: asyncio.Task[bytes] | None = None
        """Hashing x' after the node applied a round (``applied``); the next round waits for it."""

    # ------------------------------------------------------------------ state the node reads and sets

    @property
    def me(self) -> bytes:
        return self.host.peer_id

    @property
    def fresh(self) -> bool:
        """This node took x' from peers when it joined and has committed no round since (the node
        sets it before catching up; the first round it commits clears it)."""
        return self.membership.fresh

    @fresh.setter
    def fresh(self, value: bool) -> None:
        self.membership.fresh = value

    @property
    def rejections(self) -> int:
        return self.services.counters.rejections

    @property
    def excluded_parts(self) -> int:
        """Parts this node excluded as an owner (malformed, NaN/Inf, outlier, banned sender)."""
        return self.services.counters.excluded_parts

    def owner_errors(self) -> dict[int, torch.Tensor]:
        """Owner-side error buffers by shard (for the node's resume state)."""
        return self._errors.snapshot()

    def restore_owner_errors(self, errors: dict[int, torch.Tensor]) -> None:
        """Take back saved buffers; those of shards that moved meanwhile fold at the next round."""
        self._errors.restore(errors)

    def codec_for(self, round_id: int) -> Codec:
        """The codec of round ``round_id`` (``CodecSchedule.codec_for``)."""
        return self.codecs.codec_for(round_id)

    def supports(self, round_id: int) -> list[Span]:
        """Every shard's support in round ``round_id`` (``shards.supports`` of its codec)."""
        return self.codecs.supports(round_id)

    async def live_members(self) -> dict[bytes, MemberRecord]:
        return await self.membership.live_members()

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        await self.host.add_handler(
            protocol_name(self.run_id, "rendezvous"),
            self.conductor.handle_join,
            max_frame_bytes=CONTROL_FRAME_BYTES,
            counter=self.round_traffic,
        )
        await self.host.add_handler(
            protocol_name(self.run_id, "shard"),
            self.owner.handle_shard,
            max_frame_bytes=self.shard_frame_bytes,
            counter=self.round_traffic,
        )
        await self.host.add_handler(
            protocol_name(self.run_id, "state"),
            self.state_server.handle_state,
            max_frame_bytes=CONTROL_FRAME_BYTES,
        )
        await self.host.add_handler(
            protocol_name(self.run_id, "presence"),
            self.membership.handle_presence,
            max_frame_bytes=CONTROL_FRAME_BYTES,
        )

    def hurry(self, grace_s: float) -> None:
        """This node is stopping: a round still forming gets ``grace_s`` more, then gives up
        (instead of waiting up to ``join_timeout_s`` for a group that may never come)."""
        cutoff = self.services.cutoff
        cutoff.until = min(cutoff.until, self.services.clock.now() + grace_s)

    async def announce_leaving(self) -> None:
        """Mark our member record as leaving, so that conductors stop waiting for us."""
        await self.membership.announce_leaving()

    async def shutdown(self) -> None:
        await self.services.background.shutdown()

    # ------------------------------------------------------------------ rounds

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

    def _check(self, contribution: Contribution) -> None:
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

    async def _run_round(self, contribution: Contribution) -> RoundOutcome:
        self._check(contribution)
        await self.settled()
        await self.copy.digest_async()  # hashed on the worker thread while the node trained
        clock = self.services.clock
        started = clock.now()
        joined = await self.rendezvous.find_roster(self.rendezvous.join_request(contribution), started)
        if joined is None:
            return RoundOutcome(status=Status.NO_GROUP, duration_s=clock.now() - started)
        roster, conductor_stream, gathering = joined
        problem = self.rendezvous.roster_problem(roster)
        if problem is not None or not roster.included:
            if conductor_stream is not None:
                conductor_stream.close()
            if problem is not None:
                self.services.counters.rejections += 1
                logger.warning("refusing a roster for round %d: %s", roster.round, problem)
                return RoundOutcome(status=Status.ABORTED, duration_s=clock.now() - started)
            return RoundOutcome(
                status=Status.REPAIR,
                round=roster.round,
                repair_from=[bytes(p) for p in roster.repair_from if bytes(p) != self.me],
                duration_s=clock.now() - started,
            )
        result = await self.exchange.reduce_and_commit(roster, contribution, conductor_stream, gathering)
        result.duration_s = clock.now() - started
        return result

    # ------------------------------------------------------------------ after a round

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
            self.membership.committed_with(outcome.members)
        await self.state_server.advanced()
        return digest

    async def settled(self) -> None:
        """Wait until the last ``applied`` is done (its digest known, its round journaled)."""
        if self._settling is not None and not self._settling.done():
            await asyncio.shield(self._settling)

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
        """Apply journaled rounds to ``target`` as their members did (``replay.replay``); raises ReplayError."""
        replay(entries, target, self.codecs)
