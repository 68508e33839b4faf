"""Checkpoint files: canonical bytes, a round trip to x', loading with safetensors and transformers,
and a complete model folder (tokenizer, generation config) that ``pipeline`` generates from."""

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
from swarm.models.build import build_model, companion_files, load_tokenizer, resolve_model
from tests.unit.test_models import TINY_CONFIGS, model_folder
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


def _greedy(model: torch.nn.Module, ids: list[int], *, steps: int, eos: int) -> list[int]:
    """The tokens ``model`` picks one at a time after ``ids`` (stopping after ``eos``)."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + out])).logits
            out.append(int(logits[0, -1].argmax()))
            if out[-1] == eos:
                break
    return out


@pytest.mark.parametrize("model_name", [*TINY_CONFIGS, "tiny"])
def test_a_pulled_checkpoint_is_a_model_folder_that_generates(tmp_path: Path, model_name: str) -> None:
    """Models of each common architecture with a BPE tokenizer trained here (a Llama with its
    weights, the others from the seed), and the byte-level preset: the checkpoint's folder loads with
    AutoTokenizer and pipeline, and generates what x' predicts."""
    from transformers import AutoTokenizer, pipeline

    if model_name == "tiny":
        name = "tiny"
    else:
        name = str(model_folder(tmp_path / "founder", model_type=model_name, weights=model_name == "llama"))
    source = resolve_model(name)
    tokenizer = load_tokenizer(source)
    model = build_model(source, seed=0)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    values = torch.cat([p.detach().reshape(-1) for p in model.parameters()]) + 0.05 * torch.randn(
        n, generator=torch.Generator().manual_seed(5)
    )
    model_files = companion_files(source, tokenizer)
    files = checkpoint_files(model=model, values=values, model_config=source.config, spec=SPEC, run_id="r",
                             round=4, global_step=40, swarm_samples=640, model_files=model_files)  # fmt: skip
    _write(tmp_path / "pulled", files)
    pulled = tmp_path / "pulled"
    assert set(files) >= {"tokenizer.json", "tokenizer_config.json", "generation_config.json", MODEL_FILE}

    loaded = AutoTokenizer.from_pretrained(pulled)
    prompt = "Members come and go; a round"
    ids = tokenizer.encode([prompt])[0]
    assert loaded(prompt, add_special_tokens=False).input_ids == ids
    assert loaded.eos_token_id == tokenizer.eos_id
    assert load_tokenizer(resolve_model(str(pulled))).content_hash == tokenizer.content_hash

    generator = pipeline("text-generation", model=str(pulled))
    assert generator.model.generation_config.eos_token_id == tokenizer.eos_id
    read_back, _ = read_checkpoint_folder(pulled, model)
    assert torch.equal(read_back, values)
    torch.nn.utils.vector_to_parameters(values, model.parameters())  # the model now holds x'
    model.eval()
    expected = _greedy(model, ids, steps=6, eos=tokenizer.eos_id)
    text = generator(prompt, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert text == loaded.decode(expected, skip_special_tokens=True)
    if model_name != "tiny":
        assert (
            loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
            == "<|user|>hi<|end|>\n"
        )


def test_a_checkpoint_carries_no_file_but_the_model_folder_s() -> None:
    model = build_model(resolve_model("tiny"), seed=0)
    n = sum(p.numel() for p in model.parameters())
    for name in ("pytorch_model.bin", "../tokenizer.json", "modeling.py"):
        with pytest.raises(ValueError, match="carries no file named"):
            checkpoint_files(model=model, values=torch.zeros(n), model_config={}, spec=SPEC, run_id="r",
                             round=1, global_step=1, swarm_samples=1, model_files={name: b"x"})  # fmt: skip
