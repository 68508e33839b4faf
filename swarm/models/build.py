"""Causal language models built through ``transformers``, checked before anything is built.

    resolve_model(name) -> ModelSource    a preset, a local model folder, or a Hub id (``org/name``)
    load_tokenizer(source)                its tokenizer: the folder's own, or the byte-level one
    check_fits(source, seq_len=...)       its vocabulary covers the tokenizer's, its positions the run's
    build_model(source, seed=...)         the torch module: the folder's weights, or seeded random ones
    companion_files(source, tokenizer)    what a checkpoint carries besides the weights and config

A model is named by a preset (a small Llama-style configuration over the 256 byte tokens), by a
local folder that transformers loads (``config.json``, optionally ``model.safetensors``, and the
tokenizer's files), or by a Hugging Face Hub id (``swarm.models.hub``). A folder without weights
gets a fresh initialisation from the run seed. Its configuration goes through transformers' own
classes for its model type, never through code shipped with the folder (``trust_remote_code``).

Tokenizers: a folder must hold its tokenizer's files, or its token ids mean nothing. The one
exception is a model of exactly 256 tokens, which reads text as UTF-8 bytes like the presets (a
folder saved from a byte-level run by an older Swarm has no tokenizer files); any other vocabulary
without a tokenizer is refused. ``transformers`` is imported here only when a model is checked or
built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swarm.models.byte_tokenizer import BYTE_VOCAB_SIZE, ByteTokenizer, byte_tokenizer_files
from swarm.models.folder import (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    ModelError,
    find_weights,
    read_companion_files,
    tokenizer_file_names,
)
from swarm.models.hub import fetch_from_hub, is_hub_id
from swarm.models.tokenizer import HFTokenizer

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
    vocab_size=BYTE_VOCAB_SIZE,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

ModelTokenizer = HFTokenizer | ByteTokenizer


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: its configuration as a dict, its weights and its folder if any."""

    name: str
    config: dict[str, Any]
    weights_dir: Path | None
    folder: Path | None = None
    """The model folder (its tokenizer and generation config); None for a preset."""

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()


