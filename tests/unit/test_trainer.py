"""Algorithm 1 for one member: what a committed round does to x_i and x'."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from node.trainer import LocalTrainer, lr_at
from swarm.averaging.shards import Span, gather
from swarm.averaging.state import GlobalCopy, ShardUpdate


def _trainer(model: torch.nn.Module | None = None, **settings: Any) -> LocalTrainer:
    """A trainer of a small linear model (or ``model``), on the CPU; ``settings`` override the rest."""
    torch.manual_seed(0)
    if model is None:
        model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    defaults: dict[str, Any] = dict(
        device=torch.device("cpu"),
        peak_lr=1e-3,
        warmup_steps=2,
        total_steps=10,
        weight_decay=0.0,
        batch_size=2,
        micro_batch=None,
        joiner_warmup_steps=0,
    )
    return LocalTrainer(model, **{**defaults, **settings})


def test_round_keeps_the_unsent_residual_and_moves_both_copies() -> None:
    trainer = _trainer()
    n = trainer.num_elements
    copy = GlobalCopy(trainer.flat() - torch.randn(n) * 0.1)  # x' differs from x_i by a delta
    delta = trainer.flat() - copy.values
    sent = delta.half().float()  # C[delta_i] of a lossy codec
    aggregate = torch.randn(n) * 0.01  # C[Delta]
    half = n // 2
    updates = [
        ShardUpdate(shard=0, start=0, aggregate=aggregate[:half], own=sent[:half]),  # included
        ShardUpdate(shard=1, start=half, aggregate=aggregate[half:], own=None),  # not included
    ]
    before_copy = copy.values.clone()
    trainer.apply_round(updates, copy)
    torch.testing.assert_close(copy.values, before_copy + aggregate, rtol=0, atol=0)
    residual = trainer.flat() - copy.values
    torch.testing.assert_close(residual[:half], (delta - sent)[:half], rtol=0, atol=1e-6)
    torch.testing.assert_close(residual[half:], delta[half:], rtol=0, atol=1e-6)


def test_a_strided_support_moves_only_its_entries_across_parameter_boundaries() -> None:
    """A cocktail round changes a shard's support (every stride-th entry from an offset); the
    adds go straight into the parameters, across their boundaries, and nowhere else."""
    for start, offset, stride in [(0, 0, 1), (0, 2, 3), (7, 1, 10), (3, 4, 5), (11, 0, 2)]:
        trainer = _trainer()
        n = trainer.num_elements  # 5*3+3 + 3*2+2 = 26 entries in four parameters
        size = n - start
        copy = GlobalCopy(trainer.flat() - torch.randn(n) * 0.1)
        x_before, copy_before = trainer.flat(), copy.values.clone()
        m = len(range(offset, size, stride))
        aggregate, own = torch.randn(m), torch.randn(m)
        update = ShardUpdate(
            shard=0, start=start, aggregate=aggregate, own=own, offset=offset, stride=stride, size=size
        )
        trainer.apply_round([update], copy)
        dense_aggregate, dense_own = update.dense(aggregate), update.dense(own)
        assert dense_aggregate is not None and dense_own is not None
        expected_copy, expected_x = copy_before.clone(), x_before.clone()
        expected_copy[start:] += dense_aggregate
        expected_x[start:] += dense_aggregate - dense_own
        assert torch.equal(copy.values, expected_copy)
        torch.testing.assert_close(trainer.flat(), expected_x, rtol=0, atol=1e-6)
        untouched = torch.ones(n, dtype=torch.bool)
        untouched[start + offset :: stride][:m] = False
        assert torch.equal(trainer.flat()[untouched], x_before[untouched])
        assert torch.equal(copy.values[untouched], copy_before[untouched])


def test_shards_not_committed_change_nothing() -> None:
    trainer = _trainer()
    copy = GlobalCopy(trainer.flat().clone())
    digest, own = copy.digest, trainer.flat()
    trainer.apply_round([], copy)
    assert copy.digest == digest and torch.equal(trainer.flat(), own)


def test_schedule_warms_up_then_decays_to_its_floor() -> None:
    peak = 1.0
    values = [lr_at(s, peak=peak, warmup_steps=10, total_steps=100) for s in range(0, 200, 5)]
    assert values[0] == 0.1 and values[2] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(values[2:]))
    assert abs(values[-1] - 0.1) < 1e-9


def test_a_shard_update_must_fit_its_support() -> None:
    with pytest.raises(ValueError, match="support of 3 entries"):
        ShardUpdate(shard=0, start=0, aggregate=torch.zeros(4), own=None, offset=1, stride=3, size=9)
    with pytest.raises(ValueError, match="needs the shard's size"):
        ShardUpdate(shard=0, start=0, aggregate=torch.zeros(3), own=None, offset=1, stride=3)
    trainer = _trainer()
    n = trainer.num_elements
    update = ShardUpdate(shard=0, start=n - 5, aggregate=torch.ones(6), own=None, size=6)  # one past the end
    with pytest.raises(ValueError):
        trainer.apply_round([update], GlobalCopy(trainer.flat()))


def test_gather_reads_spans_straight_from_the_parameters() -> None:
    """A packed contribution reads x_i on every shard's support without a flat copy: the same
    entries, in the same order, as slicing the flat vector, across parameter boundaries."""
    trainer = _trainer()
    flat = trainer.flat()
    n = trainer.num_elements
    spans = [
        Span(0, 1, 4),
        Span(4, 3, 5),
        Span(19, 10, 1),
        Span(21, 2, 0),
        Span(20, 1, n - 20),
        Span(1, 7, 4),
    ]
    torch.testing.assert_close(trainer.gather(spans), gather(flat, spans), rtol=0, atol=0)
    assert gather(flat, spans).numel() == sum(s.count for s in spans)
    assert trainer.gather([]).numel() == 0
    with pytest.raises(ValueError, match="do not fit"):
        trainer.gather([Span(n - 2, 2, 2)])
    with pytest.raises(ValueError, match="do not fit"):
        gather(flat, [Span(n - 2, 2, 2)])


def test_all_finite_finds_a_nan_or_inf_in_any_parameter() -> None:
    trainer = _trainer()
    assert trainer.all_finite()
    for bad in (math.nan, math.inf):
        trainer = _trainer()
        with torch.no_grad():
            trainer.params[-1].view(-1)[1] = bad
        assert not trainer.all_finite()
    trainer = _trainer()
    with torch.no_grad():  # finite, but their sum overflows fp32: still finite entry by entry
        trainer.params[0].view(-1)[:2] = 3e38
    assert trainer.all_finite()


def test_max_grad_norm_clips_every_local_step() -> None:
    """--max-grad-norm (a run setting) bounds the gradient AdamW sees: clipped to almost nothing,
    Adam's epsilon dominates and the step barely moves x_i; unclipped, the same step moves it."""
    from swarm.models.build import build_model, resolve_model

    source = resolve_model("tiny")
    batch = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    moved = {}
    for norm in (0.0, 1e-12):
        trainer = _trainer(build_model(source, seed=0), peak_lr=1e-2, warmup_steps=0, max_grad_norm=norm)
        before = trainer.flat()
        trainer.step(batch, global_step=1)
        moved[norm] = float((trainer.flat() - before).abs().max())
    assert moved[0.0] > 1e-3
    assert moved[1e-12] < moved[0.0] / 100
