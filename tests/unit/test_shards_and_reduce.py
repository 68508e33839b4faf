"""Shard layout, rendezvous ownership, and the owner's weighted mean against float64."""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from swarm.averaging.reduce import ContributionError, check_contribution, weighted_mean
from swarm.averaging.shards import ShardLayout, assign_owners, shard_count_for


@pytest.mark.parametrize(("n", "shards"), [(1, 1), (10, 3), (1000, 16), (17, 17)])
def test_layout_tiles_the_vector(n: int, shards: int) -> None:
    layout = ShardLayout(num_elements=n, num_shards=shards)
    covered = [layout.bounds(s) for s in range(shards)]
    assert covered[0][0] == 0 and covered[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    sizes = [layout.size(s) for s in range(shards)]
    assert max(sizes) - min(sizes) <= 1


def test_layout_rejects_impossible_shapes() -> None:
    with pytest.raises(ValueError):
        ShardLayout(num_elements=3, num_shards=4)
    with pytest.raises(IndexError):
        ShardLayout(num_elements=3, num_shards=3).bounds(3)
    assert shard_count_for(10_000, target_shard_elements=1000, max_shards=4) == 4


def test_ownership_moves_only_the_departed_members_shards() -> None:
    peers = [os.urandom(34) for _ in range(6)]
    before = assign_owners("run", 256, peers)
    assert set(before) == set(peers)  # every member owns something at this size
    after = assign_owners("run", 256, peers[1:])
    moved = [s for s in range(256) if before[s] != after[s]]
    assert moved and all(before[s] == peers[0] for s in moved)
    assert assign_owners("run", 256, list(reversed(peers))) == before  # order of the roster is irrelevant


def test_weighted_mean_matches_float64_with_unequal_weights() -> None:
    g = torch.Generator().manual_seed(7)
    parts = {
        os.urandom(8): (w, torch.randn(999, generator=g) * s) for w, s in [(1.0, 1), (3.0, 0.1), (0.5, 10)]
    }
    result = weighted_mean(parts)
    total = sum(w for w, _ in parts.values())
    reference = sum(w * v.double() for w, v in parts.values()) / total
    torch.testing.assert_close(result.double(), reference, rtol=1e-6, atol=1e-6)
    # The same inputs in another insertion order give the same bytes.
    again = weighted_mean(dict(reversed(list(parts.items()))))
    assert torch.equal(result, again)


@pytest.mark.parametrize(
    ("values", "weight", "message"),
    [
        (torch.tensor([1.0, float("inf")]), 1.0, "NaN or Inf"),
        (torch.tensor([1.0, 2.0, 3.0]), 1.0, "shape"),
        (torch.tensor([1.0, 2.0]), 0.0, "weight"),
        (torch.tensor([1.0, 2.0]), float("nan"), "weight"),
    ],
)
def test_bad_contributions_are_refused(values: torch.Tensor, weight: float, message: str) -> None:
    with pytest.raises(ContributionError, match=message):
        check_contribution(values, weight, 2)
