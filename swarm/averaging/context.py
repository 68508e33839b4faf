"""What the roles of a round share: the node's collaborators, the codec schedule and one round's context.

The roles (``conductor``, ``rendezvous``, ``exchange``, ``owner``, ``transfer``) are objects built
with a ``RoundServices`` (the node-wide collaborators: host, clock, counters, bans...) and handed a
``RoundContext`` (roster, owners, codec, deadlines) for each round they take part in.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from swarm.auth import Gate
from swarm.averaging.defence import BanList, Defence
from swarm.averaging.host import RoundHost
from swarm.averaging.shards import ShardLayout, Span, assign_owners, supports
from swarm.averaging.state import GlobalCopy
from swarm.averaging.timing import RoundTiming
from swarm.clock import Clock
from swarm.compression.codecs import Codec, Fp32Codec
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import ByteCounter

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "2"
"""2: every DHT record is a signed envelope (swarm.dht.envelope); nodes of version 1 wrote unsigned ones."""
CONTROL_FRAME_BYTES = 64 * 1024
"""Limit for rendezvous and state-request frames: they carry ids, digests and counters only."""
MAX_JOIN_WEIGHT = 1000.0
MIN_MARGIN_S = 1.0
"""Least slack past a roster's deadline for results, receipts and commits to cross the network."""
MARGIN_FRACTION = 0.5
"""The slack grows with the roster's deadline: a slow link is slow for the commit too."""
RESULTS_MARGINS = 1
"""A round's phases end so many margins (``margin_s``) past the owners' deadline for parts: members
wait for results until one margin past it,"""
RECEIPTS_MARGINS = 2
"""the conductor for receipts (and an owner serves a shard stream) until two,"""
COMMIT_MARGINS = 3
"""members for the commit until three,"""
FORGET_MARGINS = 4
"""and an owner forgets the round after four, when no member can still be sending to it."""
MIN_WAIT_S = 0.1
"""Least time given to a reply already due (a roster, a commit): one that is in flight still lands."""


def protocol_name(run_id: str, name: str) -> str:
    return f"/swarm/{run_id}/{name}/{PROTOCOL_VERSION}"


def margin_s(roster: pb.Roster) -> float:
    return max(MIN_MARGIN_S, MARGIN_FRACTION * roster.deadline_s)


@dataclass
class Counters:
    """What this node refused, read by the node's metrics."""

    rejections: int = 0
    """Join requests, rosters, streams, parts and results refused as invalid."""
    excluded_parts: int = 0
    """Parts this node excluded as an owner (malformed, NaN/Inf, outlier, banned sender)."""


class Background:
    """Tasks that outlive the call that started them (commit coordination, owners' reductions)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed", exc_info=task.exception())


class CodecSchedule:
    """Which codec each round uses, and the supports it changes."""

    def __init__(self, codec: Codec, layout: ShardLayout, *, warmup_rounds: int, exact_every: int):
        self.codec, self.layout = codec, layout
        self.warmup_rounds, self.exact_every = warmup_rounds, exact_every
        self._exact = Fp32Codec()

    def codec_for(self, round_id: int) -> Codec:
        """The codec of round ``round_id``: exact fp32 during the run's warm-up rounds and on every
        ``exact_every``-th round (a flush of all residuals and owner errors), else the run's."""
        if round_id <= self.warmup_rounds or (self.exact_every and round_id % self.exact_every == 0):
            return self._exact
        return self.codec

    def supports(self, round_id: int) -> list[Span]:
        """Every shard's support in round ``round_id`` (``shards.supports`` of its codec)."""
        return supports(self.codec_for(round_id), self.layout, round_id)


class TransferDeadline:
    """The owners' deadline for parts that conductors put in rosters, adapted to measured rounds."""

    EMA_KEEP, EMA_NEW = 0.7, 0.3
    """Weights of the history and of the latest transfer in the transfer-time EMA."""
    NEAR_DEADLINE = 0.9
    """A transfer this close to its deadline may have waited for a missing part (see ``record``)."""

    def __init__(self, timing: RoundTiming):
        self.timing = timing
        self._ema_s: float | None = None

    def deadline_s(self) -> float:
        t = self.timing
        if self._ema_s is None:
            return t.min_transfer_s
        return min(t.max_transfer_s, max(t.min_transfer_s, t.transfer_factor * self._ema_s))

    def missed(self, deadline_s: float) -> None:
        """Results missing at the deadline: a slow link or a dead owner. Double the next deadline
        (up to the ceiling), so that a link slower than the floor still completes rounds; completed
        rounds bring it back down through the EMA."""
        t = self.timing
        self._ema_s = min(t.max_transfer_s, 2 * deadline_s) / t.transfer_factor

    def record(self, seconds: float, deadline_s: float, *, every_part: bool) -> None:
        # A transfer in which an owner waited for a missing part until the deadline measures the
        # deadline, not the network: feeding it back would ratchet the deadline up round after
        # round. One in which every result holds every member's part measures the network, however
        # close to the deadline it finished (ignoring those kept a floor deadline that one member's
        # slightly slower link missed in every round).
        if not every_part and seconds >= self.NEAR_DEADLINE * deadline_s:
            return
        ema = self._ema_s
        self._ema_s = seconds if ema is None else self.EMA_KEEP * ema + self.EMA_NEW * seconds


class Cutoff:
    """Set by ``Averager.hurry`` when the node stops: no rendezvous goes on past this instant."""

    def __init__(self) -> None:
        self.until = math.inf


@dataclass(kw_only=True)
class RoundServices:
    """The collaborators every role of one node's rounds shares."""

    host: RoundHost
    clock: Clock
    run_id: str
    copy: GlobalCopy
    layout: ShardLayout
    codecs: CodecSchedule
    timing: RoundTiming
    gate: Gate
    defence: Defence
    bans: BanList
    """Peers whose parts this node excluded as an owner: their joins and parts are refused."""
    counters: Counters = field(default_factory=Counters)
    traffic: ByteCounter = field(default_factory=ByteCounter)
    """Bytes of rendezvous and shard streams (not state transfers)."""
    background: Background = field(default_factory=Background)
    transfer: TransferDeadline
    cutoff: Cutoff = field(default_factory=Cutoff)
    shard_frame_bytes: int
    on_send: Callable[[str], None] = lambda kind: None

    @property
    def me(self) -> bytes:
        return self.host.peer_id


@dataclass(frozen=True)
class RoundContext:
    """One round as a member sees it once it holds the roster: who, which codec, which deadlines."""

    roster: pb.Roster
    members: list[bytes]
    owners: list[bytes]
    """The owner of each shard (rendezvous hashing over the members)."""
    codec: Codec
    started: float
    """When this member got the roster (the services' clock)."""
    margin_s: float

    @classmethod
    def of(cls, roster: pb.Roster, services: RoundServices) -> RoundContext:
        members = [bytes(m.peer_id) for m in roster.members]
        return cls(
            roster=roster,
            members=members,
            owners=assign_owners(services.run_id, services.layout.num_shards, members),
            codec=services.codecs.codec_for(roster.round),
            started=services.clock.now(),
            margin_s=margin_s(roster),
        )

    @property
    def round(self) -> int:
        return self.roster.round

    @property
    def group_id(self) -> bytes:
        return bytes(self.roster.group_id)

    @property
    def parts_deadline(self) -> float:
        """Owners reduce the parts that arrived by then."""
        return self.started + self.roster.deadline_s

    def phase_end(self, margins: int) -> float:
        """The end of a later phase of the round (``RESULTS_MARGINS``, ``COMMIT_MARGINS``...)."""
        return self.parts_deadline + margins * self.margin_s
