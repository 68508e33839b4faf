"""The round protocol between two real libp2p hosts in one process (each with its own p2pd and DHT).

Covers what is awkward to reach through whole nodes: a full round between two averagers; a member
refusing to contribute NaN; a hostile member whose parts and results carry NaN (excluded by the
honest owner, its results refused, the round completes on the honest shards); hostile streams
(oversized frames, another run, absurd weights) that get a rejection while the node keeps serving.
"""

from __future__ import annotations

import asyncio
import struct
import time

import numpy as np
import pytest
import torch
from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError

from node.config import NetworkConfig
from swarm.averaging.context import protocol_name
from swarm.averaging.outcome import Contribution, Status
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.averaging.timing import RoundTiming
from swarm.averaging.transfer import fetch_state
from swarm.compression.codecs import CodecContext, Fp32Codec
from swarm.p2p import HostOptions, SwarmHost
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.frames import WireError
from tests.protocol.support import (
    HOST_STARTUP_TIMEOUT_S,
    LOOPBACK,
    RUN_ID,
    announce,
    run,
    start_hosts,
    start_member,
)

N = 1000


def test_two_averagers_complete_a_round_and_agree() -> None:
    async def go() -> None:
        a_host, b_host = await start_hosts(2)
        try:
            start = torch.randn(N)
            a, b = await start_member(a_host, start), await start_member(b_host, start)
            da, db = torch.randn(N) * 0.01, torch.randn(N) * 0.01
            out_a, out_b = await asyncio.gather(
                a.run_round(Contribution(delta=da, weight=1.0, samples=4, local_steps=1)),
                b.run_round(Contribution(delta=db, weight=1.0, samples=8, local_steps=2)),
            )
            assert out_a.status is out_b.status is Status.COMMITTED
            assert out_a.round == out_b.round == 1 and len(out_a.updates) == 4 and not out_a.aborted_shards
            mean = (da.double() + db.double()) / 2
            for ua, ub in zip(out_a.updates, out_b.updates, strict=True):
                assert torch.equal(ua.aggregate, ub.aggregate)
                torch.testing.assert_close(
                    ua.aggregate.double(), mean[ua.start : ua.start + ua.aggregate.numel()], rtol=0, atol=1e-7
                )
            assert out_a.samples == 12 and out_a.global_step_increment == 2
            assert a_host.traffic.sent > 0 and b_host.traffic.received > 0
        finally:
            await a_host.shutdown()
            await b_host.shutdown()

    run(go())


class _HostileFp32(Fp32Codec):
    """A peer that puts NaN into every payload it sends and accepts anything it receives."""

    def encode(self, values: torch.Tensor, ctx: CodecContext) -> bytes:
        poisoned = values.detach().float().clone()
        poisoned[::7] = float("nan")
        return poisoned.numpy().astype("<f4").tobytes()

    def decode(self, payload: bytes, num_elements: int, ctx: CodecContext) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(payload, dtype="<f4").copy())


def test_a_member_refuses_to_contribute_nan() -> None:
    async def go() -> None:
        (a_host,) = await start_hosts(1)
        try:
            a = await start_member(a_host, torch.randn(N))
            poisoned = torch.full((N,), float("nan"))
            with pytest.raises(ValueError, match="NaN"):
                await a.run_round(Contribution(delta=poisoned, weight=1.0, samples=1, local_steps=1))
        finally:
            await a_host.shutdown()

    run(go())


def test_nan_from_a_hostile_member_is_excluded_and_the_round_completes() -> None:
    async def go() -> None:
        a_host, b_host = await start_hosts(2)
        try:
            start = torch.randn(N)
            # 16 shards: the honest member owns some of them (with 4, all went to the hostile one 1 time in 16).
            a = await start_member(a_host, start, num_shards=16)
            b = await start_member(b_host, start, codec=_HostileFp32(), num_shards=16)
            clean, other = torch.randn(N) * 0.01, torch.randn(N) * 0.01
            out_a, _ = await asyncio.gather(
                a.run_round(Contribution(delta=clean, weight=1.0, samples=4, local_steps=1)),
                b.run_round(Contribution(delta=other, weight=1.0, samples=4, local_steps=1)),
            )
            assert out_a.status is Status.COMMITTED
            assert out_a.updates, "the honest owner's shards should commit"
            assert out_a.aborted_shards, "the hostile owner's NaN results must not commit"
            for update in out_a.updates:
                assert torch.isfinite(update.aggregate).all()
                torch.testing.assert_close(
                    update.aggregate, clean[update.start : update.start + update.aggregate.numel()]
                )
            assert a.rejections >= 1
        finally:
            await a_host.shutdown()
            await b_host.shutdown()

    run(go())


