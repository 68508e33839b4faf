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


def test_volunteers_with_only_peer_fine_tune_the_founders_model_on_its_tokenized_data(
    swarm: Swarm, tmp_path: Path
) -> None:
    """Issue 30's scenario: the founder has, in a folder nobody else has, a Llama-style model with a BPE
    tokenizer trained here and a JSONL data set. Two volunteers with only --peer fetch both (the data
    as the founder's token ids), train, agree with it on x' in every shared round; the eval loss falls;
    the pulled checkpoint generates text through transformers' pipeline."""
    import signal
    import subprocess
    import sys
    import sysconfig

    from tests.unit.test_models import model_folder

    founder = tmp_path / "founder"
    model = model_folder(founder / "my-model")
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("[a-c]*.py"))[:40]
    with open(founder / "train.jsonl", "w") as out:
        for path in sources:
            for block in path.read_text(errors="replace").split("\n\n"):
                if block.strip():
                    out.write(json.dumps({"text": block}) + "\n")
    args = [
        *COMMON,
        "--seq-len",
        "64",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
        "--until-round",
        "400",
    ]
    a = swarm.start(
        "a", "--run-id", "tuned", "--model", str(model), "--data", str(founder / "train.jsonl"), *args
    )
    peer = swarm.first_maddr(a)
    a.wait_for(lambda s: s.get("state") == "training", timeout_s=180, what="training")
    founder.rename(tmp_path / "gone")  # nothing of the founder's is at its paths any more
    b = swarm.start("b", "--peer", peer, *args)
    c = swarm.start("c", "--peer", peer, *args)
    b.wait_for(lambda s: s.get("round", 0) >= 6, timeout_s=300, what="round 6")
    out = tmp_path / "pulled"
    pulled = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--peer", swarm.first_maddr(b), "--out", str(out)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr + pulled.stdout
    for node in (a, b, c):
        node.process.send_signal(signal.SIGTERM)
    for node in (a, b, c):
        assert node.wait_exit(300) == 0, node.log_tail()
    for node in (b, c):
        log = node.log.read_text()
        assert "fetched the run's model artifact" in log and "fetched the run's data artifact" in log
    summaries = [n.summary() for n in (a, b, c)]
    digests = [_digests(s) for s in summaries]
    for other in digests[1:]:
        shared = set(digests[0]) & set(other)
        assert len(shared) >= 2 and all(digests[0][r] == other[r] for r in shared), (digests[0], other)
    evals = [h["eval_loss"] for h in summaries[0]["history"] if h.get("eval_loss") is not None]
    assert len(evals) >= 2 and evals[-1] < evals[0], evals
    from transformers import pipeline

    generate = pipeline("text-generation", model=str(out), device="cpu")
    text = generate("def ", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("def "), text
