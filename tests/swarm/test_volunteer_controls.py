"""What a volunteer controls on their own node, with real processes: pause and resume (a signal, or
``swarm-node pause|resume``) without stalling the swarm's rounds, and an upload cap."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.swarm

COMMON = ["--run-id", "volunteer", "--round-period", "1", "--no-adaptive-rounds", "--min-group", "2",
          "--join-grace", "20", "--eval-every", "1000", "--num-shards", "8"]  # fmt: skip


def _control(command: str, node) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "node", command, "--status-file", str(node.status_path), "--timeout", "30"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_paused_node_stops_training_but_the_rounds_go_on_and_it_resumes(swarm: Swarm) -> None:
    a = swarm.start("a", *COMMON)
    b = swarm.start("b", *COMMON, "--peer", swarm.first_maddr(a), "--max-upload-mbit", "20")
    b.wait_for(lambda s: s["rounds_completed"] >= 2, timeout_s=180, what="two rounds")

    paused = _control("pause", b)
    assert paused.returncode == 0, paused.stderr
    at_pause = b.wait_for(lambda s: s["state"] == "paused", timeout_s=10, what="the paused state")
    # Rounds go on with the paused node in them (it still owns shards): both nodes advance.
    round_then = at_pause["round"]
    later = b.wait_for(lambda s: s["round"] >= round_then + 4, timeout_s=120, what="rounds while paused")
    a.wait_for(lambda s: s["round"] >= round_then + 4, timeout_s=60, what="the other node's rounds")
    # A step in flight at the signal may finish; none starts afterwards.
    assert later["step"] <= at_pause["step"] + 1, (at_pause["step"], later["step"])

    resumed = _control("resume", b)
    assert resumed.returncode == 0, resumed.stderr
    b.wait_for(lambda s: s["state"] == "training", timeout_s=10, what="the training state")
    b.wait_for(lambda s: s["step"] >= later["step"] + 3, timeout_s=120, what="steps after resuming")

    for node in (a, b):
        node.process.send_signal(signal.SIGTERM)
    for node in (a, b):
        assert node.wait_exit(120) == 0, node.log_tail()
    summaries = [a.summary(), b.summary()]
    common = set(h["round"] for h in summaries[0]["history"]) & set(
        h["round"] for h in summaries[1]["history"]
    )
    assert common
    last = max(common)
    digests = [{h["round"]: h["digest"] for h in s["history"]}[last] for s in summaries]
    assert digests[0] == digests[1], "the paused node's x' drifted from the swarm's"
    assert "paused: no local training" in b.log.read_text()


def test_pause_names_a_node_that_is_not_running(tmp_path) -> None:  # type: ignore[no-untyped-def]
    status = tmp_path / "gone.status.json"
    status.write_text('{"state": "training", "pid": 999999999}')
    result = subprocess.run(
        [sys.executable, "-m", "node", "pause", "--status-file", str(status)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "not running" in result.stderr
