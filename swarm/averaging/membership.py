"""Who is in the run right now: members' heartbeats in the DHT, read for rendezvous, written on leaving.

Records cannot be forged (``swarm.dht.envelope``), but they can be withheld: DHT ids are free to
choose, so a peer can place itself nearest the members key and answer without some heartbeats (an
eclipse). A member that then saw itself alone would conduct alone and fork x'. So the members of the
last round this node committed are not dropped on the DHT's word alone: those missing from it are
asked directly (a stream on the run's ``presence`` protocol opens only to a live member of the run),
and those that answer stay live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from swarm.averaging.context import CONTROL_FRAME_BYTES, RoundServices, protocol_name
from swarm.dht.records import MemberRecord, members_key
from swarm.peer_names import peer_from_name, short_name
from swarm.wire.asyncio_streams import FramedStream

logger = logging.getLogger(__name__)

LEAVING_TTL_EXTRA_S = 1.0
"""A leaving record must outlive every heartbeat stored before it (a subkey keeps the value with
the latest expiration)."""

PRESENCE_CACHE_S = 5.0
"""A partner that answered directly counts as live this long before it is asked again."""


class Membership:
    """Reads the member list for the rendezvous; ``fresh`` is this node's own newcomer flag."""

    def __init__(self, services: RoundServices):
        self.services = services
        self.fresh = False
        """This node took x' from peers when it joined and has committed no round since (the node
        sets it before catching up; the first round it commits clears it). Its x' may be a round
        behind its source's already: it neither conducts nor outvotes an established member."""
        self.partners: set[bytes] = set()
        """The other members of the last round this node committed (see the module docstring)."""
        self._answered: dict[bytes, float] = {}
        """Partners that answered directly, and when."""

    def committed_with(self, members: Iterable[bytes]) -> None:
        """This node committed a round with ``members``: they are its partners until the next one."""
        self.partners = set(members) - {self.services.me}
        self._answered = {p: t for p, t in self._answered.items() if p in self.partners}

    async def handle_presence(self, peer: bytes, stream: FramedStream) -> None:
        """A peer checks that we are a live member of the run: that the stream opened says so."""
        stream.close()

    async def _answering(self, peers: list[bytes]) -> set[bytes]:
        """Those of ``peers`` that are live members of the run, asked directly (at once, in parallel)."""
        s = self.services

        async def answers(peer: bytes) -> bool:
            if s.clock.now() - self._answered.get(peer, -PRESENCE_CACHE_S) < PRESENCE_CACHE_S:
                return True
            try:
                stream = await s.host.open_stream(
                    peer,
                    protocol_name(s.run_id, "presence"),
                    timeout_s=s.timing.connect_timeout_s,
                    max_frame_bytes=CONTROL_FRAME_BYTES,
                )
            # The boundary with the host's daemon (another process), whose refusals are untyped.
            except Exception:
                return False
            stream.close()
            self._answered[peer] = s.clock.now()
            return True

        found = await asyncio.gather(*(answers(peer) for peer in peers))
        return {peer for peer, answered in zip(peers, found, strict=True) if answered}

    async def live_members(self) -> dict[bytes, MemberRecord]:
        s = self.services
        records = await s.host.dht_get_subkeys(members_key(s.run_id), MemberRecord.from_wire)
        live = {}
        for name, record in records.items():
            try:
                peer = peer_from_name(name)
            except ValueError:
                logger.warning("ignoring a member record with a malformed peer id %r", name)
                continue
            problem = s.gate.problem(peer, record.credential)
            if problem is not None:
                logger.debug("ignoring the heartbeat of %s: %s", name[-8:], problem)
                continue
            live[peer] = record
            if peer != s.me:
                s.host.remember_addresses(peer, record.addrs)
        return live

    async def live_peers(self) -> dict[bytes, bool]:
        """Members with a fresh heartbeat that have not announced they are leaving, and us: whether
        each is fresh, as its heartbeat says (ours too, so that we rank ourselves as the others do;
        until our first heartbeat is in, our own flag)."""
        me = self.services.me
        try:
            async with asyncio.timeout(self.services.timing.connect_timeout_s):
                records = await self.live_members()
        # The boundary with the DHT (another process, behind a library whose errors are untyped):
        # while it is unreachable, act on what we know, ourselves.
        except Exception as e:
            logger.warning("could not read the member list from the DHT: %s", e)
            return {me: self.fresh}
        live = {p: record.fresh for p, record in records.items() if not record.leaving}
        missing = sorted(p for p in self.partners if p not in records)
        if missing:
            answering = await self._answering(missing)
            if answering:
                logger.warning(
                    "the DHT holds no heartbeat of %s, members of our last round that answer directly:"
                    " they stay live (is the members key withheld?)",
                    ", ".join(short_name(p) for p in sorted(answering)),
                )
            live.update(dict.fromkeys(answering, False))
            self.partners -= set(missing) - answering  # gone: not asked again
        live.setdefault(me, self.fresh)
        return live

    async def announce_leaving(self) -> None:
        """Mark our member record as leaving, so that conductors stop waiting for us."""
        s = self.services
        ttl_s = max(s.timing.join_timeout_s, s.timing.heartbeat_ttl_s) + LEAVING_TTL_EXTRA_S
        record = MemberRecord(
            round=s.copy.round, global_step=s.copy.global_step, local_steps_per_round=0, leaving=True,
            credential=s.gate.own_credential,
        )  # fmt: skip
        # Best effort on the way out, across the DHT boundary (untyped errors): the heartbeat
        # expiring says the same, later.
        with contextlib.suppress(Exception):
            await s.host.dht_store(
                members_key(s.run_id), record.to_wire(), ttl_s=ttl_s, subkey=s.host.peer_name
            )


def conductor_rank(live: dict[bytes, bool]) -> Callable[[bytes], tuple[bool, bytes]]:
    """Order of conductor candidates: established members (lowest peer id first), then fresh ones.

    Every member reads the same heartbeats, so every member picks the same conductor; while an
    established member is live, newcomers (whose x' may be behind already) gather at it.
    """
    return lambda peer: (live.get(peer, True), peer)
