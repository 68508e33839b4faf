"""CocktailSGD's compressor for one shard: random sparsification, top-k, q-bit quantisation.

Shapes: a shard is ``[n]`` fp32 on the CPU; ``m`` entries survive the random mask, ``k`` of those
survive top-k.

1. Random sparsification: every ``stride = round(1/p)``-th entry, starting at an offset every
   member derives from (round, shard) alone (it rolls by one each round), so the mask costs nothing
   on the wire.
2. Top-k by magnitude inside the ``m`` kept entries, ``k = ceil(r m)``, sent as a bitmap over them.
3. q-bit symmetric quantisation of the ``k`` selected values in index order, one fp16 max-abs scale
   per bucket of ``bucket`` values, deterministic (round to nearest) or stochastic rounding.

Layout (version 2, little-endian; version 1 drew the mask offset at random each round):
    magic b"CK" | version u8 | q u8 | n u32 | k u32 | bitmap ceil(m/8) B | scales 2*ceil(k/bucket) B
    | codes ceil(k*q/8) B
Codes are offset binary (``level + 2^(q-1) - 1``), packed low bits first. ``decode`` checks every
length and field and raises CodecError on anything ``encode`` cannot produce.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import torch

from swarm.compression.cocktail_layout import (
    HEADER_BYTES,
    SAMPLE_SIZE,
    CocktailParams,
    kept_indices,
    mask_offset,
    pack_header,
    read_header,
    sampled_threshold,
)
from swarm.compression.codecs import CodecContext, CodecError

__all__ = [
    "SAMPLE_SIZE",
    "CocktailCodec",
    "CocktailParams",
    "kept_indices",
    "mask_offset",
    "pack_header",
    "sampled_threshold",
]
"""The layout's names (``cocktail_layout``) are importable from here too: the codec's users need one import."""


def _levels(bits: int) -> int:
    return 2 ** (bits - 1) - 1


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``values`` (uint8, each < 2**bits) low bits first into ``ceil(len * bits / 8)`` bytes."""
    if bits == 8:
        return values
    per_byte = 8 // bits
    padded = torch.nn.functional.pad(values, (0, -len(values) % per_byte)).view(-1, per_byte)
    packed = padded[:, 0].clone()
    for slot in range(1, per_byte):
        packed |= padded[:, slot] << (slot * bits)
    return packed


def _pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """A bool mask as a bitmap, low bits first (numpy's packbits on the CPU: ~8x the torch loop)."""
    if flags.device.type == "cpu":
        return torch.from_numpy(np.packbits(flags.numpy(), bitorder="little"))
    return _pack(flags.to(torch.uint8), 1)


def _unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """The bool mask of ``8 * len(packed)`` flags that ``_pack_bits`` wrote."""
    if packed.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(packed.numpy(), bitorder="little")).view(torch.bool)
    return _unpack(packed, 8 * packed.numel(), 1).bool()


def _unpack(packed: torch.Tensor, count: int, bits: int) -> torch.Tensor:
    if bits == 8:
        return packed[:count]
    per_byte, mask = 8 // bits, (1 << bits) - 1
    slots = [(packed >> (slot * bits)) & mask for slot in range(per_byte)]
    return torch.stack(slots, dim=1).reshape(-1)[:count]


def _round_up_to_half(peaks: torch.Tensor) -> torch.Tensor:
    """fp16 scales no smaller than their fp32 peaks (round to nearest, then one ulp up where it fell short)."""
    scales = peaks.to(torch.float16)
    short = scales.float() < peaks
    raised = (scales.view(torch.int16) + short.to(torch.int16)).view(torch.float16)
    return raised


