"""Codecs: how a shard of a flattened fp32 vector becomes bytes and back. Pure tensor math, no I/O."""

from swarm.compression.cocktail import CocktailCodec, CocktailParams
from swarm.compression.codecs import Codec, CodecContext, CodecError, Fp16Codec, Fp32Codec, all_finite
from swarm.compression.registry import CODEC_NAMES, make_codec

__all__ = [
    "CODEC_NAMES",
    "CocktailCodec",
    "CocktailParams",
    "Codec",
    "CodecContext",
    "CodecError",
    "Fp16Codec",
    "Fp32Codec",
    "all_finite",
    "make_codec",
]
