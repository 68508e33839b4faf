"""The swarm checkpoint's files, byte-identical on every member holding the same x' at the same round.

    model.safetensors  x' as named fp32 tensors (the model's unique parameters), written here in a
                       canonical layout: tensors in name order, header JSON with sorted keys, no
                       metadata, so no library version or hash-map order changes a byte
    config.json        the model's configuration (transformers format), sorted keys
    swarm.json         run id, round, global step, samples, and the run spec a joiner needs
    tokenizer files    the run's tokenizer (tokenizer.json, tokenizer_config.json, ...: the run's
                       model folder's own bytes, or the byte-level tokenizer of a byte-level model)
    generation_config.json   the model folder's, or one naming the tokenizer's end-of-sequence id

The tokenizer files and generation config come from ``swarm.models.build.companion_files``; the
names a checkpoint may carry, and their caps, are ``swarm.models.folder.COMPANION_FILE_CAPS``.
A checkpoint folder is a complete model folder: it loads with
``safetensors.torch.load_file(folder / "model.safetensors")``, with
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained``,
and with ``pipeline("text-generation", model=folder)``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from swarm.checkpoint.bounds import CONFIG_FILE, MODEL_FILE, SWARM_FILE
from swarm.compression.codecs import all_finite
from swarm.dht.records import RunSpec
from swarm.models.folder import COMPANION_FILE_CAPS


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """fp32 tensors in the safetensors format, laid out canonically (name order, no metadata)."""
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu", torch.float32).contiguous()
        blob = tensor.numpy().astype("<f4", copy=False).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    head = canonical_json(header)
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def named_views(model: torch.nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut the flat vector ``flat`` [n] into the model's unique parameters, by name (trainer order)."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, p in model.named_parameters():  # unique parameters, in the order LocalTrainer flattens
        if not p.requires_grad:
            continue
        out[name] = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    if offset != flat.numel():
        raise ValueError(f"vector of {flat.numel()} elements for a model of {offset}")
    return out


def checkpoint_files(
    *,
    model: torch.nn.Module,
    values: torch.Tensor,
    model_config: Mapping[str, Any],
    spec: RunSpec,
    run_id: str,
    round: int,
    global_step: int,
    swarm_samples: int,
    model_files: Mapping[str, bytes] | None = None,
) -> dict[str, bytes]:
    """The checkpoint's files: x' (``values``, flat in ``model``'s parameter order), the model's
    configuration, the round's counters and spec, and ``model_files``, the run's tokenizer files and
    generation config (``swarm.models.build.companion_files``), written as they are."""
    extra = dict(model_files or {})
    unknown = sorted(set(extra) - set(COMPANION_FILE_CAPS))
    if unknown:
        raise ValueError(f"a checkpoint carries no file named {unknown[0]!r} of the model's folder")
    swarm = {
        "format": 1,
        "run_id": run_id,
        "round": round,
        "global_step": global_step,
        "swarm_samples": swarm_samples,
        "spec": asdict(spec),
    }
    return {
        MODEL_FILE: safetensors_bytes(named_views(model, values)),
        CONFIG_FILE: canonical_json(dict(model_config)),
        SWARM_FILE: canonical_json(swarm),
        **extra,
    }


class CheckpointFolderError(ValueError):
    """A folder that is not a usable swarm checkpoint for this model."""


def read_checkpoint_folder(folder: Path, model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
    """x' (flat, in the model's parameter order) and ``swarm.json`` of a checkpoint folder."""
    from safetensors.torch import load_file

    try:
        info = json.loads((folder / SWARM_FILE).read_text())
        tensors = load_file(str(folder / MODEL_FILE))
    except (OSError, ValueError) as e:
        raise CheckpointFolderError(f"{folder} is not a swarm checkpoint folder: {e}") from None
    parts = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tensor = tensors.get(name)
        if tensor is None or tuple(tensor.shape) != tuple(p.shape):
            raise CheckpointFolderError(f"{folder}: tensor {name} is missing or has another shape")
        parts.append(tensor.reshape(-1).to(torch.float32))
    values = torch.cat(parts)
    if not all_finite(values):
        raise CheckpointFolderError(f"{folder}: holds NaN or Inf values")
    return values, info
