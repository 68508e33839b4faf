"""Fault injection for tests and the byzantine benchmark: never part of an honest node's round.

A node started with ``SWARM_FAULT=...`` (``node.config``'s fault section) hands the averager a
``Faults``; the member's exchange consults it when it encodes its parts and when results arrive.
Without one (every real node) the exchange runs the honest protocol only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from swarm.compression.codecs import Codec, CodecContext, Fp32Codec

NORM_FLOOR = 1e-30
"""Keeps the noise's scale finite when the noise vector happens to be all zeros."""


@dataclass(frozen=True)
class Misbehaviour:
    """What a hostile member sends instead of its parts (tests and the byzantine benchmark only)."""

    mode: str
    """nan, oversized (a frame above the owner's limit), scale (the part times ``factor``) or
    random (Gaussian noise with ``factor`` times the part's norm)."""
    factor: float = 100.0
    seed: int = 0

    MODES = ("nan", "oversized", "scale", "random")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"misbehaviour must be one of {', '.join(self.MODES)}, got {self.mode!r}")

    def payload(
        self, codec: Codec, values: torch.Tensor, num_elements: int, ctx: CodecContext, frame_limit: int
    ) -> bytes:
        """What to send for a shard of ``num_elements`` whose honest delta on the support is ``values``."""
        if self.mode == "oversized":
            return bytes(frame_limit + 1)
        if self.mode == "nan":
            return Fp32Codec().encode(torch.full((num_elements,), math.nan), ctx)
        values = values.cpu()
        if self.mode == "scale":
            return codec.encode_support(values * self.factor, num_elements, ctx)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.round * 1009 + ctx.shard)
        noise = torch.randn(values.shape, generator=generator)
        scale = (
            self.factor
            * float(torch.linalg.vector_norm(values))
            / max(NORM_FLOOR, float(torch.linalg.vector_norm(noise)))
        )
        return codec.encode_support(noise * scale, num_elements, ctx)


@dataclass
class Faults:
    """The faults one node injects into its own rounds."""

    lose_results_round: int | None = None
    """SWARM_FAULT=lose_results:R: drop the highest other owner's results in round R."""
    misbehave: Misbehaviour | None = None
    """SWARM_FAULT=misbehave:...: send hostile parts to the other owners."""

    def loses_results(self, round_id: int, owner: bytes, members: list[bytes], me: bytes) -> bool:
        """Whether this member acts as if ``owner``'s results of ``round_id`` never arrived."""
        return round_id == self.lose_results_round and owner == max(m for m in members if m != me)
