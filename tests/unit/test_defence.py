"""The owner's defences as pure functions: outlier exclusion, centered clipping, the ban list."""

from __future__ import annotations

import pytest
import torch

from swarm.averaging.defence import BanList, Defence, centered_clip, find_outliers
from swarm.averaging.reduce import weighted_mean


def _parts(values: list[torch.Tensor], weights: list[float] | None = None):
    weights = weights or [1.0] * len(values)
    return {bytes([i + 1]) * 4: (w, v) for i, (w, v) in enumerate(zip(weights, values, strict=True))}


def test_a_part_far_above_the_median_norm_is_an_outlier_and_honest_spread_is_not() -> None:
    generator = torch.Generator().manual_seed(1)
    honest = [torch.randn(501, generator=generator) * scale for scale in (0.5, 1.0, 1.5, 2.0, 3.0)]
    assert find_outliers(_parts(honest), factor=20.0) == {}
    hostile = torch.randn(501, generator=generator) * 100.0
    found = find_outliers(_parts([*honest, hostile]), factor=20.0)
    assert list(found) == [bytes([6]) * 4]
    assert "median" in found[bytes([6]) * 4]


def test_outliers_need_three_parts_a_nonzero_median_and_a_factor() -> None:
    big, small = torch.full((10,), 1e6), torch.full((10,), 1e-3)
    assert find_outliers(_parts([small, big]), factor=20.0) == {}  # no majority with two
    assert find_outliers(_parts([small, small, big]), factor=0) == {}  # switched off
    zero = torch.zeros(10)
    assert find_outliers(_parts([zero, zero, big]), factor=20.0) == {}


def test_centered_clip_equals_the_mean_of_agreeing_parts() -> None:
    value = torch.linspace(-1, 1, 64)
    parts = _parts([value.clone() for _ in range(5)])
    assert torch.equal(centered_clip(parts, clip_factor=2.0, iterations=3), value)


@pytest.mark.parametrize("attack", ["scaled", "random"])
def test_centered_clip_bounds_one_hostile_part_of_eight(attack: str) -> None:
    generator = torch.Generator().manual_seed(7)
    centre = torch.randn(2000, generator=generator) * 0.1
    honest = [centre + 0.02 * torch.randn(2000, generator=generator) for _ in range(7)]
    honest_mean = torch.stack(honest).mean(0)
    hostile = honest[0] * 1000 if attack == "scaled" else torch.randn(2000, generator=generator) * 50
    parts = _parts([*honest, hostile])
    clipped = centered_clip(parts, clip_factor=2.0, iterations=3)
    plain = weighted_mean(parts)
    spread = float(torch.stack([(h - honest_mean).norm() for h in honest]).median())
    assert float((plain - honest_mean).norm()) > 100 * spread
    # One part of eight, clipped to ~2x the median distance: it moves the centre by well under the spread.
    assert float((clipped - honest_mean).norm()) < spread


def test_centered_clip_is_independent_of_insertion_order_and_weights_count() -> None:
    generator = torch.Generator().manual_seed(3)
    values = [torch.randn(300, generator=generator) for _ in range(4)]
    parts = _parts(values, weights=[1.0, 2.0, 3.0, 4.0])
    reordered = dict(reversed(list(parts.items())))
    assert torch.equal(centered_clip(parts, 2.0, 3), centered_clip(reordered, 2.0, 3))
    heavy = _parts(values, weights=[1.0, 1.0, 1.0, 1000.0])
    light = _parts(values, weights=[1.0, 1.0, 1.0, 1.0])
    to_heavy = float((centered_clip(heavy, 2.0, 3) - values[3]).norm())
    assert to_heavy < float((centered_clip(light, 2.0, 3) - values[3]).norm())


def test_bans_expire_and_stay_bounded() -> None:
    now = [100.0]
    bans = BanList(clock=lambda: now[0])
    bans.ban(b"a", 10.0)
    bans.ban(b"b", 0.0)  # a zero ban bans nothing
    assert bans.banned(b"a") and not bans.banned(b"b") and len(bans) == 1
    bans.ban(b"a", 1.0)  # a shorter ban does not shorten a longer one
    now[0] = 105.0
    assert bans.banned(b"a")
    now[0] = 110.0
    assert not bans.banned(b"a") and len(bans) == 0
    for i in range(5000):
        bans.ban(i.to_bytes(4, "big"), 60.0 + i)
    assert len(bans) == 4096
    assert not bans.banned((0).to_bytes(4, "big"))  # the soonest to expire went first
    assert bans.banned((4999).to_bytes(4, "big"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"outlier_factor": 0.5}, "--outlier-factor must be above 1, or 0"),
        ({"outlier_factor": float("inf")}, "--outlier-factor must be a finite number"),
        ({"ban_s": -1.0}, "--ban-seconds"),
        ({"aggregation": "median"}, "--aggregation"),
        ({"clip_factor": 0.0}, "--clip-factor"),
        ({"clip_iterations": 0}, "clip_iterations"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Defence(**kwargs)
