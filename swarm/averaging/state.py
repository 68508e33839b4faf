"""The global copy x' and its identity: round id, global step and sha256 digest.

x' lives on the CPU in fp32 and only changes through ``apply_shard`` (plain eager fp32 additions),
so every member that applies the same decoded bytes in any order of shards ends bit-identical.

Shapes: ``values`` is ``[n]`` fp32, contiguous, on the CPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x-digest")
"""Hashes x' off the event loop's thread (hashlib releases the GIL on large buffers)."""


def digest_of(values: torch.Tensor) -> bytes:
    """sha256 of the little-endian fp32 bytes of a CPU vector."""
    return hashlib.sha256(values.contiguous().numpy().data.cast("B")).digest()  # no copy of the bytes


@dataclass
class GlobalCopy:
    """x' with the counters that travel with it. ``digest`` is cached and refreshed on change."""

    values: torch.Tensor
    round: int = 0
    global_step: int = 0
    swarm_samples: int = 0
    _digest: bytes | None = field(default=None, repr=False)
    _hashing: Future[bytes] | None = field(default=None, repr=False)
    hash_cpu_s: float = field(default=0.0, repr=False)
    """CPU seconds the worker thread spent hashing x' (``hash_in_background``)."""

    def __post_init__(self) -> None:
        if self.values.dtype != torch.float32 or self.values.dim() != 1 or self.values.device.type != "cpu":
            raise ValueError("x' must be a 1-D fp32 CPU tensor")
        self.values = self.values.contiguous()

    @property
    def digest(self) -> bytes:
        """sha256 of x' (waits for a hash ``hash_in_background`` started)."""
        if self._digest is None:
            self._digest = self._hashing.result() if self._hashing is not None else digest_of(self.values)
            self._hashing = None
        return self._digest

    @property
    def known_digest(self) -> bytes | None:
        """The digest if it is known without hashing or waiting, else None."""
        if self._digest is None and self._hashing is not None and self._hashing.done():
            return self.digest
        return self._digest

    def hash_in_background(self) -> None:
        """Start hashing x' on a worker thread, so that a node trains on while it runs (4 GB of x'
        take ~3 s on one core). x' must not change meanwhile: ``apply_shard`` and ``replace``
        wait for it first."""
        if self._digest is None and self._hashing is None:
            self._hashing = _HASHER.submit(self._timed_digest)

    def _timed_digest(self) -> bytes:
        started = time.thread_time()
        try:
            return digest_of(self.values)
        finally:
            self.hash_cpu_s += time.thread_time() - started

    async def digest_async(self) -> bytes:
        """``digest`` without blocking the event loop: hashed on the worker thread."""
        while self._digest is None:
            self.hash_in_background()
            hashing = self._hashing
            assert hashing is not None
            digest = await asyncio.wrap_future(hashing)
            if self._hashing is hashing:  # x' did not change while we waited
                self._digest, self._hashing = digest, None
        return self._digest

    def _changing(self) -> None:
        if self._hashing is not None:
            self._hashing.result()  # never write x' while the worker reads it
            self._hashing = None
        self._digest = None

    def apply_shard(self, start: int, update: torch.Tensor, stride: int = 1) -> None:
        """x'[start], x'[start + stride], ... += update (a shard's support; the others stay as they are)."""
        self._changing()
        if update.numel():
            stop = start + stride * (update.numel() - 1) + 1
            if start < 0 or stop > self.values.numel():
                raise ValueError(f"entries {start}..{stop - 1} do not fit x' of {self.values.numel()}")
            self.values[start:stop:stride].add_(update)

    def replace(self, values: torch.Tensor, *, round: int, global_step: int, swarm_samples: int) -> None:
        if values.shape != self.values.shape:
            raise ValueError(
                f"replacement x' has shape {tuple(values.shape)}, ours is {tuple(self.values.shape)}"
            )
        self._changing()
        self.values.copy_(values)
        self.round, self.global_step, self.swarm_samples = round, global_step, swarm_samples


@dataclass(frozen=True, kw_only=True)
class ShardUpdate:
    """A committed shard: add ``aggregate`` to x' and x_i, subtract ``own`` (C[delta_i]) from x_i.

    Both hold the shard's support only (the entries its codec may change this round): x entries
    ``start + offset + stride * j``. An exact codec's support is the whole shard (offset 0, stride 1).
    """

    shard: int
    start: int
    aggregate: torch.Tensor
    own: torch.Tensor | None
    offset: int = 0
    stride: int = 1
    size: int | None = None
    """The shard's length (None: ``aggregate`` covers it densely)."""
    payload: bytes = b""
    """The owner's result bytes that decode to ``aggregate`` (kept in the round journal)."""
    owner: bytes = b""
    """Peer id of the member that aggregated this shard."""
    included: tuple[bytes, ...] = ()
    """The members whose parts the owner averaged (excluded ones keep theirs in their residual)."""

    def __post_init__(self) -> None:
        if self.size is None:
            if (self.offset, self.stride) != (0, 1):
                raise ValueError("a strided ShardUpdate needs the shard's size")
            return
        entries = len(range(self.offset, self.size, self.stride))
        for name, values in (("aggregate", self.aggregate), ("own", self.own)):
            if values is not None and values.numel() != entries:
                raise ValueError(f"{name} has {values.numel()} values for a support of {entries} entries")

    @property
    def first(self) -> int:
        """Index in the flat vector of the support's first entry (past the shard if it is empty)."""
        return self.start + self.offset

    def dense(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """``values`` (on the support) spread over the whole shard, zeros elsewhere."""
        if values is None:
            return None
        size = values.numel() if self.size is None else self.size
        out = torch.zeros(size, dtype=values.dtype, device=values.device)
        out[self.offset :: self.stride] = values
        return out
