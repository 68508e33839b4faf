"""The fused Triton member step (``swarm.compression.fused``) on the CPU, under Triton's interpreter.

The same kernels compile for CUDA (``tests/gpu`` runs them there). Checked here: the payload is a
valid cocktail payload that the ordinary decoder reads; with the exact threshold (a mask of at most
SAMPLE_SIZE entries) its bytes equal the torch encoder's; the error buffer ends exactly
``(e + u) - decode(payload)``; the sampled threshold keeps the count near ``r m``; bad values are
rejected with only the add done.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swarm.compression.cocktail import SAMPLE_SIZE, CocktailCodec, CocktailParams, kept_indices
from swarm.compression.codecs import CodecContext

# Triton picks the interpreter when a kernel (its own library's too) is defined, and checks the switch
# again on first launches: set it before the first import of triton, and leave it set.
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("triton was imported before this module could select its CPU interpreter")
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")
from swarm.compression.fused import feedback_encode

CTX = CodecContext(round=5, shard=2)


def _inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 0.01, torch.randn(n, generator=g) * 0.003


def _step(codec: CocktailCodec, e: torch.Tensor, u: torch.Tensor | None) -> bytes:
    header, body = feedback_encode(codec, e, CTX, u)
    return header + body.numpy().tobytes()


@pytest.mark.parametrize(
    ("n", "params"),
    [
        (1, CocktailParams()),
        (9, CocktailParams()),  # fewer entries than the stride: zero or one on the mask
        (1001, CocktailParams()),
        (40_009, CocktailParams()),
        (40_009, CocktailParams(bits=2)),
        (40_009, CocktailParams(bits=8, sparsity=0.25, topk=0.5)),
        (12_345, CocktailParams(sparsity=1.0, topk=0.05, bucket=64)),
    ],
)
def test_exact_threshold_gives_the_torch_encoders_bytes(n: int, params: CocktailParams) -> None:
    e, u = _inputs(n, n)
    expected = CocktailCodec(params).encode(e + u, CTX)  # exact top-k
    fused = CocktailCodec(params, topk_method="sampled")  # a mask this small takes the exact threshold
    assert len(kept_indices(n, params.stride, CTX)) <= SAMPLE_SIZE
    total = e + u
    payload = _step(fused, e, u)
    assert payload == expected
    assert torch.equal(e, total - fused.decode(payload, n, CTX))


def test_sampled_threshold_keeps_the_count_near_k_and_conserves_the_error() -> None:
    params = CocktailParams(sparsity=0.5, topk=0.2)
    n = 160_001
    e, u = _inputs(n, 7)
    total = e + u
    codec = CocktailCodec(params, topk_method="sampled")
    payload = _step(codec, e, u)
    sent = codec.decode(payload, n, CTX)
    # Exactly what was sent left the buffer; nothing else changed.
    assert torch.equal(e, total - sent)
    mask = torch.from_numpy(kept_indices(n, params.stride, CTX))
    m = len(mask)
    assert m > SAMPLE_SIZE
    _, bitmap, _ = codec._parse(payload, n, CTX, None)
    k = int(bitmap.sum())
    # Binomial spread of a threshold from SAMPLE_SIZE draws: sd of the fraction sqrt(r(1-r)/S) ~ 0.0016.
    assert abs(k - math.ceil(params.topk * m)) <= 0.01 * m
    # A threshold: every selected masked entry is at least as large as every unselected one.
    chosen, passed = total[mask][bitmap].abs(), total[mask][~bitmap].abs()
    assert chosen.min() >= passed.max()
    # Round-to-nearest error of each sent value: at most half a quantisation step of its bucket.
    error = (sent[mask][bitmap] - total[mask][bitmap]).abs()
    assert (error <= chosen.max() / 7 / 2 * 1.001).all()
    assert (sent[mask][~bitmap] == 0).all()


def test_stochastic_rounding_is_unbiased_and_still_conserves() -> None:
    params = CocktailParams(sparsity=1.0, topk=1.0, bits=2, stochastic=True)
    n = 4096
    value = torch.full((n,), 0.3)
    value[0] = 1.0  # the bucket scale: 2-bit levels are -1, 0, 1 times 1.0
    codec = CocktailCodec(params, topk_method="sampled")
    sums = torch.zeros(n)
    for round_id in range(4):
        e = value.clone()
        header, body = feedback_encode(codec, e, CodecContext(round=round_id, shard=0))
        payload = header + body.numpy().tobytes()
        sent = codec.decode(payload, n, CodecContext(round=round_id, shard=0))
        assert torch.equal(e, value - sent)
        sums += sent
    # Each 0.3 rounds up to 1 with probability 0.3: the mean over 4 x 4095 draws is 0.3 +- 0.03.
    assert abs(float(sums[1:].mean() / 4) - 0.3) < 0.03


def test_without_an_update_the_buffer_is_encoded_as_it_is() -> None:
    e, _ = _inputs(5003, 1)
    before = e.clone()
    codec = CocktailCodec(CocktailParams(), topk_method="sampled")
    payload = _step(codec, e, None)
    assert payload == CocktailCodec(CocktailParams()).encode(before, CTX)
    assert torch.equal(e, before - codec.decode(payload, 5003, CTX))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e6])
def test_bad_values_on_the_mask_are_rejected_after_the_add_only(bad: float) -> None:
    n = 2000
    e, u = _inputs(n, 3)
    e[int(kept_indices(n, CocktailParams().stride, CTX)[3])] = bad
    total = e + u
    codec = CocktailCodec(CocktailParams(), topk_method="sampled")
    with pytest.raises(ValueError, match=r"fp16|finite"):
        feedback_encode(codec, e, CTX, u)
    torch.testing.assert_close(e, total, rtol=0, atol=0, equal_nan=True)


def test_the_buffer_must_be_contiguous_fp32() -> None:
    codec = CocktailCodec(CocktailParams(), topk_method="sampled")
    with pytest.raises(ValueError, match="contiguous"):
        feedback_encode(codec, torch.zeros(20)[::2], CTX)
    with pytest.raises(ValueError, match="update"):
        feedback_encode(codec, torch.zeros(20), CTX, torch.zeros(21))


COMPILE = """
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from swarm.compression import fused

