"""The CocktailSGD codec against a float64 reference: selection, error bounds, layout checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from swarm.compression.cocktail import CocktailCodec, CocktailParams, kept_indices
from swarm.compression.codecs import CodecContext, CodecError

CTX = CodecContext(round=5, shard=2)


def _reference_selection(x: np.ndarray, params: CocktailParams, ctx: CodecContext) -> np.ndarray:
    kept = kept_indices(len(x), params.stride, ctx)
    sampled = np.abs(x[kept].astype(np.float64))
    k = min(len(kept), math.ceil(params.topk * len(kept)))
    threshold = np.sort(sampled)[::-1][k - 1] if k else np.inf
    return kept[sampled >= threshold]


@pytest.mark.parametrize("n", [1, 9, 127, 1000, 100_003])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_round_trip_selects_the_top_entries_and_bounds_the_error(n: int, bits: int) -> None:
    params = CocktailParams(bits=bits)
    codec = CocktailCodec(params)
    x = torch.randn(n, generator=torch.Generator().manual_seed(n + bits)) * 0.02
    y = codec.decode(codec.encode(x, CTX), n, CTX).double()
    xd = x.double()
    chosen = _reference_selection(x.numpy(), params, CTX)
    nonzero = np.flatnonzero(y.numpy())
    assert set(nonzero) <= set(chosen)
    others = np.setdiff1d(np.arange(n), chosen)
    assert (y[others] == 0).all()
    # Round to nearest: each selected value is within half a quantisation step of its bucket's scale
    # (plus fp16 rounding of that scale, at most 2^-10 relative).
    levels = 2 ** (bits - 1) - 1
    selected = xd[chosen]
    for start in range(0, len(chosen), params.bucket):
        part = slice(start, start + params.bucket)
        scale = selected[part].abs().max().item() * (1 + 2**-10)
        error = (y[chosen][part] - selected[part]).abs()
        assert (error <= scale / levels / 2 + 1e-12).all()


def test_the_mask_is_shared_and_keeps_every_entry_once_per_stride_rounds() -> None:
    a = kept_indices(1000, 10, CodecContext(round=1, shard=0))
    assert np.array_equal(a, kept_indices(1000, 10, CodecContext(round=1, shard=0)))
    for start in (0, 7, 123):
        window = [kept_indices(1000, 10, CodecContext(round=r, shard=3)) for r in range(start, start + 10)]
        counts = np.bincount(np.concatenate(window), minlength=1000)
        assert (counts == 1).all()


def test_encoding_is_deterministic_and_ignores_memory_layout() -> None:
    codec = CocktailCodec()
    base = torch.randn(4000, 3)
    column = base[:, 1]
    assert not column.is_contiguous()
    assert codec.encode(column, CTX) == codec.encode(column.contiguous(), CTX)


def test_defaults_cost_about_point_18_bits_per_parameter() -> None:
    codec = CocktailCodec()
    n = 1_000_000
    payload = codec.encode(torch.randn(n), CTX)
    bits = 8 * len(payload) / n
    assert bits == pytest.approx(codec.wire_bits_per_parameter(n))
    assert 0.17 < bits < 0.19  # DESIGN.md: p (1 + r (q + 16/128)) = 0.1825
    assert 32 / bits > 170


def test_stochastic_rounding_is_unbiased() -> None:
    params = CocktailParams(stochastic=True, bits=2, topk=1.0, sparsity=1.0)
    x = torch.rand(256, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    total = torch.zeros(256, dtype=torch.float64)
    runs = 400
    codec = CocktailCodec(params, seed=3)
    for _ in range(runs):
        total += codec.decode(codec.encode(x, CTX), 256, CTX).double()
    bias = (total / runs - x.double()).abs().mean().item()
    deterministic = CocktailCodec(CocktailParams(bits=2, topk=1.0, sparsity=1.0))
    rounded = (
        (deterministic.decode(deterministic.encode(x, CTX), 256, CTX).double() - x.double())
        .abs()
        .mean()
        .item()
    )
    assert bias < rounded / 4


def test_zero_shards_and_tiny_shards() -> None:
    codec = CocktailCodec()
    for n in (1, 3, 10):
        x = torch.zeros(n)
        assert torch.equal(codec.decode(codec.encode(x, CTX), n, CTX), x)


def test_decode_rejects_malformed_payloads() -> None:
    codec = CocktailCodec()
    n = 5000
    payload = codec.encode(torch.randn(n, generator=torch.Generator().manual_seed(0)), CTX)
    with pytest.raises(CodecError, match="expected"):
        codec.decode(payload[:-1], n, CTX)
    with pytest.raises(CodecError, match="n="):
        codec.decode(payload, n + 1, CTX)
    with pytest.raises(CodecError, match="cocktail payload"):
        codec.decode(b"XX" + payload[2:], n, CTX)
    with pytest.raises(CodecError, match="shorter"):
        codec.decode(payload[:4], n, CTX)
    with pytest.raises(CodecError, match="q="):
        CocktailCodec(CocktailParams(bits=8)).decode(payload, n, CTX)
    corrupt = bytearray(payload)
    corrupt[12] ^= 0x01  # flip one bitmap bit: no longer exactly k selected
    with pytest.raises(CodecError, match="bitmap"):
        codec.decode(bytes(corrupt), n, CTX)
    m = len(kept_indices(n, 10, CTX))
    scale_at = 12 + -(-m // 8)
    nan_scale = bytearray(payload)
    nan_scale[scale_at : scale_at + 2] = np.array([np.nan], dtype="<f2").tobytes()
    with pytest.raises(CodecError, match="scales"):
        codec.decode(bytes(nan_scale), n, CTX)


@pytest.mark.parametrize(
    "kwargs", [dict(sparsity=0.0), dict(sparsity=1.5), dict(topk=0.0), dict(bits=3), dict(bucket=0)]
)
def test_nonsense_parameters_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        CocktailParams(**kwargs)


def test_subtract_decoded_matches_the_dense_decode() -> None:
    codec = CocktailCodec()
    n = 50_001
    x = torch.randn(n, generator=torch.Generator().manual_seed(4))
    payload = codec.encode(x, CTX)
    expected = x - codec.decode(payload, n, CTX)
    codec.subtract_decoded(payload, x, CTX)
    assert torch.equal(x, expected)


@pytest.mark.parametrize("kind", ["sparse", "ties", "distinct"])
def test_exact_topk_selects_exactly_k_even_with_ties_at_the_threshold(kind: str) -> None:
    """Ties at the k-th largest magnitude (zeros of a sparse delta, the few levels of an owner's
    mean) still select exactly k entries, the largest: the header's k is the bitmap's count. Of the
    tied entries the first ones in index order are kept, as on a GPU (the same bytes on both)."""
    codec = CocktailCodec()
    n = 400_000
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, generator=g)
    if kind == "sparse":  # fewer non-zero sampled entries than k: the threshold is 0
        x = x * (torch.rand(n, generator=g) < 0.05)
    elif kind == "ties":  # a few magnitudes only
        x = torch.sign(x) * torch.randint(1, 4, (n,), generator=g).float()
    payload = codec.encode(x, CTX)
    kept = torch.from_numpy(kept_indices(n, codec.params.stride, CTX))
    k = math.ceil(codec.params.topk * kept.numel())
    assert int.from_bytes(payload[8:12], "little") == k  # the header's k
    _, selected, _ = codec._parse(payload, n, CTX, None)
    assert int(selected.sum()) == k
    magnitude = x.abs()[kept]
    assert magnitude[selected].min() >= magnitude[~selected].max()
    threshold = magnitude[selected].min()
    tied = (magnitude == threshold).nonzero().flatten()
    kept_tied = int((selected & (magnitude == threshold)).sum())
    assert torch.equal(selected[tied], torch.arange(tied.numel()) < kept_tied)  # a prefix of the ties


@pytest.mark.parametrize("seed", range(4))
def test_sampled_topk_keeps_the_largest_entries_and_about_k_of_them(seed: int) -> None:
    """The GPU-friendly selection: a threshold from 2^16 sampled magnitudes; count within 5% of k."""
    params = CocktailParams()
    exact, sampled = CocktailCodec(params), CocktailCodec(params, topk_method="sampled", seed=seed)
    n = 3_000_000
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * (1 + seed)
    ctx = CodecContext(round=seed, shard=0)
    k_exact = int(exact.decode(exact.encode(x, ctx), n, ctx).count_nonzero())
    y = sampled.decode(sampled.encode(x, ctx), n, ctx)
    selected = y != 0
    assert abs(int(selected.sum()) - k_exact) <= 0.05 * k_exact
    kept = torch.from_numpy(kept_indices(n, params.stride, ctx))
    magnitude = x.abs()[kept]
    chosen = selected[kept]
    assert magnitude[chosen].min() >= magnitude[~chosen].max()


def test_encode_with_feedback_on_the_cpu_is_the_torch_composition() -> None:
    """Off CUDA the member step is add, encode, subtract the decoded bytes: what was sent left the
    buffer and nothing else did."""
    n = 20_011
    g = torch.Generator().manual_seed(3)
    error, update = torch.randn(n, generator=g) * 0.01, torch.randn(n, generator=g) * 0.002
    codec = CocktailCodec(CocktailParams(), topk_method="sampled")
    assert not codec.fusable(error)
    total = error + update
    payload = codec.encode_with_feedback(error, CTX, update=update)
    assert payload == CocktailCodec(CocktailParams()).encode(total, CTX)
    assert torch.equal(error, total - codec.decode(payload, n, CTX))
