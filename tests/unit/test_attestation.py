"""Checkpoints are followed when the run's members attest them, not because a pointer claims a round.

Each case is a DHT an outsider has written into: its pointers carry valid signatures of its own key
(in an open run the envelope is valid), so only attestation stands between a reader and them.
"""

from __future__ import annotations

from swarm.dht.attestation import attested, attested_round
from swarm.dht.pointer import Pointer
from swarm.dht.records import MemberRecord

HONEST = "a" * 64
FORGED = "f" * 64


def _peer(n: int) -> bytes:
    return bytes([0, 36, 8, 1, 18, 32]) + bytes([n]) * 32


def _member(round: int) -> MemberRecord:
    return MemberRecord(round=round, global_step=round * 10, local_steps_per_round=10.0)


def _pointer(round: int, provider: int, manifest: str = HONEST) -> Pointer:
    return Pointer(
        run_id="run.aaaaaaaaaaaaaaaa", round=round, global_step=round * 10, manifest_hash=manifest,
        total_bytes=1000, provider=_peer(provider), expires_at=1e12,
    )  # fmt: skip


def _seen(pointers: list[Pointer]) -> list[tuple[int, int, str]]:
    return [(p.round, p.provider[-1], p.manifest_hash[0]) for p in pointers]


def test_the_attested_round_is_the_one_a_strict_majority_reached() -> None:
    assert attested_round({}) is None
    assert attested_round({_peer(1): _member(7)}) == 7
    assert attested_round({_peer(1): _member(50), _peer(9): _member(10**9)}) == 50  # one liar of two
    members = {_peer(n): _member(r) for n, r in enumerate([50, 52, 10**9, 10**9, 49])}
    assert attested_round(members) == 52  # three of five reached 52; two liars move nothing
    members = {_peer(n): _member(r) for n, r in enumerate([50, 50, 10**9, 10**9])}
    assert attested_round(members) == 50  # half is no majority


def test_a_stranger_s_pointer_to_a_far_round_is_not_followed() -> None:
    members = {_peer(1): _member(60), _peer(2): _member(61)}
    pointers = [_pointer(10**9, 9, FORGED), _pointer(50, 1), _pointer(50, 2), _pointer(40, 1)]
    assert _seen(attested(pointers, members)) == [(50, 2, "a"), (50, 1, "a"), (40, 1, "a")]
    # Nor when the stranger also keeps a heartbeat claiming that round: one of three is no majority.
    members[_peer(9)] = _member(10**9)
    assert [p.round for p in attested(pointers, members)] == [50, 50, 40]


def test_of_one_round_s_manifests_the_one_most_members_provide_is_followed() -> None:
    members = {_peer(n): _member(60) for n in (1, 2, 9)}  # 9: a stranger with a heartbeat (open run)
    pointers = [_pointer(50, 1), _pointer(50, 2), _pointer(50, 9, FORGED), _pointer(50, 8, FORGED)]
    assert _seen(attested(pointers, members)) == [(50, 2, "a"), (50, 1, "a")]  # 8 is not a member at all
    # A tie attests neither: the reader falls back to an older round.
    tie = [_pointer(50, 1), _pointer(50, 9, FORGED), _pointer(40, 1), _pointer(40, 2)]
    assert _seen(attested(tie, members)) == [(40, 2, "a"), (40, 1, "a")]
    # A reader that made the checkpoint of round 50 itself knows its manifest.
    assert _seen(attested(tie, members, own={50: HONEST}))[0] == (50, 1, "a")
    assert all(p.manifest_hash == FORGED for p in attested(tie, members, own={50: FORGED}) if p.round == 50)


def test_anyone_s_pointer_to_an_attested_checkpoint_counts_and_nothing_without_members() -> None:
    members = {_peer(1): _member(60), _peer(2): _member(60)}
    archive = 7  # the coordinator's archive: a provider, not a member
    pointers = [_pointer(50, 1), _pointer(50, archive), _pointer(30, archive)]
    assert _seen(attested(pointers, members)) == [(50, 7, "a"), (50, 1, "a")]  # round 30: no member's word
    assert attested(pointers, {}) == []


def test_members_checkpoints_attest_rounds_their_heartbeats_have_not_caught_up_with() -> None:
    """Rounds can be shorter than the heartbeat interval: a member's own signed pointer says it
    reached that round too (the joiner then takes the newest checkpoint, not one already pruned)."""
    members = {_peer(1): _member(3), _peer(2): _member(4), _peer(9): _member(3)}
    pointers = [_pointer(6, 1), _pointer(6, 2), _pointer(10**9, 9, FORGED), _pointer(2, 1)]
    assert attested_round(members, pointers) == 6  # 9's far pointer counts for one of three
    assert [p.round for p in attested(pointers, members)] == [6, 6, 2]


def test_a_joiner_asks_attested_members_first_then_those_a_round_or_two_ahead_never_a_far_claim() -> None:
    """Two members, one of which has just died with its heartbeat a round behind: the lower median
    is the dead one's round, and the live member a round ahead must still be asked (after it)."""
    from node.catch_up import SOURCE_LEAD, attested_sources

    dead, live, other, stranger = _peer(1), _peer(2), _peer(4), _peer(3)
    assert attested_sources({dead: _member(1), live: _member(2)}) == [dead, live]
    members = {dead: _member(5), other: _member(5), live: _member(5 + SOURCE_LEAD), stranger: _member(10**9)}
    assert attested_sources(members) == [dead, other, live]
    members[live] = _member(6 + SOURCE_LEAD)
    assert attested_sources(members) == [dead, other]
    assert attested_sources({}) == []