aligned = [["tt.divisibility", 16]]  # what the launcher assumes of torch's buffers and of n % 16 == 0
jobs = {
    "add_gather": (fused._add_gather, {"e_ptr": "*fp32", "u_ptr": "*fp32", "masked_ptr": "*fp32", "n": "i64",
                   "offset": "i32"}, {"STRIDE": 10, "BLOCK": fused.ADD_BLOCK}, {(0,): aligned, (1,): aligned,
                   (2,): aligned, (3,): aligned}),
    "select": (fused._select, {"masked_ptr": "*fp32", "threshold_ptr": "*fp32", "bitmap_ptr": "*u8",
               "count_ptr": "*i64", "peak_ptr": "*fp32", "bad_ptr": "*i32", "m": "i64"},
               {"BLOCK": fused.MASK_BLOCK}, {}),
    "compact": (fused._compact, {"masked_ptr": "*fp32", "threshold_ptr": "*fp32", "first_ptr": "*i64",
                "chosen_ptr": "*fp32", "index_ptr": "*i64", "m": "i64"}, {"BLOCK": fused.MASK_BLOCK}, {}),
}
for bits, stochastic in ((4, False), (2, True), (8, False)):
    jobs[f"quantise_{bits}_{stochastic}"] = (
        fused._quantise,
        {"chosen_ptr": "*fp32", "index_ptr": "*i64", "e_ptr": "*fp32", "scales_ptr": "*fp16", "codes_ptr": "*u8",
         "k": "i64", "num_buckets": "i64", "offset": "i32", "seed": "i32"},
        {"STRIDE": 10, "BITS": bits, "BUCKET": 128, "BUCKETS": fused.BUCKETS_PER_PROGRAM, "STOCHASTIC": stochastic},
        {},
    )
out = {}
for name, (fn, signature, constants, attrs) in jobs.items():
    signature = {**signature, **{c: "constexpr" for c in constants}}
    source = ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": 8, "enable_fp_fusion": False})
    out[name] = {"ptx": kernel.asm["ptx"], "cubin_bytes": len(kernel.asm["cubin"])}
print(json.dumps(out))
"""


def test_the_kernels_compile_for_hopper_without_fused_multiply_adds() -> None:
    """Triton compiles (to PTX and, with its bundled ptxas, to a cubin) with no GPU present: the CUDA
    build of every kernel is checked here, not only its interpreted run."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", COMPILE],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    kernels = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(k["cubin_bytes"] > 0 for k in kernels.values())
    # The full pass moves 16-byte vectors; the decoder's arithmetic is not contracted into an fma.
    assert "ld.global.v4" in kernels["add_gather"]["ptx"]
    for name, kernel in kernels.items():
        if name.startswith("quantise"):
            assert "fma.rn.f32" not in kernel["ptx"], name
            assert "div.rn.f32" in kernel["ptx"], name


@pytest.mark.parametrize("sparsity", [1 / 3, 1 / 7, 0.5])
def test_every_mask_offset_and_block_boundary_matches_the_torch_encoder(sparsity: float) -> None:
    """Over all offsets of a stride (the rounds of one mask cycle), with blocks of the full pass that
    start at every phase of the stride: the same bytes as the torch encoder, the error conserved."""
    params = CocktailParams(sparsity=sparsity, topk=0.3, bits=4, bucket=32)
    n = 3 * 4096 + 77  # several blocks of the full pass, a partial last one
    for round_id in range(params.stride):
        ctx = CodecContext(round=round_id, shard=7)
        e, u = _inputs(n, 100 + round_id)
        total = e + u
        header, body = feedback_encode(CocktailCodec(params, topk_method="sampled"), e, ctx, u)
        payload = header + body.numpy().tobytes()
        assert payload == CocktailCodec(params).encode(total, ctx)
        assert torch.equal(e, total - CocktailCodec(params).decode(payload, n, ctx))


def test_a_non_contiguous_update_gives_the_same_step() -> None:
    n = 7001
    e, u = _inputs(n, 11)
    strided = torch.zeros(2 * n)
    strided[::2] = u
    twin = e.clone()
    codec = CocktailCodec(CocktailParams(), topk_method="sampled")
    assert _step(codec, e, strided[::2]) == _step(codec, twin, u)
    assert torch.equal(e, twin)
