"""The global copy x' and its identity: round id, global step and sha256 digest.

x' lives on the CPU in fp32 and only changes through ``apply_shard`` (plain eager fp32 additions),
so every member that applies the same decoded bytes in any order of shards ends bit-identical.

Shapes: ``values`` is ``[n]`` fp32, contiguous, on the CPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


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

    def __post_init__(self) -> None:
        if self.values.dtype != torch.float32 or self.values.dim() != 1 or self.values.device.type != "cpu":
            raise ValueError("x' must be a 1-D fp32 CPU tensor")
        self.values = self.values.contiguous()

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = digest_of(self.values)
        return self._digest

    def apply_shard(self, start: int, update: torch.Tensor, stride: int = 1) -> None:
        """x'[start], x'[start + stride], ... += update (a shard's support; the others stay as they are)."""
        if update.numel():
            stop = start + stride * (update.numel() - 1) + 1
            if start < 0 or stop > self.values.numel():
                raise ValueError(f"entries {start}..{stop - 1} do not fit x' of {self.values.numel()}")
            self.values[start:stop:stride].add_(update)
        self._digest = None

    def replace(self, values: torch.Tensor, *, round: int, global_step: int, swarm_samples: int) -> None:
        if values.shape != self.values.shape:
            raise ValueError(
                f"replacement x' has shape {tuple(values.shape)}, ours is {tuple(self.values.shape)}"
            )
        self.values.copy_(values)
        self.round, self.global_step, self.swarm_samples = round, global_step, swarm_samples
        self._digest = None


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
