"""What ``swarm-node status`` prints: the answering node's round as its own, the other members'
rounds as those of their last heartbeat. Before, it printed "round 12" and under it members "round
8" and "round 7" (heartbeats written seconds earlier) as if of one moment."""

from __future__ import annotations

import os

from node.light_cli import describe_status
from swarm.peer_names import peer_name
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as pb


def test_member_rounds_read_as_heartbeats_and_the_answering_node_as_itself() -> None:
    answering, other, leaving = (os.urandom(34) for _ in range(3))
    answer = pb.StatusResponse(
        run_id="r", round=12, global_step=24, model="tiny", codec="cocktail",
        members=[pb.MemberInfo(peer_id=answering, round=12, global_step=24),
                 pb.MemberInfo(peer_id=other, round=8, global_step=16),
                 pb.MemberInfo(peer_id=leaving, round=7, global_step=14, leaving=True)],
    )  # fmt: skip
    lines = describe_status(answer, peer_name(answering))
    assert lines[1] == f"the answering node {peer_name(answering)}: round 12, global step 24"
    assert "last heartbeat" in lines[2] and lines[2].startswith("3 live member(s)")
    assert lines[3] == f"  {peer_name(answering)}  round 12 (the answering node)"
    assert lines[4] == f"  {peer_name(other)}  heartbeat at round 8"
    assert lines[5] == f"  {peer_name(leaving)}  heartbeat at round 7  (leaving)"
