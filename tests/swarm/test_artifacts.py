"""A volunteer needs only ``--peer``: the founder's model folder and data, which nobody else has,
reach the joiner as the run's artifacts, fetched by the hashes the run spec names, kept in its data
folder across restarts."""

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
    """The founder's model folder reaches b as an artifact; with the founder gone, c fetches it from b,
    and the founder's copy of the embedded corpus too (c's own differs, as another Python's would);
    b restarted from its data folder fetches nothing (bytes counted) and agrees with c on x'."""
    model = tmp_path / "founder" / "my-model"
    _pretrained_folder(model)
    a = swarm.start("a", "--run-id", "finetune", "--model", str(model), *COMMON, "--until-round", "30")
    peer = swarm.first_maddr(a)
    a.wait_for(lambda s: s.get("state") == "training", timeout_s=120, what="training")
    model.rename(tmp_path / "founder" / "moved")  # the founder's path now names nothing, anywhere
    b_home = tmp_path / "b-home"
    b = swarm.start("b", "--peer", peer, *COMMON, "--until-round", "6", home=b_home)
    b.wait_for(lambda s: s.get("round", 0) >= 2, timeout_s=180, what="two rounds with the founder")
    assert "fetched the run's model artifact" in b.log.read_text()
    kill_groups([a.process])  # the founder is gone: the member that fetched the artifact serves it
    # c reads less of its standard library than the founder did: its corpus differs, as on another
    # Python; it trains on the founder's bytes, fetched from b (which held its own, identical copy).
    c = swarm.start("c", "--peer", swarm.first_maddr(b), *COMMON, "--max-data-bytes", "3000000",
                    "--until-round", "10")  # fmt: skip
    assert b.wait_exit(300) == 0, b.log_tail()
    first = b.summary()
    assert first["artifact_bytes_fetched"]["model"] > 0, first["artifact_bytes_fetched"]
    # b again, from its data folder: its identity, its resume state, the artifacts it holds.
    b2 = swarm.start("b2", "--peer", swarm.first_maddr(c), *COMMON, "--until-round", "10", home=b_home)
    assert b2.wait_exit(300) == 0, b2.log_tail()
    assert c.wait_exit(300) == 0, c.log_tail()
    log_c, log_b2 = c.log.read_text(), b2.log.read_text()
    assert "fetched the run's model artifact" in log_c and "fetching the founder's" in log_c
    sb, sb2, sc = first, b2.summary(), c.summary()
    assert sc["artifact_bytes_fetched"]["data"] > 0, sc["artifact_bytes_fetched"]
    assert sb2["artifact_bytes_fetched"] == {"model": 0}, sb2["artifact_bytes_fetched"]
    assert "held here: nothing to fetch" in log_b2 and "resumed from" in log_b2
    assert sb2["peer_id"] == sb["peer_id"], "the data folder keeps the identity"
    for one, other in ((sb, sc), (sb2, sc)):
        shared = set(_digests(one)) & set(_digests(other))
        assert shared, (one["history"], other["history"])
        for round_id in shared:
            assert _digests(one)[round_id] == _digests(other)[round_id], f"x' differs after round {round_id}"
    # What b keeps: the founder's files, verified.
    (run_folder,) = (b_home / "runs").iterdir()
    held = {
        json.loads((p / "manifest.json").read_text())["kind"]: p
        for p in (run_folder / "checkpoints" / "artifacts").iterdir()
        if not p.name.startswith(".")
    }
    assert set(held) == {"model", "data"}  # the corpus as its own copy, to serve
    kept = json.loads((held["model"] / "manifest.json").read_text())
    assert {f["name"] for f in kept["files"]} == {
        "config.json",
        "model.safetensors",
        "generation_config.json",
    }
    moved = tmp_path / "founder" / "moved"
    assert (held["model"] / "model.safetensors").read_bytes() == (moved / "model.safetensors").read_bytes()


def test_volunteers_with_only_peer_fine_tune_the_founders_model_on_its_tokenized_data(
    swarm: Swarm, tmp_path: Path
) -> None:
    """Issue 30's scenario: the founder has, in a folder nobody else has, a Llama-style model with a BPE
    tokenizer trained here and a JSONL data set (its field ``body``: text, and chat turns rendered
    with the tokenizer's template). Two volunteers with only --peer fetch both (the data as the
    founder's token ids), train, agree with it on x' in every shared round; the eval loss falls;
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
                    out.write(json.dumps({"body": block}) + "\n")
            chat = [
                {"role": "user", "content": f"What is {path.name}?"},
                {"role": "assistant", "content": "A module."},
            ]
            out.write(json.dumps({"body": chat}) + "\n")
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
        "a", "--run-id", "tuned", "--model", str(model), "--data", str(founder / "train.jsonl"),
        "--data-field", "body", *args,
    )  # fmt: skip
    peer = swarm.first_maddr(a)
    a.wait_for(lambda s: s.get("state") == "training", timeout_s=180, what="training")
    founder.rename(tmp_path / "gone")  # nothing of the founder's is at its paths any more
    b = swarm.start("b", "--peer", peer, *args, home=tmp_path / "b-home")
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
        assert str(founder) not in log, "the run names its artifacts, never the founder's paths"
    summaries = [n.summary() for n in (a, b, c)]
    digests = [_digests(s) for s in summaries]
    for other in digests[1:]:
        shared = set(digests[0]) & set(other)
        assert len(shared) >= 2 and all(digests[0][r] == other[r] for r in shared), (digests[0], other)
    evals = [h["eval_loss"] for h in summaries[0]["history"] if h.get("eval_loss") is not None]
    assert len(evals) >= 2 and evals[-1] < evals[0], evals
    # b trained on the founder's token ids: its copy of the shards holds the chat turns as the model's
    # template renders them.
    import numpy as np
    from transformers import AutoTokenizer

    (shards,) = [p.parent for p in (tmp_path / "b-home").glob("runs/*/checkpoints/artifacts/*/index.json")]
    tokens = np.concatenate([np.load(f).reshape(-1) for f in sorted(shards.glob("*.npy"))])
    text = AutoTokenizer.from_pretrained(str(out)).decode(tokens.tolist())
    assert "<|user|>What is " in text and "<|assistant|>A module.<|end|>" in text
    from transformers import pipeline

    generate = pipeline("text-generation", model=str(out), device="cpu")
    text = generate("def ", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("def "), text
