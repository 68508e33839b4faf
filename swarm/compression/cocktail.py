"""CocktailSGD's compressor for one shard: random sparsification, top-k, q-bit quantisation.

Shapes: a shard is ``[n]`` fp32 on the CPU; ``m`` entries survive the random mask, ``k`` of those
survive top-k.

1. Random sparsification: every ``stride = round(1/p)``-th entry, starting at an offset every
   member derives from (round, shard) alone, so the mask costs nothing on the wire.
2. Top-k by magnitude inside the ``m`` kept entries, ``k = ceil(r m)``, sent as a bitmap over them.
3. q-bit symmetric quantisation of the ``k`` selected values in index order, one fp16 max-abs scale
   per bucket of ``bucket`` values, deterministic (round to nearest) or stochastic rounding.

Layout (version 1, little-endian):
    magic b"CK" | version u8 | q u8 | n u32 | k u32 | bitmap ceil(m/8) B | scales 2*ceil(k/bucket) B
    | codes ceil(k*q/8) B
Codes are offset binary (``level + 2^(q-1) - 1``), packed low bits first. ``decode`` checks every
length and field and raises CodecError on anything ``encode`` cannot produce.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from swarm.compression.codecs import CodecContext, CodecError

_HEADER = struct.Struct("<2sBBII")
_MAGIC = b"CK"
_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class CocktailParams:
    sparsity: float = 0.1
    """Fraction p of entries the random mask keeps."""
    topk: float = 0.2
    """Fraction r of the kept entries that top-k selects."""
    bits: int = 4
    """Bits q per selected value: 2, 4 or 8."""
    bucket: int = 128
    """Selected values per fp16 scale."""
    stochastic: bool = False
    """Stochastic rounding (unbiased) instead of round-to-nearest."""

    def __post_init__(self) -> None:
        if not 0 < self.sparsity <= 1:
            raise ValueError(f"sparsity must be in (0, 1], got {self.sparsity}")
        if not 0 < self.topk <= 1:
            raise ValueError(f"topk must be in (0, 1], got {self.topk}")
        if self.bits not in (2, 4, 8):
            raise ValueError(f"bits must be 2, 4 or 8, got {self.bits}")
        if self.bucket < 1:
            raise ValueError(f"bucket must be positive, got {self.bucket}")

    @property
    def stride(self) -> int:
        return max(1, round(1 / self.sparsity))


def kept_indices(n: int, stride: int, ctx: CodecContext) -> np.ndarray:
    """The random mask: every ``stride``-th index from an offset seeded by (round, shard)."""
    seed = hashlib.blake2b(f"{ctx.round}:{ctx.shard}".encode(), digest_size=8).digest()
    offset = int.from_bytes(seed, "little") % stride
    return np.arange(offset, n, stride, dtype=np.int64)


def _levels(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _pack(codes: np.ndarray, bits: int) -> bytes:
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    per_byte = 8 // bits
    padded = np.zeros(-(-len(codes) // per_byte) * per_byte, dtype=np.uint8)
    padded[: len(codes)] = codes
    grouped = padded.reshape(-1, per_byte)
    packed = np.zeros(len(grouped), dtype=np.uint8)
    for slot in range(per_byte):
        packed |= grouped[:, slot] << (slot * bits)
    return packed.tobytes()


def _unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw[:count].copy()
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    slots = [(raw >> (slot * bits)) & mask for slot in range(per_byte)]
    return np.stack(slots, axis=1).reshape(-1)[:count]


class CocktailCodec:
    """The compressed codec; ``decode(encode(x))`` is C[x], identical on every member."""

    name = "cocktail"

    def __init__(self, params: CocktailParams | None = None, *, seed: int = 0):
        self.params = params or CocktailParams()
        self._rng = np.random.default_rng(seed)

    def encode(self, values: torch.Tensor, ctx: CodecContext) -> bytes:
        if values.dim() != 1:
            raise ValueError(f"codecs take a 1-D shard, got shape {tuple(values.shape)}")
        p = self.params
        x = values.detach().to(device="cpu", dtype=torch.float32).numpy()
        n = len(x)
        kept = kept_indices(n, p.stride, ctx)
        sampled = x[kept]
        m = len(sampled)
        k = min(m, math.ceil(p.topk * m)) if m else 0
        # Top-k by magnitude (argpartition: a function of the input alone), then in index order.
        chosen = np.sort(np.argpartition(-np.abs(sampled), k - 1)[:k]) if 0 < k < m else np.arange(k)
        bitmap = np.zeros(m, dtype=bool)
        bitmap[chosen] = True
        num_buckets = -(-k // p.bucket)
        levels = _levels(p.bits)
        # Buckets as rows [num_buckets, bucket], zero-padded at the end.
        padded = np.zeros(num_buckets * p.bucket, dtype=np.float64)
        padded[:k] = sampled[chosen]
        rows = padded.reshape(num_buckets, p.bucket)
        peaks = np.abs(rows).max(axis=1) if num_buckets else np.zeros(0)
        scales = peaks.astype(np.float16)
        # fp16 rounds a scale to nearest; never let it fall below its bucket's peak (codes would clip).
        low = scales.astype(np.float64) < peaks
        scales[low] = np.nextafter(scales[low], np.float16(np.inf))
        safe = np.where(scales > 0, scales.astype(np.float64), 1.0)
        scaled = rows / safe[:, None] * levels
        level = np.floor(scaled + self._rng.random(scaled.shape)) if p.stochastic else np.rint(scaled)
        codes = np.clip(level, -levels, levels).reshape(-1)[:k].astype(np.int64)
        if not np.isfinite(scales.astype(np.float32)).all():
            raise ValueError("shard values are too large for fp16 scales (or not finite)")
        return (
            _HEADER.pack(_MAGIC, _VERSION, p.bits, n, k)
            + np.packbits(bitmap, bitorder="little").tobytes()
            + scales.astype("<f2").tobytes()
            + _pack((codes + levels).astype(np.uint8), p.bits)
        )

    def decode(self, payload: bytes, num_elements: int, ctx: CodecContext) -> torch.Tensor:
        p = self.params
        if len(payload) < _HEADER.size:
            raise CodecError(f"cocktail payload of {len(payload)} bytes is shorter than its header")
        magic, version, bits, n, k = _HEADER.unpack_from(payload)
        if magic != _MAGIC or version != _VERSION:
            raise CodecError(f"not a version-{_VERSION} cocktail payload")
        if bits != p.bits or n != num_elements:
            raise CodecError(f"payload has q={bits}, n={n}; expected q={p.bits}, n={num_elements}")
        kept = kept_indices(n, p.stride, ctx)
        m = len(kept)
        if k > m:
            raise CodecError(f"payload selects {k} of {m} sampled entries")
        bitmap_bytes, num_buckets = -(-m // 8), -(-k // p.bucket)
        code_bytes = -(-k * bits // 8)
        expected = _HEADER.size + bitmap_bytes + 2 * num_buckets + code_bytes
        if len(payload) != expected:
            raise CodecError(f"cocktail payload has {len(payload)} bytes, expected {expected}")
        offset = _HEADER.size
        bitmap = np.unpackbits(
            np.frombuffer(payload, dtype=np.uint8, count=bitmap_bytes, offset=offset), bitorder="little"
        )
        if bitmap[m:].any() or int(bitmap[:m].sum()) != k:
            raise CodecError("bitmap does not select exactly k sampled entries")
        offset += bitmap_bytes
        scales = np.frombuffer(payload, dtype="<f2", count=num_buckets, offset=offset).astype(np.float32)
        if not np.isfinite(scales).all() or (scales < 0).any():
            raise CodecError("bucket scales must be finite and non-negative")
        offset += 2 * num_buckets
        levels = _levels(bits)
        codes = _unpack(payload[offset:], k, bits).astype(np.int64) - levels
        if (np.abs(codes) > levels).any():
            raise CodecError("quantisation code out of range")
        values = np.zeros(n, dtype=np.float32)
        if k:
            bucket_of = np.arange(k) // p.bucket
            dequantised = codes.astype(np.float32) * (scales[bucket_of] / np.float32(levels))
            values[kept[bitmap[:m].astype(bool)]] = dequantised
        return torch.from_numpy(values)

    def wire_bits_per_parameter(self, n: int) -> float:
        """Bits on the wire per shard entry for a shard of ``n`` (header included)."""
        p = self.params
        m = len(range(0, n, p.stride))
        k = math.ceil(p.topk * m)
        size = _HEADER.size + -(-m // 8) + 2 * -(-k // p.bucket) + -(-k * p.bits // 8)
        return 8 * size / n
