"""The cocktail payload's layout and the choices every encoder of it shares: the header, the mask,
the sampled top-k threshold, the parameters.

``cocktail.py`` (the torch codec, every device) and ``fused.py`` (Triton kernels, CUDA) both write
this layout; what they must agree on to the bit lives here, and each imports it from here (neither
imports the other's internals). Pure: torch and the standard library.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np
import torch

from swarm.compression.codecs import CodecContext, CodecError
from swarm.run_settings import RUN_SETTINGS
from swarm.settings import validate

_HEADER = struct.Struct("<2sBBII")
_MAGIC = b"CK"
_VERSION = 2


def pack_header(bits: int, n: int, k: int) -> bytes:
    """The header of a version-2 payload: q = ``bits``, a shard of ``n`` entries, ``k`` selected.
    Every encoder (the torch one, the fused GPU one) writes it through here, so they cannot disagree."""
    return _HEADER.pack(_MAGIC, _VERSION, bits, n, k)


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
        for name in ("sparsity", "topk", "bits"):  # bounds declared with the run's settings
            validate(RUN_SETTINGS[name], getattr(self, name))
        if self.bucket < 1:
            raise ValueError(f"bucket must be positive, got {self.bucket}")

    @property
    def stride(self) -> int:
        return max(1, round(1 / self.sparsity))


def mask_offset(stride: int, ctx: CodecContext) -> int:
    """The mask's offset rolls by one each round (from a phase seeded by the shard), so every entry
    is kept exactly once every ``stride`` rounds: an entry waits 4.5 rounds on average to be sampled,
    where an offset drawn at random each round makes it wait 9 (and sometimes 30 or more)."""
    seed = hashlib.blake2b(f"shard:{ctx.shard}".encode(), digest_size=8).digest()
    return (int.from_bytes(seed, "little") + ctx.round) % stride


def kept_indices(n: int, stride: int, ctx: CodecContext) -> np.ndarray:
    """The mask: every ``stride``-th index from an offset that rolls with the round (``mask_offset``)."""
    return np.arange(mask_offset(stride, ctx), n, stride, dtype=np.int64)


HEADER_BYTES = _HEADER.size
"""Bytes of a payload's header (magic, version, q, n, k), before its bitmap."""


def read_header(payload: bytes) -> tuple[int, int, int]:
    """(q, n, k) from a version-2 payload's header; anything else is a CodecError."""
    if len(payload) < _HEADER.size:
        raise CodecError(f"cocktail payload of {len(payload)} bytes is shorter than its header")
    magic, version, bits, n, k = _HEADER.unpack_from(payload)
    if magic != _MAGIC or version != _VERSION:
        raise CodecError(f"not a version-{_VERSION} cocktail payload")
    return bits, n, k


SAMPLE_SIZE = 1 << 16
"""Entries the sampled top-k estimates its threshold from: the selected count is within a few
percent of k (binomial spread sqrt(r (1 - r) / SAMPLE_SIZE) of the fraction; tested)."""


def sampled_threshold(probe: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """The magnitude above which about ``k`` of ``m`` entries lie, from the magnitudes ``probe`` of
    some of them (all ``m`` of them: exactly the k-th largest), as a 0-d tensor on probe's device."""
    size = probe.numel()
    return torch.kthvalue(probe, max(1, size - round(k * size / m) + 1)).values
