"""Shard assignment by rendezvous hashing, and members' positions: one owner per shard, little
movement under churn, every sequence once per epoch with a stable membership, resumable positions."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.data.assignment import DataPosition, next_batch, owned_shards, row_order, shard_owner
from swarm.data.errors import DataError

peer_ids = st.binary(min_size=1, max_size=38)
members_st = st.sets(peer_ids, min_size=1, max_size=12)
sizes_st = st.lists(st.integers(1, 9), min_size=1, max_size=24)


@given(
    members=members_st,
    num_shards=st.integers(1, 60),
    epoch=st.integers(0, 10**6),
    seed=st.integers(-(2**63), 2**63 - 1),
)
def test_each_shard_has_exactly_one_owner_among_the_members(
    members: set[bytes], num_shards: int, epoch: int, seed: int
) -> None:
    owned = {
        m: owned_shards(seed=seed, epoch=epoch, num_shards=num_shards, members=members, me=m) for m in members
    }
    counts = Counter(s for shards in owned.values() for s in shards)
    assert counts == Counter(range(num_shards))
    for m, shards in owned.items():
        assert all(shard_owner(seed=seed, epoch=epoch, shard=s, members=members) == m for s in shards)


@given(
    members=st.sets(peer_ids, min_size=2, max_size=12),
    num_shards=st.integers(1, 60),
    epoch=st.integers(0, 99),
    data=st.data(),
)
def test_removing_a_member_moves_only_its_shards(
    members: set[bytes], num_shards: int, epoch: int, data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before = {s: shard_owner(seed=1, epoch=epoch, shard=s, members=members) for s in range(num_shards)}
    after = {
        s: shard_owner(seed=1, epoch=epoch, shard=s, members=members - {gone}) for s in range(num_shards)
    }
    assert {s for s in range(num_shards) if before[s] != after[s]} == {
        s for s, m in before.items() if m == gone
    }
    # And a newcomer takes only the shards that it now owns.
    joined = {
        s: shard_owner(seed=1, epoch=epoch, shard=s, members=members | {b"new"}) for s in range(num_shards)
    }
    assert {s for s in range(num_shards) if before[s] != joined[s]} == {
        s for s, m in joined.items() if m == b"new"
    }


@given(members=members_st, sizes=sizes_st, batch_size=st.integers(1, 7), data=st.data())
def test_the_order_is_deterministic_and_independent_of_how_members_are_listed(
    members: set[bytes], sizes: list[int], batch_size: int, data: st.DataObject
) -> None:
    me = data.draw(st.sampled_from(sorted(members)))
    listed = data.draw(st.permutations(sorted(members)))
    a = next_batch(
        sizes, seed=3, members=sorted(members), me=me, position=DataPosition(), batch_size=batch_size
    )
    b = next_batch(sizes, seed=3, members=listed, me=me, position=DataPosition(), batch_size=batch_size)
    assert a == b and len(a[0]) == batch_size


def _epoch_of_each(
    sizes: list[int], members: set[bytes], me: bytes, calls: int
) -> list[tuple[int, int, int]]:
    """``me``'s next ``calls`` sequences one at a time, as (epoch, shard, row)."""
    out, position = [], DataPosition()
    for _ in range(calls):
        (ref,), position = next_batch(sizes, seed=5, members=members, me=me, position=position, batch_size=1)
        out.append((position.epoch, *ref))
    return out


@settings(max_examples=60, deadline=None)
@given(members=members_st, sizes=sizes_st)
def test_with_stable_members_every_sequence_is_trained_once_per_epoch(
    members: set[bytes], sizes: list[int]
) -> None:
    # Enough calls for every member to pass three epochs (a member may own nothing in one).
    calls = 3 * sum(sizes) + 1
    trained = Counter(t for m in members for t in _epoch_of_each(sizes, members, m, calls) if t[0] < 3)
    expected = {(e, s, r) for e in range(3) for s, size in enumerate(sizes) for r in range(size)}
    assert set(trained) == expected and set(trained.values()) == {1}


@given(sizes=sizes_st, batch_size=st.integers(1, 11), cut=st.integers(0, 30))
def test_batches_are_the_single_sequences_in_order_and_a_saved_position_resumes(
    sizes: list[int], batch_size: int, cut: int
) -> None:
    members = {b"a", b"b", b"c"}
    singles = [(s, r) for _, s, r in _epoch_of_each(sizes, members, b"b", 4 * batch_size + cut)]
    position, batched = DataPosition(), []
    for i in range(4):
        if i == 2:  # the member stops and restarts from its saved position
            position = DataPosition.from_json(position.to_json())
        refs, position = next_batch(
            sizes, seed=5, members=members, me=b"b", position=position, batch_size=batch_size
        )
        batched.extend(refs)
    assert batched == singles[: 4 * batch_size]


def test_a_shard_handed_over_continues_past_its_previous_owners_rows() -> None:
    sizes, members, seed = [50] * 6, {b"a", b"b", b"c"}, 7
    survivors = members - {b"a"}
    handed = owned_shards(seed=seed, epoch=0, num_shards=6, members=members, me=b"a")[0]
    assert shard_owner(seed=seed, epoch=0, shard=handed, members=survivors) == b"b"  # with this seed
    refs_a, position_a = next_batch(
        sizes, seed=seed, members=members, me=b"a", position=DataPosition(), batch_size=20
    )
    assert {s for s, _ in refs_a} == {handed}
    # a leaves; b sees it gone and learns a's position (say, from a record a published).
    seen: list[tuple[int, int]] = list(refs_a)
    for me, position in ((b"b", DataPosition().merged(position_a)), (b"c", DataPosition())):
        while True:
            refs, position = next_batch(
                sizes, seed=seed, members=survivors, me=me, position=position, batch_size=1
            )
            if position.epoch > 0:
                break
            seen.extend(refs)
    assert Counter(seen) == Counter((s, r) for s in range(6) for r in range(50))


def test_fewer_shards_than_members_take_turns_by_epoch() -> None:
    members = {bytes([i]) for i in range(8)}
    for m in members:
        refs, position = next_batch([4], seed=0, members=members, me=m, position=DataPosition(), batch_size=4)
        assert sorted(refs) == [(0, r) for r in range(4)]
        assert shard_owner(seed=0, epoch=position.epoch, shard=0, members=members) == m


def test_rows_come_in_a_fresh_order_each_epoch() -> None:
    first, second = row_order(seed=0, epoch=0, shard=0, rows=64), row_order(seed=0, epoch=1, shard=0, rows=64)
    assert sorted(first) == sorted(second) == list(range(64)) and first != second


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"epoch": -1, "trained": []}',
        b'{"epoch": 0, "trained": [[1, 2], [1, 3]]}',
        b'{"epoch": 0, "trained": [[1.5, 2]]}',
    ],
)
def test_a_malformed_saved_position_is_one_line(data: bytes) -> None:
    with pytest.raises(DataError, match="the saved data position is malformed"):
        DataPosition.from_json(data)


def test_positions_merge_within_an_epoch_only() -> None:
    a = DataPosition(2, {0: 5, 1: 1})
    assert a.merged(DataPosition(2, {1: 4, 3: 2})) == DataPosition(2, {0: 5, 1: 4, 3: 2})
    assert a.merged(DataPosition(3, {1: 9})) == a
    assert DataPosition.from_json(a.to_json()) == a
