"""Codecs against a float64 reference, with stated error bounds, on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from swarm.compression.cocktail import CocktailParams
from swarm.compression.codecs import CodecContext, CodecError, Fp16Codec, Fp32Codec, all_finite
from swarm.compression.registry import make_codec

CTX = CodecContext(round=3, shard=1)


@pytest.mark.parametrize("n", [1, 7, 128, 1001, 65537])
def test_fp32_is_exact(n: int) -> None:
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 3
    codec = Fp32Codec()
    payload = codec.encode(x, CTX)
    assert len(payload) == 4 * n
    assert torch.equal(codec.decode(payload, n, CTX), x)


@pytest.mark.parametrize("n", [1, 7, 1001, 65537])
def test_fp16_relative_error_is_within_half_an_ulp(n: int) -> None:
    x = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 0.01
    codec = Fp16Codec()
    y = codec.decode(codec.encode(x.float(), CTX), n, CTX).double()
    # Normal fp16 numbers carry 11 significant bits: round-to-nearest errs by at most 2^-11 relative.
    normal = x.abs() > 6.1e-5
    assert ((y - x).abs()[normal] <= x.abs()[normal] * 2**-11 + 1e-12).all()
    assert ((y - x).abs()[~normal] <= 2**-25).all()  # subnormal spacing is 2^-24


def test_fp16_saturates_instead_of_overflowing() -> None:
    codec = Fp16Codec()
    y = codec.decode(codec.encode(torch.tensor([1e6, -1e6, 3.0]), CTX), 3, CTX)
    assert y.tolist() == [65504.0, -65504.0, 3.0]


def test_non_contiguous_input_is_encoded_by_value() -> None:
    base = torch.randn(64, 3)
    column = base[:, 1]
    assert not column.is_contiguous()
    for codec in (Fp32Codec(), Fp16Codec()):
        assert codec.encode(column, CTX) == codec.encode(column.contiguous(), CTX)


@pytest.mark.parametrize("codec", [Fp32Codec(), Fp16Codec()])
def test_decode_rejects_wrong_lengths_and_non_finite_values(codec) -> None:
    payload = codec.encode(torch.randn(10), CTX)
    with pytest.raises(CodecError, match="expected"):
        codec.decode(payload[:-1], 10, CTX)
    with pytest.raises(CodecError, match="expected"):
        codec.decode(payload, 11, CTX)
    bad = codec.encode(torch.tensor([1.0, float("nan")]), CTX)
    with pytest.raises(CodecError, match="NaN or Inf"):
        codec.decode(bad, 2, CTX)


def test_codecs_take_one_dimensional_shards_and_names_resolve() -> None:
    with pytest.raises(ValueError, match="1-D"):
        Fp32Codec().encode(torch.randn(2, 2), CTX)
    assert make_codec("fp16").name == "fp16"
    assert make_codec("cocktail", CocktailParams(bits=2)).name == "cocktail"
    with pytest.raises(ValueError, match="unknown codec"):
        make_codec("zip")
    with pytest.raises(ValueError, match="cocktail codec only"):
        make_codec("fp32", CocktailParams())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_agrees_with_an_entrywise_check(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(7)
    big = torch.finfo(dtype).max
    cases = {
        "finite": torch.randn(10_001, generator=generator).to(dtype),
        "empty": torch.empty(0, dtype=dtype),
        "finite terms whose sum overflows": torch.full((9,), big, dtype=dtype),
        "overflow that cancels": torch.tensor([big, big, -big, -big], dtype=dtype),
    }
    for at in (0, 5_000, 10_000):
        for bad in (float("nan"), float("inf"), float("-inf")):
            x = torch.randn(10_001, generator=generator).to(dtype)
            x[at] = bad
            cases[f"{bad} at {at}"] = x
    both = torch.randn(10_001, generator=generator).to(dtype)
    both[3], both[9] = float("inf"), float("-inf")  # a NaN sum from two infinities
    cases["inf and -inf"] = both
    cases["non-contiguous with a NaN"] = cases["nan at 5000"][::2]
    cases["non-contiguous, NaN skipped"] = cases["nan at 5000"][1::2]
    for name, x in cases.items():
        assert all_finite(x) == bool(torch.isfinite(x).all()), name
    # The fallback is exercised: these sums are not finite though every entry is.
    assert not torch.isfinite(cases["finite terms whose sum overflows"].sum())
