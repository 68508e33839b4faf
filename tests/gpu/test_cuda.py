"""CUDA checks: training steps in bf16, fp16 (with its loss scaler) and fp32, the micro-batch probe, and x' staying bit-identical across devices.

Skipped without a CUDA device (this project's CI machines have none; run them on a GPU box with
``python -m pytest tests/gpu``).
"""

from __future__ import annotations

import pytest
import torch

from node.trainer import LocalTrainer
from swarm.averaging.state import GlobalCopy, ShardUpdate
from swarm.models import build_model, resolve_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible to torch"),
]


def _trainer(device: str, precision: str = "fp32") -> LocalTrainer:
    return LocalTrainer(
        build_model(resolve_model("tiny"), seed=0),
        device=torch.device(device),
        peak_lr=1e-3,
        warmup_steps=1,
        total_steps=10,
        weight_decay=0.0,
        batch_size=8,
        micro_batch=None,
        joiner_warmup_steps=0,
        precision=precision,
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_steps_learn_in_each_precision_and_x_stays_fp32(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU does not compute in bf16")
    trainer = _trainer("cuda", precision)
    batch = torch.randint(0, 256, (8, 65))
    assert trainer.auto_micro_batch(batch) >= 1
    losses = [trainer.step(batch, global_step=i) for i in range(5)]
    assert losses[-1] < losses[0]
    assert trainer.flat().dtype == torch.float32


def test_global_copy_is_bit_identical_for_a_cpu_and_a_gpu_member() -> None:
    cpu, gpu = _trainer("cpu"), _trainer("cuda")
    start = cpu.flat()
    assert torch.equal(start, gpu.flat())
    copies = [GlobalCopy(start.clone()), GlobalCopy(start.clone())]
    aggregate = torch.randn(start.numel()) * 1e-3
    update = [ShardUpdate(shard=0, start=0, aggregate=aggregate, own=None)]
    cpu.apply_round(update, copies[0])
    gpu.apply_round(update, copies[1])
    assert copies[0].digest == copies[1].digest


def test_cocktail_bytes_decode_bit_identically_on_gpu_and_cpu() -> None:
    from swarm.compression.cocktail import CocktailCodec, CocktailParams
    from swarm.compression.codecs import CodecContext

    for params in (CocktailParams(), CocktailParams(sparsity=0.4, topk=0.5, bits=2)):
        for method in ("exact", "sampled"):
            codec = CocktailCodec(params, topk_method=method)
            ctx = CodecContext(round=11, shard=3)
            n = 2_000_003
            x = torch.randn(n, generator=torch.Generator().manual_seed(1)) * 0.01
            payload = codec.encode(x.cuda(), ctx)  # encoded on the GPU, in the shared layout
            on_gpu = codec.decode(payload, n, ctx, device=torch.device("cuda"))
            on_cpu = codec.decode(payload, n, ctx)
            assert torch.equal(on_gpu.cpu(), on_cpu)
            base = torch.randn(n)
            assert torch.equal((base.cuda() + on_gpu).cpu(), base + on_cpu)
            residual = x.cuda()
            codec.subtract_decoded(payload, residual, ctx)
            assert torch.equal(residual.cpu(), x - on_cpu)


def test_a_gpu_members_packed_contribution_is_the_cpu_members_dense_one() -> None:
    """The node gathers x_i - x' on the round's supports on the model's device and encodes it there;
    a GPU member's parts are the bytes a CPU member with the same x_i makes from its dense delta."""
    from swarm.averaging.shards import ShardLayout, gather, supports
    from swarm.compression.cocktail import CocktailCodec
    from swarm.compression.codecs import CodecContext

    cpu, gpu = _trainer("cpu"), _trainer("cuda")
    x_i = cpu.flat()
    x_prime = x_i - torch.randn(x_i.numel(), generator=torch.Generator().manual_seed(2)) * 1e-3
    codec = CocktailCodec()
    layout = ShardLayout(num_elements=x_i.numel(), num_shards=7)
    for round_id in (1, 2, 3):
        spans = supports(codec, layout, round_id)
        packed = gpu.gather(spans).sub_(gather(x_prime, spans).cuda())
        assert packed.is_cuda and gpu.all_finite()
        dense = x_i - x_prime
        assert torch.equal(packed.cpu(), gather(dense, spans))
        for shard, values in enumerate(packed.split([span.count for span in spans])):
            start, end = layout.bounds(shard)
            ctx = CodecContext(round=round_id, shard=shard)
            on_gpu = codec.encode_support(values, end - start, ctx)
            assert on_gpu == codec.encode(dense[start:end], ctx)


@pytest.mark.parametrize("n", [200_003, 3_000_017])  # the exact threshold (m <= SAMPLE_SIZE), then sampled
def test_fused_step_on_the_gpu_gives_a_payload_the_cpu_decodes_and_conserves_the_error(n: int) -> None:
    pytest.importorskip("triton")
    from swarm.compression.cocktail import SAMPLE_SIZE, CocktailCodec, CocktailParams
    from swarm.compression.codecs import CodecContext

    codec = CocktailCodec(CocktailParams(), topk_method="sampled")
    ctx = CodecContext(round=4, shard=1)
    g = torch.Generator().manual_seed(n)
    e, u = torch.randn(n, generator=g) * 0.01, torch.randn(n, generator=g) * 0.003
    error = e.cuda()
    assert codec.fusable(error)
    payload = codec.encode_with_feedback(error, ctx, update=u.cuda())
    sent = codec.decode(payload, n, ctx)  # on the CPU
    assert torch.equal(error.cpu(), (e + u) - sent)
    if n // codec.params.stride <= SAMPLE_SIZE:
        assert payload == CocktailCodec(CocktailParams()).encode(e + u, ctx)  # exact top-k's bytes
