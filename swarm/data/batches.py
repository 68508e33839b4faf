"""Batches as the trainer takes them, from a shard folder: a member's train batch, and the held-out
batches that every node evaluates alike.

Shapes: a batch is ``[batch, seq_len + 1]`` int64 tokens (inputs are ``[:, :-1]``, targets ``[:, 1:]``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import torch

from swarm.data.shards import SequenceRef, ShardSet


def train_tensor(shards: ShardSet, refs: Sequence[SequenceRef]) -> torch.Tensor:
    """``[len(refs), seq_len + 1]`` int64: the train sequences ``assignment.next_batch`` chose."""
    return torch.from_numpy(shards.sequences("train", refs))


def held_out_refs(sizes: Sequence[int], *, count: int) -> list[SequenceRef]:
    """``count`` held-out sequences spread evenly over the eval split (``sizes`` per eval shard),
    in order, repeating from the start when the split holds fewer: the same on every node."""
    total = sum(sizes)
    if total < 1:
        raise ValueError("the eval split holds no sequence")
    return sequence_refs(sizes, [i * total // count if total >= count else i % total for i in range(count)])


def sequence_refs(sizes: Sequence[int], sequences: Sequence[int]) -> list[SequenceRef]:
    """Where each of ``sequences`` (numbered across a split's shards of ``sizes``) lies."""
    starts = list(itertools.accumulate(sizes, initial=0))
    refs = []
    for sequence in sequences:
        shard = bisect.bisect_right(starts, sequence) - 1
        refs.append(SequenceRef(shard, sequence - starts[shard]))
    return refs


def held_out_batches(shards: ShardSet, *, batch_size: int, num_batches: int) -> list[torch.Tensor]:
    """``num_batches`` fixed ``[batch_size, seq_len + 1]`` batches of held-out sequences."""
    refs = held_out_refs(shards.index.eval.sizes, count=batch_size * num_batches)
    return [
        torch.from_numpy(shards.sequences("eval", refs[i : i + batch_size]))
        for i in range(0, len(refs), batch_size)
    ]
