"""Which checkpoints and rounds a reader may trust: those the run's members attest, not those claimed.

Anyone who can reach the DHT can sign a checkpoint pointer with a key of its own, for any round:
in an open run the envelope is valid (its provider signed it), and a reader that ranked pointers
by the round they claim would follow one of round 10^9 to a download of garbage. So a reader
follows a pointer only when the run's members attest it:

- **its round**: at most ``attested_round``, the newest round that a strict majority of the live
  members say their x' has reached, in their signed heartbeats or by the checkpoints they provide
  (heartbeats lag when rounds are short). One stranger's heartbeat and pointer claiming round 10^9
  move it nowhere; the members' own progress does.
- **its content**: of the manifests that pointers of that round name, the one the most live members
  provide (every member that checkpoints one round derives the same manifest from the same x', so
  honest providers agree; ``swarm.checkpoint.manifest``). A tie attests none: the reader falls back
  to an older round. A reader that made the checkpoint of a round itself knows its manifest, and
  trusts nobody else's for that round.

Pointers of anyone, the coordinator's archive included, whose round and manifest are attested are
followed; in a closed run, only credential holders' heartbeats and pointers count at all (the
caller filters them with the run's gate first). The same bound gates whom a joiner takes x' from
and whose journal it replays (``node.catch_up``): a member's claimed round counts only up to it.

What it does not stop, in an open run: a stranger that keeps heartbeats of many keys (cheap) can
outnumber the honest members, and then choose the attested round and manifest. Closed runs, where
keys need the owner's credential, are the answer to that (docs/security.md).

Pure: the callers read the heartbeats and pointers (``swarm.checkpoint.service.read_pointers``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from swarm.dht.pointer import Pointer
from swarm.dht.records import MemberRecord


def attested_round(members: Mapping[bytes, MemberRecord], pointers: Iterable[Pointer] = ()) -> int | None:
    """The newest round a strict majority of ``members`` (live heartbeats) have reached; None with
    no members. A member has reached the round its heartbeat says, or that of the newest checkpoint
    it provides (signed by it too, and newer when rounds are faster than heartbeats)."""
    reached = {peer: record.round for peer, record in members.items()}
    for pointer in pointers:
        if pointer.provider in reached:
            reached[pointer.provider] = max(reached[pointer.provider], pointer.round)
    rounds = sorted(reached.values(), reverse=True)
    if not rounds:
        return None
    return rounds[len(rounds) // 2]


def attested(
    pointers: Iterable[Pointer],
    members: Mapping[bytes, MemberRecord],
    *,
    own: Mapping[int, str] | None = None,
) -> list[Pointer]:
    """The pointers a reader may follow, newest round first (see the module docstring).

    ``members``: the live members' heartbeats by peer id; ``own``: the manifest hash of each round
    whose checkpoint the reader made itself."""
    pointers = list(pointers)
    bound = attested_round(members, pointers)
    own = own or {}
    by_round: dict[int, list[Pointer]] = defaultdict(list)
    for pointer in pointers:
        if bound is not None and pointer.round <= bound:
            by_round[pointer.round].append(pointer)
    kept: list[Pointer] = []
    for round, candidates in by_round.items():
        manifest = own.get(round) or _most_provided(candidates, members)
        kept.extend(p for p in candidates if p.manifest_hash == manifest)
    return sorted(kept, key=lambda p: (p.round, p.provider), reverse=True)


def _most_provided(candidates: list[Pointer], members: Mapping[bytes, MemberRecord]) -> str | None:
    """The manifest the most distinct live members provide; None on a tie or with no member."""
    providers: dict[str, set[bytes]] = defaultdict(set)
    for pointer in candidates:
        if pointer.provider in members:
            providers[pointer.manifest_hash].add(pointer.provider)
    ranked = Counter({manifest: len(peers) for manifest, peers in providers.items()}).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]