def test_hostile_streams_are_rejected_and_the_node_keeps_serving() -> None:
    async def go() -> None:
        a_host, b_host = await start_hosts(2)
        try:
            values = torch.randn(N)
            a = await start_member(a_host, values)
            # An oversized frame on the rendezvous protocol: refused before it is read.
            stream = await b_host.open_stream(
                a_host.peer_id, protocol_name(RUN_ID, "rendezvous"), timeout_s=5, max_frame_bytes=1 << 16
            )
            stream._writer.write(struct.pack(">I", 1 << 28))
            await stream._writer.drain()
            with pytest.raises((WireError, ConnectionError)):
                await asyncio.wait_for(stream.recv(), timeout=10)
            stream.close()
            # A join for another run: told so, not admitted.
            stream = await b_host.open_stream(
                a_host.peer_id, protocol_name(RUN_ID, "rendezvous"), timeout_s=5, max_frame_bytes=1 << 16
            )
            await stream.send(pb.Frame(join=pb.JoinRequest(run_id="other", digest=b"x" * 32, weight=1.0)))
            reply = await asyncio.wait_for(stream.expect("busy"), timeout=10)
            assert "run" in reply.busy.reason
            stream.close()
            # A join with an absurd weight: a logged rejection.
            stream = await b_host.open_stream(
                a_host.peer_id, protocol_name(RUN_ID, "rendezvous"), timeout_s=5, max_frame_bytes=1 << 16
            )
            await stream.send(pb.Frame(join=pb.JoinRequest(run_id="proto", digest=b"x" * 32, weight=1e30)))
            reply = await asyncio.wait_for(stream.expect("busy"), timeout=10)
            assert "weight" in reply.busy.reason and a.rejections >= 1
            stream.close()
            # The node still serves its state, verified against its digest.
            header, fetched = await fetch_state(
                b_host, a_host.peer_id, run_id="proto", num_elements=N, connect_timeout_s=5, timeout_s=30
            )
            assert torch.equal(fetched, values) and header.digest == a.copy.digest
        finally:
            await a_host.shutdown()
            await b_host.shutdown()

    run(go())


