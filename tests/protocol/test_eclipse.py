"""Signatures stop forged heartbeats, not withheld ones: a peer nearest the members key can answer
without them (an eclipse). A member that then saw itself alone would conduct alone (``--min-group
1``) and commit alone, forking x'. It asks the members of its last round directly instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from swarm.averaging.outcome import Contribution, Status
from swarm.averaging.timing import RoundTiming
from swarm.p2p import SwarmHost
from tests.protocol.support import HostView, commit_to_copy, run, start_hosts, start_member

N = 2_000
ROUNDS = 4


class _Eclipsed(HostView):
    """A host whose DHT answers for the members key, while ``on``, hold no heartbeat but its own."""

    def __init__(self, host: SwarmHost):
        super().__init__(host)
        self.on = False

    def members(self, records: dict[str, Any]) -> dict[str, Any]:
        if not self.on:
            return records
        return {name: record for name, record in records.items() if name == self.peer_name}


def test_a_member_whose_members_key_is_eclipsed_still_rounds_with_its_partners() -> None:
    async def go() -> None:
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=2.0, join_timeout_s=15.0, min_group=1, min_transfer_s=2.0
        )
        # The higher peer id is eclipsed: it is the one that must find the other (the conductor).
        hosts = sorted(await start_hosts(2), key=lambda host: host.peer_id)
        eclipsed = _Eclipsed(hosts[1])
        try:
            start = torch.randn(N)
            averagers = [
                await start_member(hosts[0], start, timing=timing),
                await start_member(eclipsed, start, timing=timing),  # type: ignore[arg-type]
            ]
            for round_id in range(1, ROUNDS + 1):
                eclipsed.on = round_id > 1  # after a round together: they are partners
                outcomes = await asyncio.gather(
                    *(
                        a.run_round(
                            Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=1, local_steps=1)
                        )
                        for a in averagers
                    )
                )
                for averager, outcome in zip(averagers, outcomes, strict=True):
                    assert outcome.status is Status.COMMITTED, f"round {round_id}: {outcome.status}"
                    assert len(outcome.members) == 2, f"round {round_id} was committed alone"
                    commit_to_copy(outcome, averager.copy)
                    await averager.applied(outcome)
                assert averagers[0].copy.digest == averagers[1].copy.digest, f"x' forked in round {round_id}"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
