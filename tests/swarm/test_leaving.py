"""Leaving with a signal to the whole process group, as a terminal's Ctrl-C (SIGINT) and the
systemd unit (SIGTERM) send it: the node, its DHT process and its p2pd daemon all get the signal.

The node must leave in order and exit 0 within ``LEAVE_S``, its summary written, nothing of its
group left. Before the DHT process ignored the group's signals, the node waited on it forever.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.swarm.conftest import Swarm, group_alive

LEAVE_S = 30.0
"""What the issue allows a node between the signal and its exit."""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_whole_group_leaves_in_order(swarm: Swarm, sig: signal.Signals) -> None:
    node = swarm.start("alone", "--run-id", f"leave-{sig.name.lower()}", "--max-steps", "100000")
    node.wait_for(lambda s: s["round"] >= 2, timeout_s=240, what="round 2")
    pgid = node.process.pid
    os.killpg(pgid, sig)
    signalled = time.monotonic()
    assert node.wait_exit(LEAVE_S) == 0, node.log_tail()
    deadline = signalled + LEAVE_S
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid), "a process of the node's group outlived it"
    summary = node.summary()
    assert summary["rounds_by_status"]["committed"] >= 2, summary
