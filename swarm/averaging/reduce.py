"""The owner's reduction: a weighted mean of decoded contributions, with owner-side error feedback.

Shapes: every tensor is 1-D ``[m]`` fp32 on the CPU: one shard's support (the entries its codec
may change this round; all ``n`` of them for an exact codec).

What the mean weights by: each member's delta ``x_i - x'`` already grows with the work it did (a
node that ran three times the steps moved three times as far), so the default weight is 1 per
member, a uniform mean of the deltas: every sample counts once, through the delta of the node that
processed it. Weighting by samples on top of that would count fast nodes quadratically.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from swarm.compression.codecs import all_finite


class ContributionError(ValueError):
    """A contribution that must be excluded from the round (wrong size, non-finite, bad weight)."""


def check_contribution(values: torch.Tensor, weight: float, num_elements: int) -> None:
    """Raise ContributionError unless ``values`` is a finite ``[num_elements]`` vector with a sane weight."""
    if values.shape != (num_elements,):
        raise ContributionError(f"contribution has shape {tuple(values.shape)}, expected ({num_elements},)")
    if not (weight > 0 and weight < float("inf")):
        raise ContributionError(f"contribution weight must be positive and finite, got {weight}")
    if not all_finite(values):
        raise ContributionError("contribution holds NaN or Inf values")


def weighted_mean(contributions: Mapping[bytes, tuple[float, torch.Tensor]]) -> torch.Tensor:
    """``sum_i w_i v_i / sum_i w_i`` over contributions keyed by peer id, summed in peer-id order.

    The fixed order makes the owner's result a function of its inputs alone (fp32 addition is not
    associative), so a rerun of the same round gives the same bytes.
    """
    if not contributions:
        raise ValueError("weighted_mean needs at least one contribution")
    total_weight = sum(weight for weight, _ in contributions.values())
    acc: torch.Tensor | None = None
    for peer in sorted(contributions):
        weight, values = contributions[peer]
        term = values.to(torch.float32) * (weight / total_weight)
        acc = term if acc is None else acc.add_(term)
    assert acc is not None
    return acc


def apply_error_feedback(aggregate: torch.Tensor, error: torch.Tensor | None) -> torch.Tensor:
    """The value the owner encodes: the aggregate plus what earlier rounds failed to send."""
    return aggregate if error is None else aggregate + error
