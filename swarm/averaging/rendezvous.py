"""The member's rendezvous: find the conductor, ask it for a roster, check the roster it gets.

The conductor is the live member that ranks first (``membership.conductor_rank``). A member that
ranks first itself conducts (``conductor``); otherwise it joins: it sends a JoinRequest on a
rendezvous stream and waits for a roster, a redirect to another conductor, or a busy reply. A
busy or unreachable candidate is passed over for a while, then tried again.
"""

from __future__ import annotations

import asyncio
import logging

from swarm.averaging.conductor import Conductor
from swarm.averaging.context import (
    CONTROL_FRAME_BYTES,
    MAX_JOIN_WEIGHT,
    MIN_WAIT_S,
    RoundServices,
    protocol_name,
)
from swarm.averaging.gathering import Gathering
from swarm.averaging.membership import Membership, conductor_rank
from swarm.averaging.outcome import Contribution
from swarm.peer_names import short_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream, WireError

logger = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.1
"""Pause before asking again after a conductor was busy or unreachable: the member list may have
changed meanwhile, and a tight loop would flood the DHT."""
MAX_REPAIR_SOURCES_ACCEPTED = 16
MAX_PEER_ID_BYTES = 64

Joined = tuple[pb.Roster, FramedStream | None, Gathering | None]
"""The roster, the stream to the conductor (None when we conduct), our gathering (when we do)."""


class Rendezvous:
    """This member's way into a roster."""

    def __init__(self, services: RoundServices, membership: Membership, conductor: Conductor):
        self.services, self.membership, self.conductor = services, membership, conductor

    def join_request(self, contribution: Contribution) -> pb.JoinRequest:
        s = self.services
        return pb.JoinRequest(
            run_id=s.run_id,
            round=s.copy.round,
            digest=s.copy.digest,
            samples=contribution.samples,
            local_steps=contribution.local_steps,
            weight=contribution.weight,
            credential=s.gate.own_credential,
            fresh=self.membership.fresh,
        )

    async def find_roster(self, request: pb.JoinRequest, started: float) -> Joined | None:
        """Conduct or join until a conductor answers with a roster; None at the join deadline."""
        s = self.services
        deadline = started + s.timing.join_timeout_s
        # Conductors that were busy or unreachable, passed over until the time given. Not for the
        # whole round: a peer busy repairing gathers a few seconds later, and everyone must then
        # come back to it (the lowest live peer), or two gatherings wait for each other until the
        # join timeout (with --min-group above half the swarm, neither can start).
        skip: dict[bytes, float] = {}
        target: bytes | None = None
        while s.clock.now() < min(deadline, s.cutoff.until):
            deadline = min(deadline, s.cutoff.until)
            now = s.clock.now()
            for peer in [p for p, until in skip.items() if until <= now]:
                del skip[peer]
            if target is None:
                live = await self.membership.live_peers()
                target = min((p for p in live if p not in skip or p == s.me), key=conductor_rank(live))
            attempt: Joined | bytes | None
            if target == s.me:
                attempt = await self.conductor.conduct(request, deadline, skip)
            else:
                # Joiners that reach us meanwhile are sent on to the same conductor.
                with self.conductor.joining(target):
                    attempt = await self._join(target, request, deadline)
            if isinstance(attempt, tuple):
                return attempt
            if isinstance(attempt, bytes):
                target = attempt if attempt not in skip else None
            else:  # busy, unreachable or gave up: pass it over for a while, re-read the DHT
                if target != s.me:
                    skip[target] = s.clock.now() + self.conductor.skip_s()
                target = None
                await asyncio.sleep(RETRY_PAUSE_S)
        return None

    def roster_problem(self, roster: pb.Roster) -> str | None:
        """Why a roster from a conductor (an untrusted peer) cannot be acted on, or None."""
        s = self.services
        members = [bytes(m.peer_id) for m in roster.members]
        if roster.num_shards != s.layout.num_shards:
            return f"{roster.num_shards} shards, the run uses {s.layout.num_shards}"
        if not members or members != sorted(set(members)):
            return "members are empty, unsorted or repeated"
        if (s.me in members) != roster.included:
            return "the roster's member list contradicts its included flag"
        if not (0 < roster.deadline_s <= 2 * s.timing.max_transfer_s):
            return f"deadline {roster.deadline_s} s is outside (0, {2 * s.timing.max_transfer_s}]"
        if any(not (0 < m.weight <= MAX_JOIN_WEIGHT) for m in roster.members):
            return "a member weight is out of range"
        if roster.included and (roster.round != s.copy.round + 1 or roster.base_digest != s.copy.digest):
            return "it includes us on a base other than our x'"
        if not roster.included and len(roster.repair_from) > MAX_REPAIR_SOURCES_ACCEPTED:
            return "too many repair sources"
        return None

    async def _join(
        self, conductor: bytes, request: pb.JoinRequest, deadline: float
    ) -> tuple[pb.Roster, FramedStream, None] | bytes | None:
        s = self.services
        try:
            stream = await s.host.open_stream(
                conductor,
                protocol_name(s.run_id, "rendezvous"),
                timeout_s=s.timing.connect_timeout_s,
                max_frame_bytes=CONTROL_FRAME_BYTES,
                counter=s.traffic,
            )
        # The boundary with the host's daemon (another process), whose refusals are untyped.
        except Exception as e:
            logger.info("conductor %s unreachable: %s", short_name(conductor), e)
            return None
        try:
            await asyncio.wait_for(stream.send(pb.Frame(join=request)), timeout=s.timing.connect_timeout_s)
            frame = await asyncio.wait_for(
                stream.expect("roster", "redirect", "busy"), timeout=max(MIN_WAIT_S, deadline - s.clock.now())
            )
        except (TimeoutError, WireError, ConnectionError) as e:
            logger.info("rendezvous with %s failed: %s", short_name(conductor), e)
            stream.close()
            return None
        kind = frame.WhichOneof("body")
        if kind == "roster":
            return frame.roster, stream, None
        stream.close()
        if kind == "redirect" and len(frame.redirect.conductor) <= MAX_PEER_ID_BYTES:
            return bytes(frame.redirect.conductor)
        return None
