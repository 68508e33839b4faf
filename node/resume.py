"""A node's own resume state: what ``swarm-node join --resume DIR`` restores after a restart.

Unlike the swarm checkpoint (x' and the run's settings, the same bytes on every member), this is
private to one node: its local model x_i (so x_i - x', the work not yet averaged in, survives), its
AdamW state, its step and sample counters, its position in the run's data (``node.data``: which
rows of its shards it has trained this epoch; the byte corpus needs none), the owner-side error buffers of the shards it owns, torch's RNG
state, and x' with its round. It is written atomically (temporary file, then rename), so a crash
while writing leaves the previous state intact.

    <dir>/resume.pt    torch.save of the dict below (plain tensors and numbers)
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from swarm.averaging.state import GlobalCopy
from swarm.compression.codecs import all_finite
from swarm.dht.records import RunSpec

RESUME_FILE = "resume.pt"
RESUME_FORMAT = 1


class ResumeError(RuntimeError):
    """A resume state that cannot be used for this run or model."""


def save_resume_state(
    folder: Path,
    *,
    run_id: str,
    spec: RunSpec,
    local: torch.Tensor,
    optimizer: dict[str, Any],
    copy: GlobalCopy,
    steps: int,
    samples: int,
    owner_error: dict[int, torch.Tensor],
    counters: dict[str, int],
    data_position: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "format": RESUME_FORMAT,
        "run_id": run_id,
        "spec": asdict(spec),
        "local": local.clone(),
        "optimizer": optimizer,
        "global": copy.values.clone(),
        "round": copy.round,
        "global_step": copy.global_step,
        "swarm_samples": copy.swarm_samples,
        "steps": steps,
        "samples": samples,
        "owner_error": {int(k): v.clone() for k, v in owner_error.items()},
        "rng": torch.get_rng_state(),
        "data_position": data_position,
        **counters,
    }
    path = folder / RESUME_FILE
    tmp = folder / f".{RESUME_FILE}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_resume_state(folder: Path, *, run_id: str, num_elements: int) -> dict[str, Any] | None:
    """The saved state, checked against this run and model; None when ``folder`` holds none yet."""
    path = folder / RESUME_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load's errors on a truncated or foreign file: the zip reader's RuntimeError, pickle's
    # (weights_only refuses anything but tensors and plain containers), and I/O errors.
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise ResumeError(f"{path}: not a readable resume state ({e})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ResumeError(f"{path}: not a version-{RESUME_FORMAT} resume state")
    if state["run_id"] != run_id:
        raise ResumeError(f"{path} belongs to run {state['run_id']!r}, not {run_id!r}")
    for name in ("local", "global"):
        if state[name].numel() != num_elements:
            raise ResumeError(
                f"{path}: {name} holds {state[name].numel()} values, the model has {num_elements}"
            )
    if not (all_finite(state["local"]) and all_finite(state["global"])):
        raise ResumeError(f"{path}: holds NaN or Inf values")
    return state
