"""Two members whose views of who is established differ for a moment each join the other.

Members rank conductors by their heartbeats (established members first, then the lowest peer id).
A stale replica of a heartbeat, common while the DHT is busy, can show one member its own
heartbeat from before its first round (``fresh``) while the other already reads the newer one:
the lower peer then joins the higher, which joins the lower. Each used to wait for the other to
open a gathering until the pass-over time ran out (twice the join grace: four minutes in the
intruder benchmark, where it stalled a closed run). Now the lower peer id conducts at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import torch

from swarm.averaging.outcome import Contribution, Status
from swarm.averaging.timing import RoundTiming
from swarm.dht.records import MemberRecord
from tests.protocol.support import HostView, commit_to_copy, run, start_hosts, start_member

N = 2_000
JOIN_GRACE_S = 20.0
"""Long, as in the intruder benchmark: a conductor the members wait on for nothing costs 40 s."""


class _StaleOwnHeartbeat(HostView):
    """A host whose DHT answers with its own heartbeat as it was before its first round (fresh)."""

    def members(self, records: dict[str, Any]) -> dict[str, Any]:
        own = records.get(self.peer_name)
        if isinstance(own, MemberRecord):
            records[self.peer_name] = dataclasses.replace(own, fresh=True)
        return records


def test_two_members_that_each_join_the_other_round_at_once() -> None:
    async def go() -> None:
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=JOIN_GRACE_S, join_timeout_s=60.0, min_group=2, min_transfer_s=2.0
        )
        # The lower peer id reads its own heartbeat stale: it joins the higher, which joins it.
        hosts = sorted(await start_hosts(2), key=lambda host: host.peer_id)
        stale = _StaleOwnHeartbeat(hosts[0])
        try:
            start = torch.randn(N)
            averagers = [
                await start_member(stale, start, timing=timing),  # type: ignore[arg-type]
                await start_member(hosts[1], start, timing=timing),
            ]
            began = time.monotonic()
            outcomes = await asyncio.gather(
                *(
                    a.run_round(
                        Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=1, local_steps=1)
                    )
                    for a in averagers
                )
            )
            took = time.monotonic() - began
            for averager, outcome in zip(averagers, outcomes, strict=True):
                assert outcome.status is Status.COMMITTED and len(outcome.members) == 2, outcome.status
                commit_to_copy(outcome, averager.copy)
            assert averagers[0].copy.digest == averagers[1].copy.digest
            # Well inside the 40 s pass-over time the members used to wait for each other.
            assert took < JOIN_GRACE_S / 2, f"the round took {took:.1f} s"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
