"""Golden trace of the round protocol: what three members commit, byte for byte, with fixed inputs.

Three real hosts with fixed identities (so fixed peer ids, conductor and shard owners) run four
rounds in one process on one fixed x', with fixed contributions, the cocktail codec (so owner-side
error feedback carries over from round to round) after one exact fp32 warm-up round. Every round
every member records its status, the sha256 of each committed shard's result bytes, x's digest
after applying the round as the node does, and a digest of its owner error buffers.

The expected trace (``golden_round_trace.json``) was recorded on the code before the averager was
split by role (issue 26); a restructuring that changes no behaviour reproduces it exactly. Record
it again (only after a deliberate change of the protocol's numerics) with
``SWARM_RECORD_GOLDEN=1 pytest tests/protocol/test_round_golden.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import torch

from swarm.averaging.outcome import Contribution, Status
from swarm.averaging.round import Averager
from swarm.averaging.timing import RoundTiming
from swarm.compression.registry import make_codec
from swarm.identity import generate_identity
from swarm.p2p import SwarmHost
from tests.protocol.support import commit_to_copy, run, start_hosts, start_member

FIXTURE = Path(__file__).with_name("golden_round_trace.json")
RECORD = os.environ.get("SWARM_RECORD_GOLDEN") == "1"
N = 6000
SHARDS = 8
ROUNDS = 4
MEMBERS = 3
RUN_ID = "golden"
# Every member joins every round (min_group), and transfer deadlines far above what a loaded
# machine needs on loopback, so that no part misses its owner: owners close as soon as all parts are in.
TIMING = RoundTiming(
    gather_s=0.2, join_grace_s=20.0, join_timeout_s=60.0, min_group=MEMBERS, min_transfer_s=20.0
)


async def _fixed_hosts(folder: Path) -> list[SwarmHost]:
    """Hosts whose identities come from fixed seeds: the same peer ids in every run."""
    paths = [folder / f"identity-{i}.key" for i in range(MEMBERS)]
    for i, path in enumerate(paths):
        generate_identity(path, seed=bytes([i + 1]) * 32)
    return sorted(await start_hosts(MEMBERS, identities=paths), key=lambda h: h.peer_id)


def _contribution(round_id: int, member: int) -> Contribution:
    generator = torch.Generator().manual_seed(1000 * round_id + member)
    delta = torch.randn(N, generator=generator) * 0.01
    return Contribution(delta=delta, weight=1.0, samples=4 + member, local_steps=1 + member)


def _owner_error_digest(averager: Averager) -> str:
    h = hashlib.sha256()
    for shard, error in sorted(averager.owner_errors().items()):
        h.update(shard.to_bytes(4, "little"))
        h.update(error.contiguous().numpy().tobytes())
    return h.hexdigest()


async def _trace(folder: Path) -> list[list[dict]]:
    hosts = await _fixed_hosts(folder)
    try:
        start = torch.randn(N, generator=torch.Generator().manual_seed(7))
        averagers = [
            await start_member(
                host,
                start,
                codec=make_codec("cocktail"),
                run_id=RUN_ID,
                num_shards=SHARDS,
                timing=TIMING,
                warmup_rounds=1,
                heartbeat_ttl_s=300,
            )
            for host in hosts
        ]
        trace = []
        for round_id in range(1, ROUNDS + 1):
            outcomes = await asyncio.gather(
                *(a.run_round(_contribution(round_id, i)) for i, a in enumerate(averagers))
            )
            rows = []
            for averager, outcome in zip(averagers, outcomes, strict=True):
                commit_to_copy(outcome, averager.copy)
                await averager.applied(outcome if outcome.status is Status.COMMITTED else None)
                rows.append(
                    {
                        "status": outcome.status.value,
                        "round": outcome.round,
                        "codec": outcome.codec,
                        "members": [m.hex() for m in outcome.members],
                        "aborted_shards": outcome.aborted_shards,
                        "payloads": {
                            str(u.shard): hashlib.sha256(u.payload).hexdigest() for u in outcome.updates
                        },
                        "digest": averager.copy.digest.hex(),
                        "global_step": averager.copy.global_step,
                        "swarm_samples": averager.copy.swarm_samples,
                        "owner_errors": _owner_error_digest(averager),
                    }
                )
            trace.append(rows)
        for averager in averagers:
            await averager.shutdown()
        return trace
    finally:
        for host in hosts:
            await host.shutdown()


def test_three_members_commit_the_recorded_bytes(tmp_path: Path) -> None:
    result: list[list[dict]] = []

    async def go() -> None:
        result.extend(await _trace(tmp_path))

    run(go())
    if RECORD:
        FIXTURE.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        return
    expected = json.loads(FIXTURE.read_text())
    assert all(row["status"] == "committed" for rows in result for row in rows), result
    for round_id, (got, want) in enumerate(zip(result, expected, strict=True), start=1):
        assert got == want, f"round {round_id} differs from the recorded trace"
