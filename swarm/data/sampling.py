"""Deterministic batches: which windows of the corpus a node trains and evaluates on.

A node's training windows are drawn from a generator seeded by (run seed, peer id, round, step):
two nodes never share a stream without coordinating, and a rerun with the same identity and seed
draws exactly the same windows. Eval windows are fixed and identical on every node.

Shapes: a batch is ``[batch, seq_len + 1]`` int64 tokens (inputs are ``[:, :-1]``, targets ``[:, 1:]``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    index = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(tokens[index].astype(np.int64))


def batch_rng(*, seed: int, peer_id: bytes, round: int, step: int) -> np.random.Generator:
    """The generator of ``peer_id``'s batch at ``step`` of ``round``: a pure function of these and the
    run's seed (every kind of run data draws its batches from it)."""
    material = hashlib.sha256(
        seed.to_bytes(8, "big", signed=True) + peer_id + round.to_bytes(8, "big") + step.to_bytes(8, "big")
    ).digest()
    return np.random.default_rng(int.from_bytes(material[:16], "big"))


def train_batch(
    tokens: np.ndarray, *, seq_len: int, batch_size: int, seed: int, peer_id: bytes, round: int, step: int
) -> torch.Tensor:
    """``[batch_size, seq_len + 1]`` random windows of ``tokens`` for one local step."""
    if len(tokens) < seq_len + 2:
        raise ValueError(f"corpus of {len(tokens)} tokens is shorter than one sequence of {seq_len + 1}")
    rng = batch_rng(seed=seed, peer_id=peer_id, round=round, step=step)
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    return _windows(tokens, starts, seq_len)


def eval_batches(
    tokens: np.ndarray, *, seq_len: int, batch_size: int, num_batches: int
) -> list[torch.Tensor]:
    """Evenly spaced, fixed windows over the eval split: every node evaluates the same tokens."""
    if len(tokens) < seq_len + 2:
        raise ValueError(f"eval split of {len(tokens)} tokens is shorter than one sequence of {seq_len + 1}")
    count = batch_size * num_batches
    starts = np.linspace(0, len(tokens) - seq_len - 1, num=count).astype(np.int64)
    return [_windows(tokens, starts[i : i + batch_size], seq_len) for i in range(0, count, batch_size)]
