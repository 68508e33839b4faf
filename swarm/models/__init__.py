"""Models: transformers causal LMs from a preset, a local model folder or the Hub, with their tokenizer.

Layers, inside out:
- ``folder``: the files of a model folder and what a checkpoint carries of them (stdlib only: the
  checkpoint bounds read it in the light client, which has no torch);
- ``byte_tokenizer``: the presets' byte-level tokenizer, and its files for checkpoints;
- ``tokenizer``: a folder's own Hugging Face tokenizer, in the data pipeline's shape;
- ``hub``: ``--model org/name`` through the Hugging Face Hub, or one clear line;
- ``build``: resolve, check against the tokenizer and sequence length, and build the torch module.

The names below are imported from ``build`` on first use, so that importing ``swarm.models.folder``
loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm.models.build import PRESETS, ModelSource, build_model, resolve_model

__all__ = ["PRESETS", "ModelSource", "build_model", "resolve_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from swarm.models import build

        return getattr(build, name)
    raise AttributeError(f"module 'swarm.models' has no attribute {name!r}")