def test_default_listen_addresses_serve_tcp_and_quic() -> None:
    """The default --host-maddr set really listens on both transports (on loopback here)."""

    async def go() -> None:
        loopback = tuple(m.replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/") for m in NetworkConfig().host_maddrs)
        host = await SwarmHost.start(HostOptions(host_maddrs=loopback))
        try:
            visible = await host.visible_maddrs()
            assert any("/tcp/" in m for m in visible), visible
            assert any("/quic-v1/" in m for m in visible), visible
        finally:
            await host.shutdown()

    run(go())


def test_a_peer_p2pd_cannot_route_to_is_dialled_at_the_addresses_it_announced() -> None:
    """Two hosts that never met: p2pd has no address for the other (as after a relay cut a relayed
    connection) and the stream fails; once the addresses from the peer's heartbeat are remembered,
    the same call dials them and the stream carries a frame."""

    async def go() -> None:
        options = HostOptions(host_maddrs=LOOPBACK, startup_timeout_s=HOST_STARTUP_TIMEOUT_S)
        a_host = await SwarmHost.start(options)
        b_host = await SwarmHost.start(options)
        try:
            received: asyncio.Queue = asyncio.Queue()

            async def handler(peer: bytes, stream) -> None:
                await received.put((peer, await stream.recv()))

            await a_host.add_handler("/swarm/test/hello", handler, max_frame_bytes=1024)
            open_a = dict(timeout_s=10.0, max_frame_bytes=1024)
            with pytest.raises(P2PDaemonError, match="Connect failed"):
                await b_host.open_stream(a_host.peer_id, "/swarm/test/hello", **open_a)

            b_host.remember_addresses(a_host.peer_id, await a_host.visible_maddrs())
            stream = await b_host.open_stream(a_host.peer_id, "/swarm/test/hello", **open_a)
            await stream.send(pb.Frame(busy=pb.Busy()))
            peer, frame = await asyncio.wait_for(received.get(), timeout=10)
            assert peer == b_host.peer_id and frame.WhichOneof("body") == "busy"
            stream.close()
        finally:
            await a_host.shutdown()
            await b_host.shutdown()

    run(go())


def test_a_member_that_joins_another_conductor_redirects_its_own_joiners() -> None:
    """H asks M (the lowest it sees); M then sees L and asks L. M must send H on to L at once,
    not hold H until a gathering of its own that will never open."""

    async def go() -> None:
        hosts = sorted(await start_hosts(3), key=lambda h: h.peer_id)
        low, mid, high = hosts
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=20.0, join_timeout_s=40.0, min_group=3, min_transfer_s=2.0
        )
        try:
            start = torch.randn(N)
            averagers = {}
            for host in hosts:
                averagers[host.peer_id] = await start_member(
                    host, start, run_id="chain", timing=timing, heartbeat_ttl_s=None
                )

            def contribution() -> Contribution:
                return Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=1, local_steps=1)

            await announce(mid, "chain", ttl_s=120)
            await announce(high, "chain", ttl_s=120)
            high_round = asyncio.create_task(averagers[high.peer_id].run_round(contribution()))
            await asyncio.sleep(1.0)  # high is now waiting in mid's rendezvous handler
            await announce(low, "chain", ttl_s=120)
            mid_round = asyncio.create_task(averagers[mid.peer_id].run_round(contribution()))
            await asyncio.sleep(1.0)  # mid asks low, which is still training
            started = time.monotonic()
            outcomes = await asyncio.gather(
                averagers[low.peer_id].run_round(contribution()), mid_round, high_round
            )
            assert [o.status for o in outcomes] == [Status.COMMITTED] * 3
            assert all(len(o.members) == 3 for o in outcomes)
            assert time.monotonic() - started < 10, "the joiner was held instead of redirected"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_a_conductor_that_was_busy_is_tried_again_when_it_gathers() -> None:
    """L (the lowest peer) is busy when the others start the round (as when it repairs its x'):
    they pass it over and gather at M. When L starts its own round, M must send its joiners back
    to L; passing L over for the whole round left two gatherings of 3 and 1 waiting for 4 until
    the join timeout (seen in a WAN run: 120 s without a round)."""

    async def go() -> None:
        hosts = sorted(await start_hosts(4), key=lambda h: h.peer_id)
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=1.0, join_timeout_s=30.0, min_group=4, min_transfer_s=2.0
        )
        try:
            start = torch.randn(N)
            averagers = [
                await start_member(host, start, run_id="busy", timing=timing, heartbeat_ttl_s=120)
                for host in hosts
            ]

            def contribution() -> Contribution:
                return Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=1, local_steps=1)

            started = time.monotonic()
            others = [asyncio.create_task(a.run_round(contribution())) for a in averagers[1:]]
            await asyncio.sleep(6.0)  # the others asked L, were answered busy, and gathered at M
            outcomes = await asyncio.gather(averagers[0].run_round(contribution()), *others)
            assert [o.status for o in outcomes] == [Status.COMMITTED] * 4
            assert all(len(o.members) == 4 for o in outcomes)
            assert len({a.copy.digest for a in averagers}) == 1
            assert time.monotonic() - started < 20, "the gatherings waited for each other"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


async def _members(
    copies: list[GlobalCopy], fresh: list[bool], timing: RoundTiming
) -> tuple[list[SwarmHost], list[Averager]]:
    """Averagers in peer-id order, the i-th on ``copies[i]``'s x' and round, its heartbeat (and join
    requests) saying it is fresh when ``fresh[i]``."""
    hosts = sorted(await start_hosts(len(copies)), key=lambda h: h.peer_id)
    averagers = [
        await start_member(host, copy.values, round=copy.round, fresh=is_fresh, timing=timing)
        for host, copy, is_fresh in zip(hosts, copies, fresh, strict=True)
    ]
    return hosts, averagers


async def _two_on_bases(
    copies: tuple[GlobalCopy, GlobalCopy], timing: RoundTiming
) -> tuple[list[SwarmHost], list[Averager]]:
    """Two established averagers, the lower peer id (the conductor) on ``copies[0]``, the other on ``copies[1]``."""
    return await _members(list(copies), [False, False], timing)


