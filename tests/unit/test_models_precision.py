"""--precision: a causal LM trains under bf16 and fp16 autocast on the CPU, and x_i, AdamW's state
and x' stay fp32 (only the forward and backward arithmetic changes)."""

from __future__ import annotations

import pytest
import torch

from node.errors import NodeError
from node.trainer import LocalTrainer
from swarm.averaging.state import GlobalCopy, ShardUpdate
from swarm.models.build import ModelSource, build_model

LLAMA = {
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
}


def _trainer(precision: str) -> LocalTrainer:
    return LocalTrainer(
        build_model(ModelSource("small-llama", LLAMA, None), seed=0),
        device=torch.device("cpu"),
        peak_lr=1e-2,
        warmup_steps=0,
        total_steps=100,
        weight_decay=0.0,
        batch_size=4,
        micro_batch=2,
        joiner_warmup_steps=0,
        precision=precision,
    )


def test_each_precision_trains_and_x_prime_stays_fp32() -> None:
    batch = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(3))
    first_losses = {}
    for precision in ("fp32", "bf16", "fp16"):
        trainer = _trainer(precision)
        copy = GlobalCopy(trainer.flat())
        losses = [trainer.step(batch, global_step=i) for i in range(12)]
        assert losses[-1] < losses[0] * 0.5, f"{precision}: {losses}"
        first_losses[precision] = losses[0]
        assert {p.dtype for p in trainer.params} == {torch.float32}
        assert all(
            v.dtype == torch.float32 for s in trainer.optimizer.state.values() for v in s.values() if v.dim()
        )
        # A committed round moves x' in plain fp32: exactly the aggregate, whatever x_i computed in.
        before = copy.values.clone()
        aggregate = (trainer.flat() - before) * 0.5
        trainer.apply_round([ShardUpdate(shard=0, start=0, aggregate=aggregate, own=None)], copy)
        assert copy.values.dtype == torch.float32 and torch.equal(copy.values, before + aggregate)
    # The reduced precisions did compute in another arithmetic (the same seed, batch and weights).
    assert first_losses["bf16"] != first_losses["fp32"] and first_losses["fp16"] != first_losses["fp32"]
    assert abs(first_losses["bf16"] - first_losses["fp32"]) < 0.05


def test_an_unknown_precision_is_one_line() -> None:
    with pytest.raises(NodeError, match="--precision must be one of fp32, bf16, fp16, got 'fp8'"):
        _trainer("fp8")
