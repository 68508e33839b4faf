"""The simulator's clock and links: waits cost no real time; a transfer takes latency + bytes / rate;
a relayed stream is reset past the relay's data limit; frames are charged at the model's size."""

from __future__ import annotations

import asyncio
import time

import pytest

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.sim.loop import run_virtual
from swarm.sim.network import MBIT, LinkSpec, Network, RelaySpec
from swarm.sim.streams import ChargePolicy, EndOptions, connect
from swarm.wire.asyncio_streams import NO_COUNTER, ByteCounter
from swarm.wire.frames import encode

A, B = b"a" * 34, b"b" * 34


def _ends(network: Network, policy: ChargePolicy):
    options = EndOptions(counter=ByteCounter(), extra_counter=NO_COUNTER, max_frame_bytes=1 << 24)
    return connect(network, policy, A, B, options, options)


def test_an_hour_of_waiting_takes_no_real_time() -> None:
    async def go() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(asyncio.sleep(3600), asyncio.sleep(5))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.Event().wait()
        return loop.time() - start

    started = time.monotonic()
    assert run_virtual(go()) == pytest.approx(3610)
    assert time.monotonic() - started < 1


def test_a_frame_arrives_after_latency_plus_size_over_the_slower_link() -> None:
    async def go() -> tuple[float, float, int]:
        network = Network()
        network.add(A, LinkSpec(up_bps=10 * MBIT, down_bps=100 * MBIT, latency_s=0.02))
        network.add(B, LinkSpec(up_bps=100 * MBIT, down_bps=100 * MBIT, latency_s=0.03))
        policy = ChargePolicy(payload_scale={"fp32": 100.0})
        mine, theirs, _ = _ends(network, policy)
        loop = asyncio.get_running_loop()
        start = loop.time()
        frame = pb.Frame(part=pb.ShardPart(codec="fp32", payload=bytes(10_000)))
        await mine.send(frame)
        sent = loop.time() - start
        await theirs.recv()
        return sent, loop.time() - start, network.traffic(A).sent["part"]

    sent_s, arrived_s, charged = run_virtual(go())
    framed = len(encode(pb.Frame(part=pb.ShardPart(codec="fp32", payload=bytes(10_000)))))
    assert charged == framed + 99 * 10_000  # the payload at 100x, the frame's own fields as they are
    assert sent_s == pytest.approx(8 * charged / (10 * MBIT))  # the sender's 10 Mbit/s uplink
    assert arrived_s == pytest.approx(sent_s + 0.05)


def test_a_relayed_stream_is_reset_past_the_relays_limit() -> None:
    async def go() -> None:
        network = Network(relay=RelaySpec(limit_bytes=64 * 1024))
        network.add(A, LinkSpec(up_bps=MBIT * 100, down_bps=MBIT * 100, relayed=True))
        network.add(B, LinkSpec(up_bps=MBIT * 100, down_bps=MBIT * 100))
        mine, theirs, _ = _ends(network, ChargePolicy())
        await mine.send(pb.Frame(part=pb.ShardPart(payload=bytes(1000))))
        assert (await theirs.recv()).part.payload == bytes(1000)
        with pytest.raises(ConnectionResetError):  # the sender sees it once its bytes are out
            await mine.send(pb.Frame(part=pb.ShardPart(payload=bytes(100_000))))
        with pytest.raises(ConnectionResetError):
            await theirs.recv()
        assert network.relay_resets == 1

    run_virtual(go())