class CocktailCodec:
    """The compressed codec; ``decode(encode(x))`` is C[x], identical on every member and device.

    ``encode`` runs where its input lives (CPU or CUDA); with exact top-k it gives the same bytes on
    both (ties at the k-th magnitude are broken by index). ``decode`` is the same sequence of fp32
    operations on any device (the per-bucket steps are divided on the host): bit-identical results.
    ``topk_method``: ``exact`` (torch.topk's k-th magnitude) or ``sampled`` (a threshold from
    SAMPLE_SIZE random kept entries, drawn from a per-device generator; faster on GPUs for large
    shards, count within a few percent of k). It changes only what this member selects, never the
    layout: members may use either.
    """

    name = "cocktail"

    def __init__(self, params: CocktailParams | None = None, *, seed: int = 0, topk_method: str = "exact"):
        if topk_method not in ("exact", "sampled"):
            raise ValueError(f"topk_method must be exact or sampled, got {topk_method!r}")
        self.params = params or CocktailParams()
        self.topk_method = topk_method
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """This codec's random generator on ``device`` (seeded once): the sampled top-k's probes and
        stochastic rounding draw from it, the fused kernels too."""
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def _select(self, magnitude: torch.Tensor, k: int) -> torch.Tensor:
        """Boolean mask ``[m]`` of the entries top-k keeps."""
        m = magnitude.numel()
        if k >= m:
            return torch.ones(m, dtype=torch.bool, device=magnitude.device)
        if k == 0:
            return torch.zeros(m, dtype=torch.bool, device=magnitude.device)
        if self.topk_method == "sampled" and m > SAMPLE_SIZE:
            probe_at = torch.randint(0, m, (SAMPLE_SIZE,), generator=self.generator(magnitude.device),
                                     device=magnitude.device)  # fmt: skip
            threshold = sampled_threshold(magnitude[probe_at], k, m)
            # Ties at zero would select every zero entry: keep strictly positive ones then.
            return magnitude > threshold if bool(threshold == 0) else magnitude >= threshold
        # The k-th largest magnitude is the same on every device; which of the entries tied with it
        # torch.topk keeps is not. Keep all entries above it and the first tied ones in index order,
        # so that a CPU and a GPU member with the same values send the same bytes.
        threshold = torch.topk(magnitude, k, sorted=False).values.min()
        above = magnitude > threshold
        tied = magnitude == threshold
        return above | (tied & (tied.cumsum(0) <= k - above.sum()))

    def support(self, num_elements: int, ctx: CodecContext) -> tuple[int, int]:
        """(offset, stride): the shard entries ``offset, offset + stride, ...`` that C[x] may change
        this round (the random mask), the same on every member."""
        return mask_offset(self.params.stride, ctx), self.params.stride

    def encode(self, values: torch.Tensor, ctx: CodecContext) -> bytes:
        if values.dim() != 1:
            raise ValueError(f"codecs take a 1-D shard, got shape {tuple(values.shape)}")
        offset, stride = self.support(values.numel(), ctx)
        return self._encode_sampled(values.detach()[offset::stride].float().contiguous(), values.numel())

    def encode_support(self, values: torch.Tensor, num_elements: int, ctx: CodecContext) -> bytes:
        """``encode`` of a shard of ``num_elements`` given only its entries on ``support`` (the
        others cannot reach the payload): the same bytes, for O(p n) work instead of O(n)."""
        offset, stride = self.support(num_elements, ctx)
        m = len(range(offset, num_elements, stride))
        if values.shape != (m,):
            raise ValueError(
                f"{m} sampled entries expected for a shard of {num_elements}, got {tuple(values.shape)}"
            )
        return self._encode_sampled(values.detach().float().contiguous(), num_elements)

    def _encode_sampled(self, sampled: torch.Tensor, n: int) -> bytes:
        """The payload of a shard of ``n`` whose sampled entries (contiguous fp32) are ``sampled``."""
        p = self.params
        m = sampled.numel()
        selected = self._select(sampled.abs(), min(m, math.ceil(p.topk * m)))
        chosen = sampled[selected]  # index order
        k = chosen.numel()
        num_buckets, levels = -(-k // p.bucket), _levels(p.bits)
        rows = torch.nn.functional.pad(chosen, (0, num_buckets * p.bucket - k)).view(num_buckets, p.bucket)
        peaks = rows.abs().amax(dim=1) if num_buckets else rows.new_zeros(0)
        scales = _round_up_to_half(peaks)
        if not bool(torch.isfinite(scales).all()):
            raise ValueError("shard values are too large for fp16 scales (or not finite)")
        safe = torch.where(scales > 0, scales.float(), torch.ones_like(peaks))
        scaled = rows / safe[:, None] * levels
        if p.stochastic:
            noise = torch.rand(scaled.shape, generator=self.generator(scaled.device), device=scaled.device)
            level = torch.floor(scaled + noise)
        else:
            level = torch.round(scaled)
        codes = (level.clamp(-levels, levels).reshape(-1)[:k] + levels).to(torch.uint8)
        body = torch.cat(
            [
                _pack_bits(selected),
                scales.view(torch.uint8),
                _pack(codes, p.bits),
            ]
        )
        return pack_header(p.bits, n, k) + body.cpu().numpy().tobytes()

    def encode_with_feedback(
        self, error: torch.Tensor, ctx: CodecContext, *, update: torch.Tensor | None = None
    ) -> bytes:
        """A member's step on its error buffer, in place: ``error += update`` (when given), then the
        payload of ``error``, then ``error -= decode(payload)``: what was not sent stays in ``error``.

        On a CUDA device with Triton installed, ``topk_method="sampled"`` and a power-of-two bucket,
        the fused kernels of ``swarm.compression.fused`` run it in one full pass over the vector;
        elsewhere the torch composition below (the same layout either way).
        """
        if self.fusable(error):
            from swarm.compression.fused import feedback_encode

            header, body = feedback_encode(self, error, ctx, update)
            return header + body.cpu().numpy().tobytes()
        if update is not None:
            error.add_(update)
        payload = self.encode(error, ctx)
        self.subtract_decoded(payload, error, ctx)
        return payload

    def fusable(self, error: torch.Tensor) -> bool:
        """Whether ``encode_with_feedback`` takes the fused Triton path for this buffer."""
        bucket = self.params.bucket
        return (
            error.is_cuda
            and self.topk_method == "sampled"
            and bucket >= 8
            and bucket & (bucket - 1) == 0
            and _triton_available()
        )

    def decode(
        self, payload: bytes, num_elements: int, ctx: CodecContext, *, device: torch.device | None = None
    ) -> torch.Tensor:
        """C[x] as a dense ``[n]`` fp32 tensor on ``device`` (the CPU by default)."""
        sampled = self.decode_support(payload, num_elements, ctx, device=device)
        dense = torch.zeros(num_elements, dtype=torch.float32, device=sampled.device)
        offset, stride = self.support(num_elements, ctx)
        dense[offset::stride] = sampled
        return dense

    def decode_support(
        self, payload: bytes, num_elements: int, ctx: CodecContext, *, device: torch.device | None = None
    ) -> torch.Tensor:
        """C[x] on ``support`` only, ``[m]`` fp32 (zero where top-k dropped an entry): what a round
        adds, in a tenth of the memory and time of the dense ``decode`` at the defaults."""
        _, selected, values = self._parse(payload, num_elements, ctx, device)
        sampled = torch.zeros(selected.numel(), dtype=torch.float32, device=values.device)
        if values.numel():
            sampled[selected] = values
        return sampled

    def subtract_decoded(self, payload: bytes, out: torch.Tensor, ctx: CodecContext) -> None:
        """``out -= C[x]`` in place, touching only the k selected entries (error feedback on a GPU)."""
        offset, selected, values = self._parse(payload, out.numel(), ctx, out.device)
        if values.numel():
            view = out[offset :: self.params.stride]
            view[selected] = view[selected] - values

    def _parse(
        self, payload: bytes, num_elements: int, ctx: CodecContext, device: torch.device | None
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Validate a payload; (mask offset, selection mask [m], dequantised values [k]) on ``device``."""
        p = self.params
        bits, n, k = read_header(payload)
        if bits != p.bits or n != num_elements:
            raise CodecError(f"payload has q={bits}, n={n}; expected q={p.bits}, n={num_elements}")
        offset = mask_offset(p.stride, ctx)
        m = len(range(offset, n, p.stride))
        if k > m:
            raise CodecError(f"payload selects {k} of {m} sampled entries")
        bitmap_bytes, num_buckets = -(-m // 8), -(-k // p.bucket)
        code_bytes = -(-k * bits // 8)
        expected = HEADER_BYTES + bitmap_bytes + 2 * num_buckets + code_bytes
        if len(payload) != expected:
            raise CodecError(f"cocktail payload has {len(payload)} bytes, expected {expected}")
        # One copy of the payload (torch needs a writable buffer; slicing bytes would copy twice).
        body = (
            torch.frombuffer(bytearray(memoryview(payload)[HEADER_BYTES:]), dtype=torch.uint8)
            if expected > HEADER_BYTES
            else torch.zeros(0, dtype=torch.uint8)
        ).to(device or "cpu")
        bitmap = _unpack_bits(body[:bitmap_bytes])
        if bool(bitmap[m:].any()) or int(bitmap[:m].sum()) != k:
            raise CodecError("bitmap does not select exactly k sampled entries")
        # Scales are read and divided on the host (numpy, correctly rounded) whatever the device:
        # CUDA's torch divides by a scalar as a multiply by its reciprocal, which differs in the
        # last bit from a division, and every member must decode the same bytes to the same values.
        scales = np.frombuffer(payload, "<f2", num_buckets, HEADER_BYTES + bitmap_bytes).astype(np.float32)
        if not np.isfinite(scales).all() or (scales < 0).any():
            raise CodecError("bucket scales must be finite and non-negative")
        levels = _levels(bits)
        codes = _unpack(body[bitmap_bytes + 2 * num_buckets :], k, bits).to(torch.int32) - levels
        if bool((codes.abs() > levels).any()):
            raise CodecError("quantisation code out of range")
        step = torch.from_numpy(scales / np.float32(levels)).to(body.device)  # then one multiply per value
        rows = torch.nn.functional.pad(codes.float(), (0, num_buckets * p.bucket - k)).view(-1, p.bucket)
        return offset, bitmap[:m], (rows * step[:, None]).reshape(-1)[:k]

    def wire_bits_per_parameter(self, n: int) -> float:
        """Bits on the wire per shard entry for a shard of ``n`` (header included)."""
        p = self.params
        m = len(range(0, n, p.stride))
        k = math.ceil(p.topk * m)
        size = HEADER_BYTES + -(-m // 8) + 2 * -(-k // p.bucket) + -(-k * p.bits // 8)
        return 8 * size / n
