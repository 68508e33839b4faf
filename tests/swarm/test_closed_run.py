"""A closed run with real processes: members hold credentials from the owner's key; an intruder that
ignores its own check is never admitted (its heartbeats are ignored, its joins refused) while the
members' rounds go on; an honest node without a credential stops at start with a clear message."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.auth import issue, owner_public_key
from tests.swarm.conftest import Swarm, make_identity

pytestmark = pytest.mark.swarm

COMMON = ["--run-id", "closed", "--local-steps", "2", "--min-group", "2", "--join-grace", "20",
          "--eval-every", "1000", "--num-shards", "8"]  # fmt: skip


def test_only_credentialed_peers_take_part_in_a_closed_run(swarm: Swarm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import base58

    owner = Ed25519PrivateKey.generate()
    owner_key = owner_public_key(owner)
    files = {}
    for name in ("a", "b"):
        identity = tmp_path / f"{name}.key"
        peer = make_identity(identity)
        credential = issue(owner, run_id="closed", peer_id=base58.b58decode(peer), valid_s=3600)
        (tmp_path / f"{name}.cred").write_bytes(credential.to_bytes())
        files[name] = ["--identity", str(identity), "--credential", str(tmp_path / f"{name}.cred")]

    a = swarm.start("a", *COMMON, "--run-owner", owner_key, "--max-rounds", "4", *files["a"])
    entry = swarm.first_maddr(a)
    intruder = swarm.start("intruder", *COMMON, "--peer", entry, env={"SWARM_FAULT": "ignore_auth"})
    b = swarm.start("b", *COMMON, "--peer", entry, "--max-rounds", "4", *files["b"])
    # An honest node without a credential stops at once and says what to do.
    honest = swarm.start("honest", *COMMON, "--peer", entry)
    code = honest.wait_exit(180)
    log = honest.log.read_text()
    assert code != 0 and "is closed" in log and "swarm-node credential issue" in log, log[-2000:]
    assert a.wait_exit(300) == 0, a.log_tail()
    assert b.wait_exit(120) == 0, b.log_tail()

    summaries = [a.summary(), b.summary()]
    assert all(s["rounds_completed"] >= 4 for s in summaries)
    for s in summaries:
        assert {h["group_size"] for h in s["history"]} == {2}, "someone else entered a round"
    rounds = {h["round"]: h["digest"] for h in summaries[0]["history"]}
    assert all(rounds[h["round"]] == h["digest"] for h in summaries[1]["history"] if h["round"] in rounds)
    intruder_log = intruder.log.read_text()
    assert "test hook: taking part in closed run" in intruder_log
    assert not re.search(r"round \d+ committed", intruder_log), "the intruder committed a round"
