"""The conductor's gathering of join requests, and how it turns them into rosters.

The functions here decide, from the requests alone, which base (round, digest of x') a round
builds on and who is in it; ``conductor`` runs the gathering over time and streams.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb

Base = tuple[int, bytes]
"""A round and the digest of x' at it."""
MAX_REPAIR_SOURCES = 4
"""Peers a repair roster names to take x' from."""


class Gathering:
    """The conductor's side of one round attempt."""

    def __init__(self, my_request: pb.JoinRequest, me: bytes) -> None:
        self.requests: dict[bytes, pb.JoinRequest] = {me: my_request}
        self.replies: dict[bytes, asyncio.Future[pb.Frame]] = {}
        self.receipts: dict[bytes, asyncio.Future[pb.Receipt]] = {}
        self.commit: asyncio.Future[pb.Commit] = asyncio.get_running_loop().create_future()
        self.my_base: Base = (my_request.round, bytes(my_request.digest))
        self.changed = asyncio.Event()
        self.closed = False

    def close(self, reply: pb.Frame) -> None:
        """Answer every joiner still waiting with ``reply``."""
        self.closed = True
        for future in self.replies.values():
            if not future.done():
                future.set_result(reply)

    def majority_base(self) -> Base:
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
        established = max((r.round for r in self.requests.values() if not r.fresh), default=0)
        bases = Counter(
            (r.round, bytes(r.digest))
            for r in self.requests.values()
            if not r.fresh or r.round >= established
        )
        base, _ = max(
            bases.items(), key=lambda item: (item[1], item[0][0], item[0] == self.my_base, item[0][1])
        )
        return base

    def on_base(self, base: Base) -> list[bytes]:
        return sorted(p for p, r in self.requests.items() if (r.round, bytes(r.digest)) == base)

    def members(self, peers: list[bytes]) -> list[pb.Member]:
        return [
            pb.Member(
                peer_id=p,
                weight=self.requests[p].weight,
                samples=self.requests[p].samples,
                local_steps=self.requests[p].local_steps,
            )
            for p in peers
        ]


def make_roster(
    base: Base, members: list[pb.Member], *, num_shards: int, group_id: bytes, inside: bool, deadline_s: float
) -> pb.Roster:
    """The roster of round ``base[0] + 1`` on ``members``; one outside them repairs from them."""
    return pb.Roster(
        group_id=group_id,
        round=base[0] + 1,
        base_digest=base[1],
        members=members,
        num_shards=num_shards,
        included=inside,
        repair_from=[] if inside else [m.peer_id for m in members[:MAX_REPAIR_SOURCES]],
        deadline_s=deadline_s,
    )


def agree_on_commit(roster: pb.Roster, receipts: list[pb.Receipt]) -> tuple[pb.Commit, list[int]]:
    """The commit of a round from its members' receipts, and the shards whose holders disagree.

    A shard commits when a strict majority of the reporting members hold its result with the
    same bytes: one member (a hostile one whose parts an owner refused, or one that lost an
    owner's stream) cannot veto it. A member without those bytes repairs its x' afterwards.
    """
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
    commit = pb.Commit(
        group_id=roster.group_id,
        shards=sorted(agreed),
        result_digests=[agreed[s] for s in sorted(agreed)],
    )
    return commit, split