def resolve_model(name: str) -> ModelSource:
    """Look ``name`` up as a preset, then as a local folder, then as a Hub id; check what it names."""
    if name in PRESETS:
        return ModelSource(name, {**_LLAMA_COMMON, **PRESETS[name]}, None)
    path = Path(name)
    if not path.exists() and is_hub_id(name):
        path = fetch_from_hub(name)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(
            f"model {name!r} is neither a preset ({', '.join(PRESETS)}) nor a folder with config.json"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelError(f"{config_path}: needs a 'model_type' field")
    _check_model_type(name, config)
    weights = find_weights(path)
    source = ModelSource(name, config, path if weights is not None else None, folder=path)
    if not tokenizer_file_names(path):
        vocab = text_config(source).vocab_size
        if vocab != BYTE_VOCAB_SIZE:
            raise ModelError(
                f"model {name!r} has no tokenizer files (tokenizer.json, tokenizer_config.json, ...):"
                f" its {vocab} token ids mean nothing without them; copy its tokenizer into {path}"
                f" (only a model of exactly {BYTE_VOCAB_SIZE} tokens reads raw bytes without one)"
            )
    return source


def _check_model_type(name: str, config: dict[str, Any]) -> None:
    """A type transformers itself knows as a causal LM, with weights Swarm can train in fp32."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelError(
            f"model {name!r} is of type {model_type!r}, which transformers {transformers.__version__} does"
            " not know (Swarm never runs a model folder's own code; a newer transformers may know it)"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"model {name!r} of type {model_type!r} is not a causal language model in transformers"
        )
    quantization = config.get("quantization_config")
    if quantization is not None:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else None
        raise ModelError(
            f"model {name!r} is quantized ({method or 'quantization_config'}): Swarm trains and averages"
            " fp32 weights; use the unquantized model"
        )


def hf_config(source: ModelSource) -> Any:
    """The transformers configuration object of ``source``, built by transformers' own class for
    its model type."""
    from transformers import AutoConfig

    values = dict(source.config)
    model_type = values.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"the configuration of model {source.name!r} does not load: {e}") from None


def text_config(source: ModelSource) -> Any:
    """The configuration of ``source``'s language model (the text part of a multimodal one)."""
    config = hf_config(source)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def load_tokenizer(source: ModelSource) -> ModelTokenizer:
    """The tokenizer of ``source``: its folder's, or the byte-level one of a byte-level model."""
    if source.folder is None or not tokenizer_file_names(source.folder):
        return ByteTokenizer()
    return HFTokenizer.load(source.folder, name=repr(source.name))


def check_fits(source: ModelSource, *, seq_len: int, tokenizer: ModelTokenizer | None = None) -> None:
    """The model must embed every token its tokenizer produces and a whole sequence of ``seq_len``
    tokens (checked on its configuration, before anything is built: a model too small fails deep
    inside its forward pass otherwise). Loads the tokenizer unless it is given."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(source)
    config = text_config(source)
    vocab = config.vocab_size
    if isinstance(tokenizer, ByteTokenizer) and vocab < BYTE_VOCAB_SIZE:
        raise ModelError(
            f"model {source.name!r} has a vocabulary of {vocab} tokens; the data's byte tokens need {BYTE_VOCAB_SIZE}"
        )
    if vocab < tokenizer.vocab_size:
        raise ModelError(
            f"model {source.name!r} has a vocabulary of {vocab} tokens, fewer than the {tokenizer.vocab_size}"
            f" of its tokenizer: ids from {vocab} on would fall past its embeddings"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < seq_len:
        raise ModelError(
            f"model {source.name!r} has {positions} positions, fewer than the run's sequence length"
            f" {seq_len} (--seq-len)"
        )


def build_model(source: ModelSource, *, seed: int) -> torch.nn.Module:
    """Instantiate the model in fp32: the folder's weights when it has them, else seeded random ones."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if source.weights_dir is None:
            return AutoModelForCausalLM.from_config(hf_config(source), dtype=torch.float32)
        try:
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                source.weights_dir,
                dtype=torch.float32,
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
                ignore_mismatched_sizes=True,  # reported in ``info``, refused below in one line
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
            raise ModelError(f"the weights of model {source.name!r} do not load: {e}") from None
    model, info = loaded
    absent = [*info.get("missing_keys", ()), *(_key(k) for k in info.get("mismatched_keys", ()))]
    if absent:
        raise ModelError(
            f"the weights of model {source.name!r} do not fit its config.json: {len(absent)} tensors are"
            f" missing or of another shape ({', '.join(sorted(absent)[:3])}{', ...' if len(absent) > 3 else ''})"
        )
    return model


def _key(mismatch: Any) -> str:
    """The tensor name of a ``mismatched_keys`` entry (a name, or a tuple that starts with it)."""
    return str(mismatch[0] if isinstance(mismatch, tuple) else mismatch)


def companion_files(source: ModelSource, tokenizer: ModelTokenizer) -> dict[str, bytes]:
    """The tokenizer files and ``generation_config.json`` a checkpoint of ``source`` carries, so that
    it is a complete model folder: the folder's own bytes where it has them, the byte-level
    tokenizer's otherwise, and a generation config naming the end-of-sequence id where it has none."""
    folder = source.folder
    names = tokenizer_file_names(folder) if folder is not None else []
    files = (
        read_companion_files(folder, names) if folder is not None and names else dict(byte_tokenizer_files())
    )
    if folder is not None and (folder / GENERATION_CONFIG_FILE).is_file():
        files.update(read_companion_files(folder, [GENERATION_CONFIG_FILE]))
    else:
        generation: dict[str, Any] = {"eos_token_id": tokenizer.eos_id}
        if tokenizer.bos_id is not None:
            generation["bos_token_id"] = tokenizer.bos_id
        files[GENERATION_CONFIG_FILE] = json.dumps(generation, sort_keys=True, separators=(",", ":")).encode()
    return files
