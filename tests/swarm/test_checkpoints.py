"""Checkpoints with real node processes: members publish identical checkpoints; a node resumes exactly."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.swarm.conftest import Swarm, make_identity

pytestmark = pytest.mark.swarm

COMMON = ["--join-grace", "20", "--eval-every", "1000", "--num-shards", "8", "--local-steps", "2"]


def test_resuming_from_the_resume_state_equals_training_uninterrupted(swarm: Swarm, tmp_path: Path) -> None:
    identity = tmp_path / "id.key"
    make_identity(identity)
    state = tmp_path / "state"
    first = swarm.start("first", "--run-id", "resume", "--until-round", "3", "--resume", str(state), *COMMON,
                        identity=identity)  # fmt: skip
    assert first.wait_exit(240) == 0, first.log_tail()
    assert (state / "resume.pt").is_file()
    second = swarm.start("second", "--run-id", "resume", "--until-round", "6", "--resume", str(state), *COMMON,
                         identity=identity)  # fmt: skip
    assert second.wait_exit(240) == 0, second.log_tail()
    assert "resumed from" in second.log_tail(200)
    whole = swarm.start("whole", "--run-id", "resume", "--until-round", "6", *COMMON, identity=identity)
    assert whole.wait_exit(240) == 0, whole.log_tail()
    resumed, uninterrupted = second.summary(), whole.summary()
    assert resumed["round"] == uninterrupted["round"] == 6
    assert resumed["digest"] == uninterrupted["digest"], (
        "x' after resuming differs from 6 uninterrupted rounds"
    )
    assert resumed["final_step"] == uninterrupted["final_step"]
    # A resume folder of another run is refused with a clear error.
    other = swarm.start("other", "--run-id", "another", "--until-round", "1", "--resume", str(state), *COMMON)
    assert other.wait_exit(120) == 2
    assert "belongs to run 'resume." in other.log_tail()  # resume.<pin of the identity's key>


def test_members_publish_the_same_checkpoint_and_serve_it(swarm: Swarm) -> None:
    args = ["--run-id", "ckpt", "--min-group", "2", "--until-round", "4", "--checkpoint-every", "2", *COMMON]
    a = swarm.start("a", *args)
    b = swarm.start("b", "--peer", swarm.first_maddr(a), *args)
    assert a.wait_exit(240) == 0, a.log_tail()
    assert b.wait_exit(240) == 0, b.log_tail()
    ca, cb = a.summary()["checkpoints"], b.summary()["checkpoints"]
    assert [c["round"] for c in ca] == [c["round"] for c in cb] == [2, 4]
    assert ca == cb, "members at the same round write byte-identical checkpoints (one manifest hash)"


def test_pull_in_a_fresh_process_gets_the_members_exact_x_prime(swarm: Swarm, tmp_path: Path) -> None:
    import torch

    from node.trainer import causal_lm_loss
    from swarm.averaging.state import digest_of
    from swarm.data.corpus import load_corpus
    from swarm.data.sampling import eval_batches
    from swarm.models.build import build_model, resolve_model

    args = ["--run-id", "pull", "--min-group", "2", "--max-rounds", "60", "--checkpoint-every", "2",
            *COMMON[:-2], "--local-steps", "1", "--eval-every", "2"]  # fmt: skip
    a = swarm.start("a", *args, "--eval-local")
    b = swarm.start("b", "--peer", swarm.first_maddr(a), *args)

    def both_serve() -> set[int]:
        """Rounds of 4 or later whose checkpoint both members have published."""
        served = [{c["round"] for c in (n.status() or {}).get("checkpoints", [])} for n in (a, b)]
        return {r for r in served[0] & served[1] if r >= 4}

    a.wait_for(lambda _: bool(both_serve()), timeout_s=240, what="a checkpoint of round 4+ from both")
    # The newest checkpoint may be one member's only for a moment (the other publishes it a little
    # later): pull a round both serve, so that both must provide it.
    step = max(both_serve())
    out = tmp_path / "pulled"
    pulled = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--peer", swarm.first_maddr(a), "--step", str(step), "--out", str(out)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr + pulled.stdout
    assert "2 provider(s)" in pulled.stdout, pulled.stdout
    for node in (a, b):
        node.process.send_signal(signal.SIGTERM)
    assert a.wait_exit(240) == 0 and b.wait_exit(240) == 0
    info = json.loads((out / "swarm.json").read_text())
    assert info["round"] == step
    history = {h["round"]: h for h in a.summary()["history"]}
    model = build_model(resolve_model(str(out)), seed=12345)  # weights come from the folder, not the seed
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters() if p.requires_grad])
    assert digest_of(flat).hex() == history[info["round"]]["digest"], (
        "pulled tensors differ from the members' x'"
    )
    corpus = load_corpus(["stdlib"], max_bytes=64 * 1024 * 1024)
    evals = eval_batches(corpus.eval, seq_len=128, batch_size=16, num_batches=8)
    model.eval()
    with torch.no_grad():
        loss = sum(causal_lm_loss(model, batch).item() for batch in evals) / len(evals)
    assert abs(loss - history[info["round"]]["eval_loss"]) < 1e-5
    # A complete model folder: its tokenizer loads and transformers' pipeline generates from it.
    from transformers import AutoTokenizer, pipeline

    assert AutoTokenizer.from_pretrained(out)("def f(")["input_ids"] == list(b"def f(")
    generate = pipeline("text-generation", model=str(out), device="cpu")
    text = generate("def f(", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text.startswith("def f("), text
    # --eval-local: a's working model x_a was evaluated with x' every time.
    evaluated = [h for h in history.values() if h.get("eval_loss") is not None]
    assert evaluated and all(math.isfinite(h["local_eval_loss"]) for h in evaluated)


def test_a_joiner_catches_up_from_the_checkpoint_and_the_journal(swarm: Swarm) -> None:
    """C joins a cocktail run after its checkpoint of round 3: it downloads the newest checkpoint from
    the members that announced it, replays the rounds since from a journal, and then agrees with them
    round by round. (Both members publish every checkpoint, but C may look in the moment between
    the two announcements: the pull test asserts two providers on a round both already serve.)"""
    args = ["--run-id", "catchup", "--codec", "cocktail", "--min-group", "2", "--checkpoint-every", "3",
            *COMMON[:-2], "--local-steps", "1"]  # fmt: skip
    a = swarm.start("a", *args)
    b = swarm.start("b", "--peer", swarm.first_maddr(a), *args)
    for node in (a, b):
        node.wait_for(lambda s: s["round"] >= 5, timeout_s=240, what="round 5")
    c = swarm.start("c", "--peer", swarm.first_maddr(a), *args, "--max-rounds", "3")
    assert c.wait_exit(300) == 0, c.log_tail()
    for node in (a, b):
        node.process.send_signal(signal.SIGTERM)
    for node in (a, b):
        assert node.wait_exit(120) == 0, node.log_tail()
    sa, sb, sc = a.summary(), b.summary(), c.summary()
    catch_up = sc["catch_up"]
    assert catch_up["source"] == "checkpoint+journal", (catch_up, c.log_tail(60))
    assert catch_up["checkpoint_round"] >= 3
    names = {sa["peer_id"], sb["peer_id"]}
    assert catch_up["providers"] == len(catch_up["provider_names"]) >= 1, catch_up
    assert set(catch_up["provider_names"]) <= names, (catch_up["provider_names"], names)
    for summary in (sa, sb):  # the checkpoint C took is the one every member wrote and serves
        published = {c["round"]: c["manifest"] for c in summary["checkpoints"]}
        assert published.get(catch_up["checkpoint_round"]) == catch_up["checkpoint_manifest"]
    assert catch_up["round"] >= catch_up["checkpoint_round"] + catch_up["replayed_rounds"]
    digests_a = {h["round"]: h["digest"] for h in sa["history"]}
    digests_c = {h["round"]: h["digest"] for h in sc["history"]}
    assert len(digests_c) == 3 and min(digests_c) > catch_up["round"]
    for round_id, digest in digests_c.items():
        assert digests_a[round_id] == digest, f"round {round_id}: the joiner's x' differs"
