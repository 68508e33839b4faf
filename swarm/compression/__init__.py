"""Codecs: how a shard of a flattened fp32 vector becomes bytes and back. Pure tensor math, no I/O.

- ``codecs``: the codec interface, fp32 and fp16; ``registry``: codecs by name.
- ``cocktail_layout``: the cocktail payload's layout, mask and sampled threshold (shared by both encoders).
- ``cocktail``: CocktailSGD's codec in torch (every device); ``fused``: its member step in Triton kernels.
"""

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
