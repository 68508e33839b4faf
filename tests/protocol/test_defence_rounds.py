"""Owners against hostile members, with real libp2p hosts in one process (each its own p2pd and DHT).

A member whose parts carry NaN, arrive in oversized frames, or are scaled far beyond the others is
excluded by every honest owner, banned, and the round commits among the honest members with
bit-identical x'. In the next round the banned member's join and parts are refused and the round
does not wait for it. With centered clipping, a member sending large random parts moves the
result far less than it moves the plain mean.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from swarm.averaging.context import protocol_name
from swarm.averaging.defence import Defence
from swarm.averaging.faults import Misbehaviour
from swarm.averaging.outcome import Contribution, Status
from swarm.averaging.round import Averager
from swarm.averaging.timing import RoundTiming
from swarm.p2p import SwarmHost
from tests.protocol.support import announce, run, start_hosts, start_member

N = 4000
SHARDS = 16
TIMING = RoundTiming(gather_s=0.2, join_grace_s=3.0, join_timeout_s=20.0, min_group=3, min_transfer_s=3.0)


async def _swarm(
    hosts: list[SwarmHost], start: torch.Tensor, defence: Defence, run_id: str = "defence"
) -> list[Averager]:
    return [
        await start_member(
            host, start, run_id=run_id, num_shards=SHARDS, timing=TIMING, defence=defence, heartbeat_ttl_s=120
        )
        for host in hosts
    ]


async def _round(averagers: list[Averager], deltas: list[torch.Tensor]):
    return await asyncio.gather(
        *(
            a.run_round(Contribution(delta=d, weight=1.0, samples=4, local_steps=1))
            for a, d in zip(averagers, deltas, strict=True)
        )
    )


def _apply(averager: Averager, outcome) -> None:
    for update in outcome.updates:
        averager.copy.apply_shard(update.start, update.aggregate)
    averager.copy.round = outcome.round


@pytest.mark.parametrize("mode", ["nan", "oversized", "scale"])
def test_a_hostile_member_is_excluded_banned_and_not_waited_for(mode: str) -> None:
    async def go() -> None:
        hosts = await start_hosts(4)
        try:
            start = torch.randn(N)
            averagers = await _swarm(hosts, start, Defence(ban_s=600.0))
            hostile = averagers[3]
            hostile.faults.misbehave = Misbehaviour(mode, factor=1e5)
            honest = averagers[:3]
            deltas = [torch.randn(N) * 0.01 for _ in averagers]
            outcomes = await _round(averagers, deltas)
            assert all(o.status is Status.COMMITTED for o in outcomes[:3])
            me = hostile.me
            for averager, outcome in zip(honest, outcomes, strict=False):
                honest_owned = [u for u in outcome.updates if u.owner != me]
                assert honest_owned, "honest owners should hold some shards"
                for update in honest_owned:
                    assert me not in update.included, f"{mode}: the hostile part was averaged"
                    assert torch.isfinite(update.aggregate).all()
                    # The honest members' mean: the hostile part left no trace.
                    piece = slice(update.start, update.start + update.aggregate.numel())
                    expected = sum(d[piece].double() for d in deltas[:3]) / 3
                    torch.testing.assert_close(update.aggregate.double(), expected, rtol=0, atol=1e-6)
                _apply(averager, outcome)
                if any(u.owner == averager.me for u in outcome.updates):  # it saw a hostile part
                    assert averager.bans.banned(me), f"{mode}: the hostile member was not banned"
            assert len({a.copy.digest for a in honest}) == 1, "honest members' x' differ"
            assert sum(a.excluded_parts for a in honest) >= 1

            # Round 2: the banned member is refused; the honest members commit without waiting for it.
            _apply(hostile, outcomes[3])
            deltas = [torch.randn(N) * 0.01 for _ in averagers]
            # The banned member keeps asking (until its join timeout): the honest ones do not wait.
            refused = asyncio.create_task(
                hostile.run_round(Contribution(delta=deltas[3], weight=1.0, samples=4, local_steps=1))
            )
            outcomes = await _round(honest, deltas[:3])
            refused.cancel()
            for averager, outcome in zip(honest, outcomes, strict=True):
                assert outcome.status is Status.COMMITTED
                for update in outcome.updates:
                    if update.owner != me:
                        assert me not in update.included
                # An owner waiting for the banned member's parts would end at its deadline.
                assert outcome.transfer_s < TIMING.min_transfer_s
                _apply(averager, outcome)
            assert len({a.copy.digest for a in honest}) == 1
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_centered_clip_limits_a_member_sending_large_random_parts() -> None:
    async def go() -> None:
        hosts = await start_hosts(4)
        try:
            start = torch.randn(N)
            # Outlier exclusion off: only the aggregation rule stands between the noise and x'.
            results = {}
            for aggregation in ("mean", "centered-clip"):
                defence = Defence(outlier_factor=0, aggregation=aggregation)
                averagers = await _swarm(hosts, start, defence, run_id=f"defence-{aggregation}")
                averagers[3].faults.misbehave = Misbehaviour("random", factor=10.0)
                # Honest members agree on a direction (one gradient) up to their own noise.
                common = torch.randn(N) * 0.01
                deltas = [common + torch.randn(N) * 0.002 for _ in averagers]
                outcomes = await _round(averagers, deltas)
                honest_mean = sum(d.double() for d in deltas[:3]) / 3
                errors = []
                for update in outcomes[0].updates:
                    if update.owner == averagers[3].me:
                        continue
                    piece = slice(update.start, update.start + update.aggregate.numel())
                    errors.append(float((update.aggregate.double() - honest_mean[piece]).norm()))
                    assert averagers[3].me in update.included
                results[aggregation] = sum(errors)
                for averager in averagers:
                    await averager.shutdown()
            # Plain mean: the noise (10x a part's norm, over 4 members) dominates. Clipped: it moves
            # the result by at most a quarter of the radius, about the honest members' own spread.
            assert results["centered-clip"] < 0.1 * results["mean"], results
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_a_closed_run_refuses_joins_without_a_valid_credential_for_the_peer() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from swarm.auth import Gate, issue, owner_public_key
    from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb

    async def go() -> None:
        a_host, b_host = await start_hosts(2)
        try:
            owner = Ed25519PrivateKey.generate()
            gate = Gate(run_id="closed", owner_key=owner_public_key(owner))
            averager = await start_member(
                a_host, torch.zeros(N), run_id="closed", num_shards=SHARDS, timing=TIMING, gate=gate,
                heartbeat_ttl_s=None,
            )  # fmt: skip
            # B's heartbeat without a credential is not a live member for A.
            await announce(b_host, "closed")
            assert b_host.peer_id not in await averager.live_members()
            stolen = issue(owner, run_id="closed", peer_id=a_host.peer_id, valid_s=600).to_bytes()
            for credential, reason in ((b"", "no credential"), (stolen, "another peer"), (b"{", "not JSON")):
                stream = await b_host.open_stream(
                    a_host.peer_id,
                    protocol_name("closed", "rendezvous"),
                    timeout_s=5,
                    max_frame_bytes=1 << 16,
                )
                join = pb.JoinRequest(run_id="closed", digest=b"d" * 32, weight=1.0, credential=credential)
                await stream.send(pb.Frame(join=join))
                reply = await asyncio.wait_for(stream.expect("busy"), timeout=10)
                assert reason in reply.busy.reason, reply.busy.reason
                stream.close()
            assert averager.rejections == 3
            # With its own credential, B's heartbeat counts.
            own = issue(owner, run_id="closed", peer_id=b_host.peer_id, valid_s=600).to_bytes()
            await announce(b_host, "closed", credential=own)
            assert b_host.peer_id in await averager.live_members()
        finally:
            for host in (a_host, b_host):
                await host.shutdown()

    run(go())
