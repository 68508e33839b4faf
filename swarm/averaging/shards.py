"""Shard layout of the flattened parameter vector and shard ownership by rendezvous hashing.

The vector ``[n]`` is cut into ``num_shards`` contiguous slices of near-equal length. Each shard is
reduced by one member of the round's roster, its owner: the member with the highest
``blake2b(run_id, shard, peer_id)`` score. When one member leaves, only the shards it owned move;
every other shard keeps its owner (and its owner-side error buffer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from swarm.compression.codecs import Codec, CodecContext


@dataclass(frozen=True, kw_only=True)
class ShardLayout:
    """Contiguous slices of a vector of ``num_elements``; shard ``i`` is ``[bounds[i], bounds[i+1])``."""

    num_elements: int
    num_shards: int

    def __post_init__(self) -> None:
        if self.num_elements < 1:
            raise ValueError(f"num_elements must be positive, got {self.num_elements}")
        if not 1 <= self.num_shards <= self.num_elements:
            raise ValueError(f"num_shards must be in [1, {self.num_elements}], got {self.num_shards}")

    def bounds(self, shard: int) -> tuple[int, int]:
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range [0, {self.num_shards})")
        base, extra = divmod(self.num_elements, self.num_shards)
        start = shard * base + min(shard, extra)
        return start, start + base + (1 if shard < extra else 0)

    def size(self, shard: int) -> int:
        start, end = self.bounds(shard)
        return end - start


@dataclass(frozen=True)
class Span:
    """Entries ``first, first + stride, ...`` (``count`` of them) of the flat vector: where one
    shard's codec may read and write this round (its support)."""

    first: int
    stride: int
    count: int

    @property
    def stop(self) -> int:
        """One past the last entry (a slice ``[first:stop:stride]`` holds exactly ``count``)."""
        return self.first + self.stride * (self.count - 1) + 1 if self.count else self.first


def gather(vector: torch.Tensor, spans: Sequence[Span]) -> torch.Tensor:
    """The entries of ``vector`` on ``spans``, one span after another, on ``vector``'s device."""
    for span in spans:
        if span.count and (span.first < 0 or span.stop > vector.numel()):
            raise ValueError(f"entries {span.first}..{span.stop - 1} do not fit a vector of {vector.numel()}")
    return torch.cat([vector[s.first : s.stop : s.stride] for s in spans]) if spans else vector[:0].clone()


def supports(codec: Codec, layout: ShardLayout, round_id: int) -> list[Span]:
    """Every shard's support under ``codec`` in round ``round_id``, in shard order: the entries of
    x_i - x' that the round reads (a packed contribution holds these, one span after another)."""
    spans = []
    for shard in range(layout.num_shards):
        start, end = layout.bounds(shard)
        offset, stride = codec.support(end - start, CodecContext(round=round_id, shard=shard))
        spans.append(Span(start + offset, stride, len(range(offset, end - start, stride))))
    return spans


MAX_SHARD_BYTES = 32 * 1024 * 1024


def shards_for(requested: int, num_elements: int) -> int:
    """The run's shard count, raised so that no fp32 shard exceeds MAX_SHARD_BYTES (same on every member)."""
    needed = -(-4 * num_elements // MAX_SHARD_BYTES)
    return min(num_elements, max(requested, needed))


def shard_count_for(num_elements: int, *, target_shard_elements: int, max_shards: int) -> int:
    """A shard count that keeps shards near ``target_shard_elements`` without exceeding ``max_shards``."""
    wanted = -(-num_elements // target_shard_elements)
    return max(1, min(max_shards, wanted, num_elements))


def _score(run_id: str, shard: int, peer_id: bytes) -> int:
    digest = hashlib.blake2b(
        run_id.encode() + b"\0" + shard.to_bytes(4, "big") + peer_id, digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def assign_owners(run_id: str, num_shards: int, roster: Sequence[bytes]) -> list[bytes]:
    """Owner of every shard: the roster member with the highest rendezvous score (ties by peer id)."""
    if not roster:
        raise ValueError("cannot assign shards to an empty roster")
    return [max(roster, key=lambda peer: (_score(run_id, shard, peer), peer)) for shard in range(num_shards)]
