"""Causal language models built through ``transformers``.

A model is named by a preset (a small Llama-style configuration over the 256 byte tokens) or by a
local directory holding a ``config.json`` (and, for fine-tuning, weights). Weights are never fetched
from a hub: a directory without weights gets a fresh initialisation from the run seed.
``transformers`` is imported here only, and only when a model is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swarm.data.corpus import VOCAB_SIZE

PRESETS: dict[str, dict[str, Any]] = {
    # ~0.9M parameters: trains to well under 3 nats/byte in minutes on one CPU core.
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    # ~7M parameters.
    "small": dict(hidden_size=320, intermediate_size=960, num_hidden_layers=6, num_attention_heads=5),
    # ~25M parameters: the size where links of 100 Mbps start to matter on CPUs.
    "base": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8),
}
_LLAMA_COMMON: dict[str, Any] = dict(
    model_type="llama",
    vocab_size=VOCAB_SIZE,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)


class ModelError(ValueError):
    """A model name that is neither a preset nor a usable local directory."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: its configuration as a dict, and a weights directory if any."""

    name: str
    config: dict[str, Any]
    weights_dir: Path | None

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()


def resolve_model(name: str) -> ModelSource:
    """Look ``name`` up as a preset, then as a local directory with a ``config.json``."""
    if name in PRESETS:
        return ModelSource(name, {**_LLAMA_COMMON, **PRESETS[name]}, None)
    path = Path(name)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(
            f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor a folder with config.json"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{config_path}: not valid JSON ({e.msg})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"{config_path}: needs a 'model_type' field")
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    return ModelSource(str(path), config, path if has_weights else None)


def check_fits(source: ModelSource, *, seq_len: int) -> None:
    """The model must embed every byte token of the data and a whole sequence of ``seq_len`` tokens
    (checked on its configuration, before anything is built: a model too small fails deep inside
    its forward pass otherwise)."""
    vocab = source.config.get("vocab_size")
    if isinstance(vocab, int) and vocab < VOCAB_SIZE:
        raise ModelError(
            f"model {source.name!r} has a vocabulary of {vocab} tokens; the data's byte tokens need {VOCAB_SIZE}"
        )
    positions = source.config.get("max_position_embeddings", source.config.get("n_positions"))
    if isinstance(positions, int) and positions < seq_len:
        raise ModelError(
            f"model {source.name!r} has {positions} positions, fewer than the run's sequence length"
            f" {seq_len} (--seq-len)"
        )


def build_model(source: ModelSource, *, seed: int) -> torch.nn.Module:
    """Instantiate the model: pretrained weights when the source has them, else seeded random ones."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if source.weights_dir is not None:
        return AutoModelForCausalLM.from_pretrained(source.weights_dir, dtype=torch.float32)
    config_values = dict(source.config)
    model_type = config_values.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_values)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model
