"""A codec that charges CPU time and bytes as for a larger model, and the measurement behind it.

The simulator runs the real codec on small real tensors. ``measure`` encodes and decodes one real
shard of the simulated model's size once (the codec's real CPU cost and payload there) and one of
the simulator's size; ``ChargedCodec`` then charges each encode and decode to its member's CPU as
that per-element cost times the simulated number of elements (``Network.charge_cpu``), and the
payload ratio says how many bytes each real payload byte stands for (``ChargePolicy``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from swarm.compression.codecs import Codec, CodecContext
from swarm.sim.network import Network


@dataclass(frozen=True, kw_only=True)
class CodecCost:
    """One codec's measured cost at the simulated model's size."""

    encode_s_per_element: float
    decode_s_per_element: float
    payload_scale: float
    """Payload bytes of a simulated shard per payload byte of a real (small) one."""
    element_scale: float
    """Elements of the simulated model per real element."""


def measure(codec: Codec, *, real_shard: int, model_shard: int, repeats: int = 2, seed: int = 0) -> CodecCost:
    """Encode and decode a random shard of ``model_shard`` elements (best of ``repeats``) and one of
    ``real_shard``: the per-element CPU cost at the model's size and the payload ratio."""
    generator = torch.Generator().manual_seed(seed)
    ctx = CodecContext(round=1, shard=0)
    big = torch.randn(model_shard, generator=generator) * 0.01
    small = torch.randn(real_shard, generator=generator) * 0.01
    encode_s = decode_s = float("inf")
    payload = b""
    for _ in range(repeats):
        started = time.perf_counter()
        payload = codec.encode(big, ctx)
        encode_s = min(encode_s, time.perf_counter() - started)
        started = time.perf_counter()
        codec.decode(payload, model_shard, ctx)
        decode_s = min(decode_s, time.perf_counter() - started)
    return CodecCost(
        encode_s_per_element=encode_s / model_shard,
        decode_s_per_element=decode_s / model_shard,
        payload_scale=len(payload) / len(codec.encode(small, ctx)),
        element_scale=model_shard / real_shard,
    )


class ChargedCodec:
    """``inner``, charging each encode and decode to ``peer``'s CPU at ``cost`` (module docstring)."""

    def __init__(self, inner: Codec, cost: CodecCost, network: Network, peer: bytes):
        self.inner, self.cost, self.network, self.peer = inner, cost, network, peer
        self.name = inner.name

    def _charge(self, elements: int, per_element_s: float) -> None:
        self.network.charge_cpu(self.peer, elements * self.cost.element_scale * per_element_s)

    def encode(self, values: torch.Tensor, ctx: CodecContext) -> bytes:
        self._charge(values.numel(), self.cost.encode_s_per_element)
        return self.inner.encode(values, ctx)

    def decode(self, payload: bytes, num_elements: int, ctx: CodecContext) -> torch.Tensor:
        self._charge(num_elements, self.cost.decode_s_per_element)
        return self.inner.decode(payload, num_elements, ctx)

    def support(self, num_elements: int, ctx: CodecContext) -> tuple[int, int]:
        return self.inner.support(num_elements, ctx)

    def encode_support(self, values: torch.Tensor, num_elements: int, ctx: CodecContext) -> bytes:
        self._charge(num_elements, self.cost.encode_s_per_element)
        return self.inner.encode_support(values, num_elements, ctx)

    def decode_support(self, payload: bytes, num_elements: int, ctx: CodecContext) -> torch.Tensor:
        self._charge(num_elements, self.cost.decode_s_per_element)
        return self.inner.decode_support(payload, num_elements, ctx)
