"""The volunteer's upload cap: a token bucket every framed stream of a host draws from (virtual time)."""

from __future__ import annotations

import asyncio

import pytest

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream, UploadLimit


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Writer:
    """Records what was written and when (virtual time)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, int]] = []

    def write(self, data) -> None:  # type: ignore[no-untyped-def]
        self.writes.append((self.clock.now, len(data)))

    async def drain(self) -> None:
        return None


def test_frames_leave_at_the_capped_rate_in_small_pieces() -> None:
    clock = _Clock()
    limit = UploadLimit(1_000_000, clock=clock, sleep=clock.sleep)  # 8 Mbit/s
    writer = _Writer(clock)
    stream = FramedStream(None, writer, upload_limit=limit)  # type: ignore[arg-type]
    payload = bytes(3_000_000)

    async def go() -> None:
        for _ in range(2):
            await stream.send(pb.Frame(part=pb.ShardPart(payload=payload)))

    asyncio.run(go())
    total = sum(n for _, n in writer.writes)
    assert total > 6_000_000
    assert max(n for _, n in writer.writes) <= limit.burst
    # The first burst goes at once, the rest at the rate: (total - burst) / rate seconds in all.
    assert clock.now == pytest.approx((total - limit.burst) / 1_000_000, rel=1e-6)
    # At no instant has more than burst + rate * t left.
    sent = 0
    for t, n in writer.writes:
        sent += n
        assert sent <= limit.burst + 1_000_000 * t + 1e-6


def test_streams_share_one_limit() -> None:
    clock = _Clock()
    limit = UploadLimit(500_000, clock=clock, sleep=clock.sleep)
    writers = [_Writer(clock), _Writer(clock)]
    streams = [FramedStream(None, w, upload_limit=limit) for w in writers]  # type: ignore[arg-type]

    async def go() -> None:
        frame = pb.Frame(part=pb.ShardPart(payload=bytes(1_000_000)))
        await asyncio.gather(*(s.send(frame) for s in streams))

    asyncio.run(go())
    total = sum(n for w in writers for _, n in w.writes)
    assert clock.now >= (total - limit.burst) / 500_000 - 1e-6


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        UploadLimit(0)
