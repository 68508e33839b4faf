"""Who is in the run right now: members' heartbeats in the DHT, read for rendezvous, written on leaving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from swarm.averaging.context import RoundServices
from swarm.dht.records import MemberRecord, members_key
from swarm.peer_names import peer_from_name

logger = logging.getLogger(__name__)

LEAVING_TTL_EXTRA_S = 1.0
"""A leaving record must outlive every heartbeat stored before it (a subkey keeps the value with
the latest expiration)."""


class Membership:
    """Reads the member list for the rendezvous; ``fresh`` is this node's own newcomer flag."""

    def __init__(self, services: RoundServices):
        self.services = services
        self.fresh = False
        """This node took x' from peers when it joined and has committed no round since (the node
        sets it before catching up; the first round it commits clears it). Its x' may be a round
        behind its source's already: it neither conducts nor outvotes an established member."""

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
