"""The conductor: gathers join requests, fixes one roster on the majority's base, coordinates the commit.

Every member picks the same conductor (``membership.conductor_rank``). It holds each joiner's
rendezvous stream open until the roster is fixed, answers it with a roster (or a redirect, a busy
reply, a repair roster), then collects the joiner's receipt on the same stream and sends it the
commit: the shards a strict majority of receipts hold with the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator

from swarm.averaging.context import (
    COMMIT_MARGINS,
    MAX_JOIN_WEIGHT,
    MIN_WAIT_S,
    RECEIPTS_MARGINS,
    RoundServices,
    margin_s,
)
from swarm.averaging.gathering import Base, Gathering, agree_on_commit, make_roster
from swarm.averaging.membership import Membership, conductor_rank
from swarm.peer_names import short_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream, WireError

logger = logging.getLogger(__name__)

MAX_JOIN_SAMPLES = 1 << 40
MAX_JOIN_LOCAL_STEPS = 1 << 20
MAX_ROUND_LEAD = 1_000_000
"""A join request claiming a round this far past ours is a stranger's made-up number."""
GATHER_POLL_S = 0.25
"""The gathering re-reads the member list at least this often (a member may leave or turn up
without joining), besides waking on every join."""
GROUP_ID_BYTES = 16

Conducted = tuple[pb.Roster, None, Gathering]
"""Our own roster as the conductor (no stream to a conductor) and the gathering it came from."""


