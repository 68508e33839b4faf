"""Checkpoints with real node processes: members publish identical checkpoints; a node resumes exactly."""

from __future__ import annotations

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
    assert "belongs to run 'resume'" in other.log_tail()


def test_members_publish_the_same_checkpoint_and_serve_it(swarm: Swarm) -> None:
    args = ["--run-id", "ckpt", "--min-group", "2", "--until-round", "4", "--checkpoint-every", "2", *COMMON]
    a = swarm.start("a", *args)
    b = swarm.start("b", "--peer", swarm.first_maddr(a), *args)
    assert a.wait_exit(240) == 0, a.log_tail()
    assert b.wait_exit(240) == 0, b.log_tail()
    ca, cb = a.summary()["checkpoints"], b.summary()["checkpoints"]
    assert [c["round"] for c in ca] == [c["round"] for c in cb] == [2, 4]
    assert ca == cb, "members at the same round write byte-identical checkpoints (one manifest hash)"
