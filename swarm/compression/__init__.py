"""Codecs: how a shard of a flattened fp32 vector becomes bytes and back. Pure tensor math, no I/O."""

from swarm.compression.codecs import (
    CODECS,
    Codec,
    CodecContext,
    CodecError,
    Fp16Codec,
    Fp32Codec,
    get_codec,
)

__all__ = ["CODECS", "Codec", "CodecContext", "CodecError", "Fp16Codec", "Fp32Codec", "get_codec"]
