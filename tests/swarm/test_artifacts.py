"""A volunteer needs only ``--peer``: the founder's model folder, which nobody else has, reaches the
joiner as the run's model artifact, fetched by the hash the run spec names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.processes import kill_groups
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.swarm

COMMON = ["--join-grace", "20", "--eval-every", "1000", "--num-shards", "8", "--local-steps", "2",
          "--min-group", "2"]  # fmt: skip


def _pretrained_folder(path: Path) -> None:
    """A small Llama with weights (safetensors), as a founder fine-tuning it has it on disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    torch.manual_seed(7)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)


def _digests(summary: dict) -> dict[int, str]:
    return {entry["round"]: entry["digest"] for entry in summary["history"]}


def test_a_joiner_with_only_peer_fetches_the_founders_model_even_once_the_founder_is_gone(
    swarm: Swarm, tmp_path: Path
) -> None:
    model = tmp_path / "founder" / "my-model"
    _pretrained_folder(model)
    a = swarm.start("a", "--run-id", "finetune", "--model", str(model), *COMMON, "--until-round", "30")
    peer = swarm.first_maddr(a)
    a.wait_for(lambda s: s.get("state") == "training", timeout_s=120, what="training")
    model.rename(tmp_path / "founder" / "moved")  # the founder's path now names nothing, anywhere
    b_store = tmp_path / "b" / "checkpoints"
    b = swarm.start("b", "--peer", peer, "--checkpoint-dir", str(b_store), *COMMON, "--until-round", "8")
    b.wait_for(lambda s: s.get("round", 0) >= 2, timeout_s=180, what="two rounds with the founder")
    assert "fetched the run's model artifact" in b.log.read_text()
    kill_groups([a.process])  # the founder is gone: the member that fetched the artifact serves it
    c = swarm.start("c", "--peer", swarm.first_maddr(b), *COMMON, "--until-round", "8")
    assert b.wait_exit(300) == 0, b.log_tail()
    assert c.wait_exit(300) == 0, c.log_tail()
    assert "fetched the run's model artifact" in c.log.read_text()
    sb, sc = b.summary(), c.summary()
    shared = set(_digests(sb)) & set(_digests(sc))
    assert shared, (sb["history"], sc["history"])
    for round_id in shared:
        assert _digests(sb)[round_id] == _digests(sc)[round_id], f"x' differs after round {round_id}"
    # The joiner keeps the artifact (a restart fetches nothing again): the founder's files, verified.
    (held,) = [p for p in (b_store / "artifacts").iterdir() if not p.name.startswith(".")]
    kept = json.loads((held / "manifest.json").read_text())
    assert kept["kind"] == "model"
    assert {f["name"] for f in kept["files"]} == {
        "config.json",
        "model.safetensors",
        "generation_config.json",
    }
    moved = tmp_path / "founder" / "moved"
    assert (held / "model.safetensors").read_bytes() == (moved / "model.safetensors").read_bytes()
