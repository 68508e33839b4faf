"""Checkpoint files: canonical bytes, a round trip to x', and loading with safetensors and transformers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from swarm.checkpoint.bounds import GIB, check_plausible
from swarm.checkpoint.files import (
    MODEL_FILE,
    CheckpointFolderError,
    checkpoint_files,
    read_checkpoint_folder,
)
from swarm.checkpoint.manifest import ManifestError, build_manifest
from swarm.models.build import build_model, resolve_model
from tests.unit.test_records import SPEC


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_files_are_canonical_round_trip_and_load_with_transformers(tmp_path: Path) -> None:
    source = resolve_model("tiny")
    model = build_model(source, seed=0)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    values = torch.randn(n)
    kwargs = dict(
        model_config=source.config, spec=SPEC, run_id="r", round=3, global_step=30, swarm_samples=480
    )
    files = checkpoint_files(model=model, values=values, **kwargs)
    assert files == checkpoint_files(model=build_model(source, seed=1), values=values.clone(), **kwargs), (
        "the same x' gives the same bytes, whatever the model object held"
    )
    _write(tmp_path / "ck", files)
    back, info = read_checkpoint_folder(tmp_path / "ck", build_model(source, seed=2))
    assert torch.equal(back, values) and info["round"] == 3 and info["spec"]["codec"] == SPEC.codec

    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "ck" / MODEL_FILE))) == {name for name, _ in model.named_parameters()}
    loaded = build_model(resolve_model(str(tmp_path / "ck")), seed=99)  # transformers' from_pretrained
    flat = torch.cat([p.detach().reshape(-1) for p in loaded.parameters() if p.requires_grad])
    assert torch.equal(flat, values)


def test_broken_checkpoint_folders_are_clear_errors(tmp_path: Path) -> None:
    model = build_model(resolve_model("tiny"), seed=0)
    with pytest.raises(CheckpointFolderError, match="not a swarm checkpoint"):
        read_checkpoint_folder(tmp_path, model)
    other = build_model(resolve_model("small"), seed=0)
    n = sum(p.numel() for p in other.parameters())
    files = checkpoint_files(model=other, values=torch.zeros(n), model_config={}, spec=SPEC, run_id="r", round=1,
                             global_step=1, swarm_samples=1)  # fmt: skip
    _write(tmp_path / "small", files)
    with pytest.raises(CheckpointFolderError, match="another shape"):
        read_checkpoint_folder(tmp_path / "small", model)


def test_a_real_checkpoint_is_plausible_for_its_parameter_count_and_only_for_it() -> None:
    """The bounds a download checks hold for the files a member writes: the tiny model's, and a
    LoRA-like x' whose second half is zeros (its zero chunks repeat)."""
    source = resolve_model("tiny")
    model = build_model(source, seed=0)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for values in (torch.randn(n), torch.cat([torch.randn(n // 2), torch.zeros(n - n // 2)])):
        files = checkpoint_files(model=model, values=values, model_config=source.config,
                                 spec=replace(SPEC, param_count=n), run_id="r", round=0, global_step=0,
                                 swarm_samples=0)  # fmt: skip
        manifest = build_manifest(files, run_id="r", round=0, global_step=0, chunk_size=4096)
        check_plausible(manifest, param_count=n, max_bytes=GIB)
        # A count the file is too small for; a smaller one passes within the header's allowance.
        for wrong in (2 * n, n + 10_000):
            with pytest.raises(ManifestError, match="cannot hold"):
                check_plausible(manifest, param_count=wrong, max_bytes=GIB)
    assert len({c.sha256 for c in manifest.chunks()}) < len(manifest.chunks()), "zero chunks repeat"
