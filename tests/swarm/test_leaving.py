"""Leaving with a signal to the whole process group, as a terminal's Ctrl-C (SIGINT) and the
systemd unit (SIGTERM) send it: the node, its DHT process and its p2pd daemon all get the signal.

The node must leave in order and exit 0 within ``LEAVE_S``, its summary written, nothing of its
group left. Before the DHT process ignored the group's signals, the node waited on it forever.
"""

from __future__ import annotations

import os
import signal
import time

from tests.swarm.conftest import Swarm, group_alive

LEAVE_S = 30.0
"""What the issue allows a node between the signal and its exit."""


def test_a_signal_to_the_whole_group_leaves_in_order(swarm: Swarm) -> None:
    """Two nodes, each alone in its own run, at once: one gets SIGINT, the other SIGTERM."""
    signals = (signal.SIGINT, signal.SIGTERM)
    nodes = [
        swarm.start(f"alone-{sig.name}", "--run-id", f"leave-{sig.name.lower()}", "--max-steps", "100000")
        for sig in signals
    ]
    for node in nodes:
        node.wait_for(lambda s: s["round"] >= 2, timeout_s=240, what="round 2")
    for node, sig in zip(nodes, signals, strict=True):
        os.killpg(node.process.pid, sig)
    signalled = time.monotonic()
    for node in nodes:
        assert node.wait_exit(max(0.1, LEAVE_S - (time.monotonic() - signalled))) == 0, node.log_tail()
    deadline = signalled + LEAVE_S
    while any(group_alive(n.process.pid) for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node, sig in zip(nodes, signals, strict=True):
        assert not group_alive(node.process.pid), f"a process of the {sig.name} node's group outlived it"
        summary = node.summary()
        assert summary["rounds_by_status"]["committed"] >= 2, summary
