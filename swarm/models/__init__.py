"""Model construction: transformers causal LMs from a named preset or a local model directory."""

from swarm.models.build import PRESETS, ModelSource, build_model, resolve_model

__all__ = ["PRESETS", "ModelSource", "build_model", "resolve_model"]
