"""The files of a Hugging Face model folder, as Swarm reads them and as its checkpoints carry them.

    config.json                      the configuration (``AutoConfig``); every folder has one
    model.safetensors                the weights, or shards listed by model.safetensors.index.json
    tokenizer files                  ``TOKENIZER_FILE_CAPS``: tokenizer.json, tokenizer_config.json, ...
    generation_config.json           how ``generate`` and ``pipeline`` decode (end-of-sequence id, ...)

Weights are read from safetensors only: a pickle (``pytorch_model.bin``, ``*.pt``) can run code when
loaded, and a run's model folder comes from a stranger. ``COMPANION_FILE_CAPS`` is what a swarm
checkpoint carries besides its weights, config and swarm.json, with the largest size each file may
have (a download's bounds are checked against it before anything is written).

Stdlib only: the checkpoint bounds, which the light client and the coordinator import, read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weights in Python's pickle format, which Swarm never loads."""

MIB = 1 << 20
TOKENIZER_FILE_CAPS: dict[str, int] = {
    # A fast tokenizer whole: 2-20 MB for vocabularies of 32k-256k entries (Gemma's is ~33 MB).
    "tokenizer.json": 64 * MIB,
    "tokenizer_config.json": 16 * MIB,  # some list every added token (~1 MB for Gemma)
    "special_tokens_map.json": 1 * MIB,
    "added_tokens.json": 16 * MIB,
    "chat_template.jinja": 1 * MIB,
    "chat_template.json": 1 * MIB,
    # The files of slow tokenizers: BPE (GPT-2), WordPiece, SentencePiece (Llama 2, Mistral).
    "vocab.json": 16 * MIB,
    "merges.txt": 16 * MIB,
    "vocab.txt": 16 * MIB,
    "tokenizer.model": 16 * MIB,
}
"""A tokenizer's files (those a folder has), with the largest size Swarm accepts for each."""
COMPANION_FILE_CAPS: dict[str, int] = {**TOKENIZER_FILE_CAPS, GENERATION_CONFIG_FILE: 1 * MIB}
"""What a checkpoint carries of the run's model folder besides weights and config, with caps."""


class ModelError(ValueError):
    """A model that cannot be trained as given; the message says what to change."""


def tokenizer_file_names(folder: Path) -> list[str]:
    """The tokenizer files ``folder`` holds, in name order."""
    return sorted(name for name in TOKENIZER_FILE_CAPS if (folder / name).is_file())


def find_weights(folder: Path) -> Path | None:
    """The file transformers loads ``folder``'s weights from (the shard index for sharded weights),
    None for a folder without weights; ModelError for weights Swarm will not load."""
    for name in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE):
        if (folder / name).is_file():
            return folder / name
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise ModelError(
            f"{folder} holds its weights as {pickles[0]}, a pickle that can run code when loaded:"
            " Swarm loads safetensors only (convert them: load the model with transformers and"
            " save_pretrained it, which writes model.safetensors)"
        )
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    if others:
        raise ModelError(
            f"{folder} holds {others[0]} but no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}: not the weights"
            " of a transformers model folder (an adapter needs its base model merged in first)"
        )
    return None


def read_companion_files(folder: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of ``names`` (companion files of ``folder``), each checked against its cap."""
    files = {}
    for name in names:
        path = folder / name
        size = path.stat().st_size
        if size > COMPANION_FILE_CAPS[name]:
            raise ModelError(
                f"{path} is {size / MIB:.1f} MiB, over the {COMPANION_FILE_CAPS[name] / MIB:.0f} MiB"
                " a swarm checkpoint may carry of it"
            )
        files[name] = path.read_bytes()
    return files


def files_hash(files: Mapping[str, bytes]) -> str:
    """A hash (hex sha256) of named files: their names and contents, in name order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return digest.hexdigest()