class Conductor:
    """This node's conductor role; ``gathering`` is the round attempt it conducts now, if any."""

    def __init__(self, services: RoundServices, membership: Membership):
        self.services, self.membership = services, membership
        self.gathering: Gathering | None = None
        self._gathering_open = asyncio.Event()
        self._joining = asyncio.Event()
        self._joining_target: bytes | None = None
        """The conductor this node is asking for a roster right now, if any."""

    @contextlib.contextmanager
    def joining(self, target: bytes) -> Iterator[None]:
        """While this node joins ``target``, joiners that reach it are sent on to ``target``."""
        self._joining_target = target
        self._joining.set()
        try:
            yield
        finally:
            self._joining_target = None
            self._joining.clear()

    def skip_s(self) -> float:
        """How long a busy or unreachable conductor is passed over: as long as a joiner waits for
        a conductor that is not gathering (``handle_join``)."""
        return 2 * self.services.timing.join_grace_s

    async def conduct(
        self, request: pb.JoinRequest, deadline: float, skip: dict[bytes, float]
    ) -> Conducted | bytes | None:
        """Gather a round as its conductor: our roster, a lower conductor to join, or None (no group)."""
        s, t = self.services, self.services.timing
        gathering = Gathering(request, s.me)
        self.gathering = gathering
        self._gathering_open.set()
        started = s.clock.now()
        try:
            while True:
                live = await self.membership.live_peers()
                rank = conductor_rank(live)
                now = s.clock.now()
                # One that ranks before us but joined our gathering chose us: sending it back to
                # itself would loop while our views of who is established differ.
                before = [
                    p
                    for p in live
                    if rank(p) < rank(s.me) and skip.get(p, 0.0) <= now and p not in gathering.requests
                ]
                if before:
                    target = min(before, key=rank)
                    self._close(gathering, pb.Frame(redirect=pb.Redirect(conductor=target)))
                    return target
                joined = set(gathering.requests)
                waited = s.clock.now() - started
                enough = len(joined) >= t.min_group
                # Newcomers alone do not start a round without the established members they see
                # live (one that was busy when they came): its x' may be a round ahead of theirs,
                # and two groups committing the same round would fork x'.
                grace = waited >= t.join_grace_s and not (
                    all(r.fresh for r in gathering.requests.values())
                    and any(not fresh for p, fresh in live.items() if p not in joined)
                )
                if enough and waited >= t.gather_s and (set(live) <= joined or grace):
                    base = gathering.majority_base()
                    if len(gathering.on_base(base)) >= t.min_group:
                        break
                    # Fewer than --min-group joiners share the majority's base: no round on it yet.
                    # The others are sent to repair from those that hold it (they come back on it);
                    # a conductor that must repair itself lets its joiners go.
                    mine = self._send_to_repair(gathering, base)
                    if mine is not None:
                        self._close(gathering, pb.Frame(busy=pb.Busy(reason="conductor repairing")))
                        return mine, None, gathering
                    continue
                logger.debug(
                    "gathering: %d joined %s, %d live %s, waited %.1fs",
                    len(joined),
                    sorted(short_name(p) for p in joined),
                    len(live),
                    sorted(short_name(p) for p in live),
                    waited,
                )
                if s.clock.now() >= min(deadline, s.cutoff.until):
                    self._close(gathering, pb.Frame(busy=pb.Busy(reason="not enough members")))
                    return None
                gathering.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gathering.changed.wait(), timeout=GATHER_POLL_S)
            gathering.closed = True
            self._gathering_open.clear()
            rosters = self._make_rosters(gathering, base)
            for peer, future in gathering.replies.items():
                if not future.done():
                    future.set_result(pb.Frame(roster=rosters[peer]))
            mine = rosters[s.me]
            s.background.spawn(self._coordinate_commit(gathering, mine))
            return mine, None, gathering
        finally:
            if self.gathering is gathering:
                self.gathering = None
                self._gathering_open.clear()

    def _close(self, gathering: Gathering, reply: pb.Frame) -> None:
        gathering.close(reply)
        self._gathering_open.clear()

    def _roster(self, base: Base, members: list[pb.Member], *, group_id: bytes, inside: bool) -> pb.Roster:
        s = self.services
        return make_roster(
            base,
            members,
            num_shards=s.layout.num_shards,
            group_id=group_id,
            inside=inside,
            deadline_s=s.transfer.deadline_s(),
        )

    def _send_to_repair(self, gathering: Gathering, base: Base) -> pb.Roster | None:
        """Answer every joiner off ``base`` with a repair roster and drop it; the conductor's own, if off it."""
        sources = gathering.on_base(base)
        roster = self._roster(
            base, gathering.members(sources), group_id=secrets.token_bytes(GROUP_ID_BYTES), inside=False
        )
        mine = None
        for peer in [p for p in gathering.requests if p not in sources]:
            if peer == self.services.me:
                mine = roster
                continue
            logger.info(
                "gathering: %s is on round %d, the majority on %d: it repairs first",
                short_name(peer),
                gathering.requests[peer].round,
                base[0],
            )
            reply = gathering.replies.pop(peer, None)
            if reply is not None and not reply.done():
                reply.set_result(pb.Frame(roster=roster))
            del gathering.requests[peer]
        gathering.changed.set()
        return mine

    def _make_rosters(self, gathering: Gathering, base: Base) -> dict[bytes, pb.Roster]:
        included = gathering.on_base(base)
        members = gathering.members(included)
        group_id = secrets.token_bytes(GROUP_ID_BYTES)
        rosters = {}
        for peer in gathering.requests:
            inside = peer in included
            rosters[peer] = self._roster(base, members, group_id=group_id, inside=inside)
            if inside:
                gathering.receipts[peer] = asyncio.get_running_loop().create_future()
        return rosters

    async def _coordinate_commit(self, gathering: Gathering, roster: pb.Roster) -> None:
        wait_s = roster.deadline_s + RECEIPTS_MARGINS * margin_s(roster)
        done, _ = await asyncio.wait(list(gathering.receipts.values()), timeout=wait_s)
        receipts = [f.result() for f in done if not f.cancelled() and f.exception() is None]
        commit, split = agree_on_commit(roster, receipts)
        if split:
            logger.warning(
                "round %d: owners sent different bytes to different members for shards %s",
                roster.round,
                split,
            )
        gathering.commit.set_result(commit)
        agreed = set(commit.shards)
        if any(not agreed <= set(receipt.shards) for receipt in receipts):
            # A member missed results the others got in time: its link needs a longer deadline
            # (else it repairs every round). The conductor sets the deadline, so it takes note.
            self.services.transfer.missed(roster.deadline_s)
        logger.info(
            "round %d: %d/%d receipts, committing %d/%d shards",
            roster.round,
            len(receipts),
            len(gathering.receipts),
            len(agreed),
            roster.num_shards,
        )

    def _join_problem(self, request: pb.JoinRequest) -> str | None:
        run_id = self.services.run_id
        if request.run_id != run_id:
            return f"this node trains run {run_id!r}"
        if len(request.digest) != 32:
            return "digest is not 32 bytes"
        if not (0 < request.weight <= MAX_JOIN_WEIGHT):
            return f"weight {request.weight} is outside (0, {MAX_JOIN_WEIGHT}]"
        if request.samples > MAX_JOIN_SAMPLES or request.local_steps > MAX_JOIN_LOCAL_STEPS:
            return "sample or step counts are implausibly large"
        if request.round > self.services.copy.round + MAX_ROUND_LEAD:
            return "round id is implausibly far ahead"
        return None

    async def handle_join(self, peer: bytes, stream: FramedStream) -> None:
        """Serve one joiner's rendezvous stream: admit it to a gathering, answer, then its receipt and commit."""
        s = self.services
        frame = await asyncio.wait_for(stream.expect("join"), timeout=s.timing.connect_timeout_s)
        request = frame.join
        problem = self._join_problem(request)
        if problem is None:
            problem = s.gate.problem(peer, bytes(request.credential))
        if problem is None and s.bans.banned(peer):
            problem = "banned for sending an invalid or outlying part"
        if problem is not None:
            if request.run_id == s.run_id:
                s.counters.rejections += 1
                logger.warning("rejected a join request from %s: %s", short_name(peer), problem)
            await stream.send(pb.Frame(busy=pb.Busy(reason=problem)))
            return
        gathering = await self._wait_for_gathering(peer, stream)
        if gathering is None:
            return
        answer = await self._enter(gathering, peer, request, stream)
        if answer is None:
            return
        await stream.send(answer)
        if answer.WhichOneof("body") != "roster" or not answer.roster.included:
            return
        await self._collect_receipt(gathering, peer, answer.roster, stream)

    async def _wait_for_gathering(self, peer: bytes, stream: FramedStream) -> Gathering | None:
        # Everyone picks the same conductor; one that is still training (or just closed a roster)
        # keeps the joiner waiting for its next gathering rather than splitting the group. A node
        # that is itself joining another conductor (one the joiner has not seen yet) redirects it.
        # Two members can each be joining the other: their views of who is established differ
        # for a moment (a stale replica of a heartbeat). The lower peer id conducts: the higher
        # sends the lower back to itself, the lower waits for its own gathering to open.
        clock, me = self.services.clock, self.services.me
        waited_until = clock.now() + self.skip_s()
        while (gathering := self.gathering) is None or gathering.closed:
            target = self._joining_target
            if target is not None and (target != peer or peer < me):
                logger.debug(
                    "redirecting %s to %s, the conductor we join", short_name(peer), short_name(target)
                )
                await stream.send(pb.Frame(redirect=pb.Redirect(conductor=target)))
                return None
            remaining = waited_until - clock.now()
            if remaining <= 0:
                await stream.send(pb.Frame(busy=pb.Busy(reason="not gathering a round")))
                return None
            waiters = {asyncio.ensure_future(self._gathering_open.wait())}
            if target is None:
                waiters.add(asyncio.ensure_future(self._joining.wait()))
            else:  # the event is set while we join (it would wake us at once): look again soon
                remaining = min(remaining, GATHER_POLL_S)
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return gathering

    async def _enter(
        self, gathering: Gathering, peer: bytes, request: pb.JoinRequest, stream: FramedStream
    ) -> pb.Frame | None:
        """Put the joiner in the gathering; its answer once the gathering closes, None if it left."""
        reply: asyncio.Future[pb.Frame] = asyncio.get_running_loop().create_future()
        logger.debug(
            "join request from %s enters the gathering (%d joined)",
            short_name(peer),
            len(gathering.requests) + 1,
        )
        gathering.requests[peer] = request
        gathering.replies[peer] = reply
        gathering.changed.set()
        # Watch the stream while waiting: a joiner that gives up (closes) must not enter the roster.
        gone = asyncio.ensure_future(stream.recv())
        try:
            await asyncio.wait(
                {reply, gone},
                timeout=self.services.timing.join_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
            await asyncio.wait({gone})  # let it finish cancelling: only one reader at a time
            if not reply.done() and not gathering.closed:
                gathering.requests.pop(peer, None)
                gathering.replies.pop(peer, None)
                gathering.changed.set()
        return reply.result() if reply.done() else None

    async def _collect_receipt(
        self, gathering: Gathering, peer: bytes, roster: pb.Roster, stream: FramedStream
    ) -> None:
        s = self.services
        margin = margin_s(roster)
        commit_ready = s.clock.now() + roster.deadline_s + COMMIT_MARGINS * margin
        try:
            receipt = await asyncio.wait_for(
                stream.expect("receipt"), timeout=roster.deadline_s + RECEIPTS_MARGINS * margin
            )
        except (TimeoutError, WireError, ConnectionError):
            logger.info("round %d: no receipt from %s", roster.round, short_name(peer))
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
            asyncio.shield(gathering.commit), timeout=max(MIN_WAIT_S, commit_ready - s.clock.now())
        )
        await asyncio.wait_for(stream.send(pb.Frame(commit=commit)), timeout=s.timing.connect_timeout_s)
