"""``swarm-node status`` against a real node whose rounds are short (one local step each): the
answering node's own entry is where its x' is now, the others' rounds are labelled heartbeats."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.swarm.conftest import Swarm

ASK = """
import json, sys
from swarm.light.client import status
from swarm.peer_names import peer_name
answer = status(sys.argv[1], timeout_s=30)
print(json.dumps({"round": answer.round, "members": {peer_name(m.peer_id): m.round for m in answer.members}}))
"""


def test_status_gives_the_answering_nodes_own_round(swarm: Swarm) -> None:
    node = swarm.start("a", "--run-id", "status", "--local-steps", "1", "--max-steps", "100000")
    maddr = swarm.first_maddr(node)
    node.wait_for(lambda s: s["round"] >= 3, timeout_s=240, what="round 3")
    name = maddr.rsplit("/p2p/", 1)[1]
    asked = subprocess.run([sys.executable, "-c", ASK, maddr], capture_output=True, text=True, timeout=120)
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["members"][name] == answer["round"], answer  # not its heartbeat's, rounds behind
    printed = subprocess.run(
        [sys.executable, "-m", "node", "status", "--peer", maddr, "--timeout", "30"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert f"the answering node {name}: round " in printed.stdout
    assert f"{name}  round " in printed.stdout and "(the answering node)" in printed.stdout
