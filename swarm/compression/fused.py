"""The cocktail codec's member step in four Triton kernels: ``e += u``, encode ``e``, ``e -= C[e]``.

Shapes: ``e`` and ``u`` are ``[n]`` fp32 on one device (CUDA, or the CPU under
``TRITON_INTERPRET=1``, which is how the tests run these kernels); ``m`` entries lie on the mask
(every ``stride``-th from the round's offset), ``k`` of them are selected, in ``nb`` buckets.

The torch composition in ``CocktailCodec`` reads and writes the vector several times (the add, the
strided gather, top-k, a boolean index, the scatter back) and moves the payload through the host
twice. Here only the first kernel touches all ``n`` entries, once (read ``e`` and ``u``, write
``e``: the 12 bytes per parameter of the memory floor); the others touch the ``m`` masked entries
(a tenth at the defaults) or the ``k`` selected ones (a fiftieth):

1. ``_add_gather``: ``e += u`` over contiguous blocks; the masked entries of the sum to ``[m]``.
2. ``_select``: the selection (``|v| >= t``, ``t`` the threshold from a sample, as
   ``topk_method="sampled"`` draws it) packed into the bitmap, per block: selected count, largest
   selected magnitude and non-finite count.
3. ``_compact``: selected values and their mask index in rank order (ranks from a prefix sum of the
   block counts).
4. ``_quantise``: per bucket of selected values the fp16 scale (rounded up), the q-bit codes packed
   low bits first, and ``e -= code * (scale / levels)`` at the selected positions.

The bytes follow ``cocktail.py``'s layout exactly, so any member decodes them; the subtraction uses
the decoder's own fp32 operations (a correctly rounded division, then a multiply, then a subtract,
compiled without fused multiply-adds), so ``e`` ends exactly ``(e + u) - decode(payload)``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import triton
import triton.language as tl

from swarm.compression.cocktail_layout import (
    SAMPLE_SIZE,
    CocktailParams,
    mask_offset,
    pack_header,
    sampled_threshold,
)
from swarm.compression.codecs import CodecContext

ADD_BLOCK = 4096
"""Entries per program of the full pass (16 per thread at 8 warps)."""
MASK_BLOCK = 1024
"""Masked entries per program of the select and compact kernels (a multiple of 8: whole bitmap bytes)."""
BUCKETS_PER_PROGRAM = 8
FP16_MAX = 65504.0


class FeedbackCodec(Protocol):
    """What the kernels need of the codec they run for (``CocktailCodec``): its parameters and its
    random generator (the sampled threshold's probes, stochastic rounding's seed)."""

    params: CocktailParams

    def generator(self, device: torch.device) -> torch.Generator: ...


@triton.jit
def _add_gather(e_ptr, u_ptr, masked_ptr, n, offset, STRIDE: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    lane = tl.arange(0, BLOCK)
    inside = start + lane < n
    total = tl.load(e_ptr + start + lane, mask=inside, other=0.0) + tl.load(
        u_ptr + start + lane, mask=inside, other=0.0
    )
    tl.store(e_ptr + start + lane, total, mask=inside)
    # The first masked index at or after this block's start, and its lane (both from scalars, so the
    # per-lane arithmetic stays in 32 bits).
    first = (start - offset + STRIDE - 1) // STRIDE
    first_lane = (offset + first * STRIDE - start).to(tl.int32)
    on_mask = inside & (lane >= first_lane) & ((lane - first_lane) % STRIDE == 0)
    tl.store(masked_ptr + first + (lane - first_lane) // STRIDE, total, mask=on_mask)


@triton.jit
def _chosen(magnitude, inside, threshold_ptr):
    """The selection rule of ``_select`` and ``_compact``: at or above the threshold; strictly above
    when it is zero (ties at zero would select every zero entry)."""
    threshold = tl.load(threshold_ptr)
    return inside & tl.where(threshold == 0, magnitude > threshold, magnitude >= threshold)


@triton.jit
def _select(masked_ptr, threshold_ptr, bitmap_ptr, count_ptr, peak_ptr, bad_ptr, m, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = index < m
    magnitude = tl.abs(tl.load(masked_ptr + index, mask=inside, other=0.0))
    chosen = _chosen(magnitude, inside, threshold_ptr)
    bits = tl.reshape(chosen.to(tl.int32), (BLOCK // 8, 8)) << tl.arange(0, 8)[None, :]
    byte = pid.to(tl.int64) * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    tl.store(bitmap_ptr + byte, tl.sum(bits, axis=1).to(tl.uint8), mask=byte * 8 < m)
    tl.store(count_ptr + pid, tl.sum(chosen.to(tl.int64), axis=0))
    tl.store(peak_ptr + pid, tl.max(tl.where(chosen, magnitude, 0.0), axis=0))
    finite = magnitude < float("inf")  # false for inf and for nan
    tl.store(bad_ptr + pid, tl.sum((inside & ~finite).to(tl.int32), axis=0))


@triton.jit
def _compact(masked_ptr, threshold_ptr, first_ptr, chosen_ptr, index_ptr, m, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = index < m
    value = tl.load(masked_ptr + index, mask=inside, other=0.0)
    chosen = _chosen(tl.abs(value), inside, threshold_ptr)
    flag = chosen.to(tl.int64)
    rank = tl.load(first_ptr + pid) + tl.cumsum(flag, axis=0) - flag
    tl.store(chosen_ptr + rank, value, mask=chosen)
    tl.store(index_ptr + rank, index, mask=chosen)


@triton.jit
def _quantise(
    chosen_ptr,
    index_ptr,
    e_ptr,
    scales_ptr,
    codes_ptr,
    k,
    num_buckets,
    offset,
    seed,
    STRIDE: tl.constexpr,
    BITS: tl.constexpr,
    BUCKET: tl.constexpr,
    BUCKETS: tl.constexpr,
    STOCHASTIC: tl.constexpr,
):
    levels: tl.constexpr = 2 ** (BITS - 1) - 1
    per_byte: tl.constexpr = 8 // BITS
    bucket = tl.program_id(0).to(tl.int64) * BUCKETS + tl.arange(0, BUCKETS)
    rank = bucket[:, None] * BUCKET + tl.arange(0, BUCKET)[None, :]
    inside = rank < k
    value = tl.load(chosen_ptr + rank, mask=inside, other=0.0)
    peak = tl.max(tl.abs(value), axis=1)
    # fp16 scales no smaller than their fp32 peaks: round to nearest, then one ulp up where short.
    half = peak.to(tl.float16)
    short = (half.to(tl.float32) < peak).to(tl.int16)
    half = (half.to(tl.int16, bitcast=True) + short).to(tl.float16, bitcast=True)
    tl.store(scales_ptr + bucket, half, mask=bucket < num_buckets)
    scale = half.to(tl.float32)
    safe = tl.where(scale > 0, scale, 1.0)
    scaled = tl.math.div_rn(value, tl.broadcast_to(safe[:, None], value.shape)) * levels  # as torch divides
    if STOCHASTIC:  # noqa: SIM108 (a constexpr branch: only one side is compiled)
        level = tl.floor(scaled + tl.rand(seed, rank.to(tl.int32)))
    else:
        level = tl.floor(scaled + 0.5)
    level = tl.minimum(tl.maximum(level, -levels), levels)
    code = tl.where(inside, level.to(tl.int32) + levels, 0)
    if BITS == 8:
        tl.store(codes_ptr + rank, code.to(tl.uint8), mask=inside)
    else:
        slots = tl.reshape(code, (BUCKETS * BUCKET // per_byte, per_byte))
        packed = tl.sum(slots << (tl.arange(0, per_byte) * BITS)[None, :], axis=1)
        byte = tl.program_id(0).to(tl.int64) * (BUCKETS * BUCKET // per_byte) + tl.arange(
            0, BUCKETS * BUCKET // per_byte
        )
        tl.store(codes_ptr + byte, packed.to(tl.uint8), mask=byte * per_byte < k)
    # Error feedback with the decoder's operations: step = scale / levels (correctly rounded), then
    # (code - levels) * step, subtracted from e where the entry sits.
    step = tl.math.div_rn(scale, tl.full(scale.shape, levels, tl.float32))
    sent = (code - levels).to(tl.float32) * step[:, None]
    position = offset + tl.load(index_ptr + rank, mask=inside, other=0) * STRIDE
    current = tl.load(e_ptr + position, mask=inside, other=0.0)
    tl.store(e_ptr + position, current - sent, mask=inside)


def _threshold(codec: FeedbackCodec, error: torch.Tensor, update: torch.Tensor | None, offset: int, m: int):
    """The selection threshold as a 0-d tensor on the vector's device (no host sync).

    From SAMPLE_SIZE random masked entries of ``e + u`` (the sampled top-k's estimate), or from all
    of them when the mask holds no more than that (the exact k-th largest magnitude).
    """
    p = codec.params
    k = min(m, math.ceil(p.topk * m))
    if m > SAMPLE_SIZE:
        generator = codec.generator(error.device)
        probe_at = torch.randint(0, m, (SAMPLE_SIZE,), generator=generator, device=error.device)
        positions = offset + probe_at * p.stride
    else:
        positions = torch.arange(offset, offset + m * p.stride, p.stride, device=error.device)
    probe = error[positions] if update is None else error[positions] + update[positions]
    return sampled_threshold(probe.abs(), k, m)


def _mark(phases: list | None, name: str, device: torch.device) -> None:
    """Record a CUDA event after a phase (for the benchmark's per-kernel breakdown)."""
    if phases is not None and device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        phases.append((name, event))


def feedback_encode(
    codec: FeedbackCodec,
    error: torch.Tensor,
    ctx: CodecContext,
    update: torch.Tensor | None = None,
    *,
    phases: list | None = None,
) -> tuple[bytes, torch.Tensor]:
    """``error += update``, then encode it and subtract what was encoded, in place.

    Returns the payload as its header (bytes) and body (uint8 on ``error``'s device): ``header +
    bytes(body)`` is a version-2 cocktail payload. Raises ValueError, with only the add done, when a
    masked entry is not finite or a selected one exceeds fp16's range (as ``encode`` does).
    """
    if error.dim() != 1 or not error.is_contiguous() or error.dtype != torch.float32:
        raise ValueError("the fused step takes a contiguous 1-D fp32 error buffer")
    if update is not None and (update.shape != error.shape or update.dtype != torch.float32):
        raise ValueError("update must match the error buffer's shape and dtype")
    p = codec.params
    n, device = error.numel(), error.device
    offset = mask_offset(p.stride, ctx)
    m = len(range(offset, n, p.stride))
    launch = {"num_warps": 8, "enable_fp_fusion": False}
    if m == 0:
        if update is not None:
            error.add_(update)
        return pack_header(p.bits, n, 0), torch.zeros(0, dtype=torch.uint8, device=device)
    _mark(phases, "start", device)
    threshold = _threshold(codec, error, update, offset, m)
    _mark(phases, "threshold", device)
    masked = torch.empty(m, dtype=torch.float32, device=device)
    if update is None:
        masked.copy_(error[offset :: p.stride])
    else:
        _add_gather[(triton.cdiv(n, ADD_BLOCK),)](
            error, update.contiguous(), masked, n, offset, STRIDE=p.stride, BLOCK=ADD_BLOCK, **launch
        )
    _mark(phases, "add_gather", device)
    blocks = triton.cdiv(m, MASK_BLOCK)
    bitmap = torch.empty(-(-m // 8), dtype=torch.uint8, device=device)
    counts = torch.empty(blocks, dtype=torch.int64, device=device)
    peaks = torch.empty(blocks, dtype=torch.float32, device=device)
    bad = torch.empty(blocks, dtype=torch.int32, device=device)
    _select[(blocks,)](masked, threshold, bitmap, counts, peaks, bad, m, BLOCK=MASK_BLOCK, **launch)
    _mark(phases, "select", device)
    ends = torch.cumsum(counts, 0)
    k, non_finite, too_large = torch.stack(
        [ends[-1], bad.sum().to(torch.int64), (peaks > FP16_MAX).sum().to(torch.int64)]
    ).tolist()  # the step's one host sync: k sizes the payload
    _mark(phases, "sync", device)
    if non_finite or too_large:
        raise ValueError("shard values are too large for fp16 scales (or not finite)")
    num_buckets = -(-k // p.bucket)
    chosen = torch.empty(k, dtype=torch.float32, device=device)
    index = torch.empty(k, dtype=torch.int64, device=device)
    scales = torch.empty(num_buckets, dtype=torch.float16, device=device)
    per_byte = 8 // p.bits
    codes = torch.empty(
        -(-num_buckets // BUCKETS_PER_PROGRAM) * BUCKETS_PER_PROGRAM * p.bucket // per_byte,
        dtype=torch.uint8,
        device=device,
    )
    if k:
        _compact[(blocks,)](masked, threshold, ends - counts, chosen, index, m, BLOCK=MASK_BLOCK, **launch)
        _mark(phases, "compact", device)
        seed = 0
        if p.stochastic:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=codec.generator(device), device=device))
        _quantise[(triton.cdiv(num_buckets, BUCKETS_PER_PROGRAM),)](
            chosen, index, error, scales, codes, k, num_buckets, offset, seed,
            STRIDE=p.stride, BITS=p.bits, BUCKET=p.bucket, BUCKETS=BUCKETS_PER_PROGRAM,
            STOCHASTIC=p.stochastic, **launch,
        )  # fmt: skip
        _mark(phases, "quantise", device)
    body = torch.cat([bitmap, scales.view(torch.uint8), codes[: -(-k * p.bits // 8)]])
    _mark(phases, "assemble", device)
    return pack_header(p.bits, n, k), body