def test_a_stale_conductor_repairs_from_a_member_that_went_on() -> None:
    """A 1-1 tie between the conductor's old round and a joiner's newer one goes to the newer: the
    conductor (cut off for a while) repairs from the joiner instead of committing a round alone on
    its stale x' and sending the joiner back to it."""

    async def go() -> None:
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=2.0, join_timeout_s=6.0, min_group=2, min_transfer_s=2.0
        )
        start = torch.randn(N)
        hosts, (stale, ahead) = await _two_on_bases(
            (GlobalCopy(start.clone()), GlobalCopy(start + 1.0, round=3)), timing
        )
        try:
            contribution = Contribution(delta=torch.zeros(N), weight=1.0, samples=1, local_steps=1)
            out_stale, out_ahead = await asyncio.gather(
                stale.run_round(contribution), ahead.run_round(contribution)
            )
            assert out_stale.status is Status.REPAIR and out_stale.repair_from == [ahead.me]
            assert out_ahead.status is not Status.REPAIR, (
                "the member that went on was sent back to the stale x'"
            )
            assert out_ahead.status is not Status.COMMITTED, "a round of one despite --min-group 2"
            assert ahead.copy.round == 3 and stale.copy.round == 0
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_a_diverged_joiner_repairs_while_the_conductor_keeps_gathering() -> None:
    """Same round, different digests, --min-group 2: the conductor's base wins the tie; the joiner is
    sent to repair, and the conductor's gathering stays open until the joiner comes back on its x'."""

    async def go() -> None:
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=3.0, join_timeout_s=20.0, min_group=2, min_transfer_s=2.0
        )
        start = torch.randn(N)
        hosts, (conductor, diverged) = await _two_on_bases(
            (GlobalCopy(start.clone()), GlobalCopy(start + 1.0)), timing
        )
        try:

            def contribution() -> Contribution:
                return Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=1, local_steps=1)

            conducting = asyncio.create_task(conductor.run_round(contribution()))
            first = await diverged.run_round(contribution())
            assert first.status is Status.REPAIR and first.repair_from == [conductor.me]
            assert not conducting.done(), "the conductor gave up instead of waiting for the repaired member"
            # The repair: the joiner takes the conductor's x'.
            diverged.copy.replace(conductor.copy.values, round=0, global_step=0, swarm_samples=0)
            again, mine = await asyncio.gather(diverged.run_round(contribution()), conducting)
            assert again.status is mine.status is Status.COMMITTED
            assert len(mine.members) == 2 and conductor.copy.digest == diverged.copy.digest
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def _small_step() -> Contribution:
    return Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=1, local_steps=1)


def test_joiners_behind_a_lone_member_repair_forward_instead_of_outvoting_it() -> None:
    """A member alone (--min-group 1) committed round 3 while two joiners downloaded its x' of
    round 2. The joiners must not conduct (the lower peer ids are theirs) nor outvote it two to one:
    it commits round 4 and they repair from it. Before newcomers were told apart, the pair's old
    base won and the member was sent back to round 2, dropping the round it had committed."""

    async def go() -> None:
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=2.0, join_timeout_s=15.0, min_group=1, min_transfer_s=2.0
        )
        start = torch.randn(N)
        copies = [GlobalCopy(start.clone(), round=2) for _ in range(2)] + [GlobalCopy(start + 1.0, round=3)]
        hosts, (first, second, member) = await _members(copies, [True, True, False], timing)
        try:
            out_first, out_second, out_member = await asyncio.gather(
                first.run_round(_small_step()),
                second.run_round(_small_step()),
                member.run_round(_small_step()),
            )
            assert out_member.status is Status.COMMITTED, f"the established member got {out_member.status}"
            assert out_member.round == 4 and out_member.members == [member.me]
            for joiner in (out_first, out_second):
                assert joiner.status is Status.REPAIR and joiner.repair_from == [member.me]
                assert joiner.round == 4, "joiners repair to the round the member is committing"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_newcomers_wait_past_the_grace_for_an_established_member_they_see() -> None:
    """Two fresh joiners find the established member still busy (their first join to it times out),
    so they gather at the lower of them. The grace passes: a round of theirs alone could fork x'
    from one the member commits meanwhile, so they wait for it, and once it gathers, everyone
    commits one round together."""

    async def go() -> None:
        timing = RoundTiming(
            gather_s=0.2, join_grace_s=1.0, join_timeout_s=20.0, min_group=1, min_transfer_s=2.0
        )
        start = torch.randn(N)
        copies = [GlobalCopy(start.clone(), round=2) for _ in range(3)]
        hosts, (first, second, member) = await _members(copies, [True, True, False], timing)
        try:
            joiners = [asyncio.create_task(a.run_round(_small_step())) for a in (first, second)]
            # The member turns up once the joiners' own gathering has waited out the grace.
            while first.conductor.gathering is None or len(first.conductor.gathering.requests) < 2:
                await asyncio.wait(joiners, timeout=0.05)
                assert not any(j.done() for j in joiners), [j.result() for j in joiners if j.done()]
            await asyncio.wait(joiners, timeout=2 * timing.join_grace_s)
            assert not any(j.done() for j in joiners), "the newcomers committed without the member"
            outcomes = await asyncio.gather(member.run_round(_small_step()), *joiners)
            assert [o.status for o in outcomes] == [Status.COMMITTED] * 3
            assert all(o.round == 3 and len(o.members) == 3 for o in outcomes)
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
