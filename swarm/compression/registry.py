"""Codec names and their construction from a run's settings (the one place that knows every codec)."""

from __future__ import annotations

from swarm.compression.cocktail import CocktailCodec, CocktailParams
from swarm.compression.codecs import Codec, Fp16Codec, Fp32Codec
from swarm.run_settings import CODECS

CODEC_NAMES = CODECS
"""Declared with the run's settings (``swarm.run_settings``), where ``--help`` reads them without torch."""


def make_codec(name: str, params: CocktailParams | None = None) -> Codec:
    """The codec called ``name``; ``params`` configure the cocktail codec and must be None otherwise."""
    if name == "cocktail":
        return CocktailCodec(params or CocktailParams())
    if params is not None:
        raise ValueError(f"sparsity, top-k and bits apply to the cocktail codec only, not to {name!r}")
    if name == "fp32":
        return Fp32Codec()
    if name == "fp16":
        return Fp16Codec()
    raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODEC_NAMES)}")
