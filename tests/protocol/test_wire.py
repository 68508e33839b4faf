"""Frames on a stream: round trips, byte accounting, and refusal of malformed or oversized input."""

from __future__ import annotations

import asyncio
import struct

import pytest

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream
from swarm.wire.frames import ByteCounter, WireError


class _Sink:
    """A StreamWriter stand-in that collects bytes (the transport itself is not under test here)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_round_trip_counts_bytes_both_ways() -> None:
    async def go() -> None:
        sink, counter = _Sink(), ByteCounter()
        out = FramedStream(_reader(b""), sink, counter=counter)  # type: ignore[arg-type]
        frame = pb.Frame(
            part=pb.ShardPart(group_id=b"g" * 16, shard=3, weight=1.0, codec="fp32", payload=b"x" * 100)
        )
        await out.send(frame)
        assert counter.sent == len(sink.data)
        back_counter = ByteCounter()
        back = FramedStream(_reader(bytes(sink.data)), _Sink(), counter=back_counter)  # type: ignore[arg-type]
        received = await back.expect("part")
        assert received == frame and back_counter.received == counter.sent

    asyncio.run(go())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">I", 1 << 30), "limit"),
        (struct.pack(">I", 10) + b"\xff" * 10, "malformed"),
        (struct.pack(">I", 0), "no message"),
        (struct.pack(">I", 50) + b"\x00" * 5, "middle of a frame"),
    ],
)
def test_bad_frames_are_refused(data: bytes, message: str) -> None:
    async def go() -> None:
        stream = FramedStream(_reader(data), _Sink(), max_frame_bytes=1 << 20)  # type: ignore[arg-type]
        with pytest.raises(WireError, match=message):
            await stream.recv()

    asyncio.run(go())


def test_unexpected_message_kinds_are_refused() -> None:
    async def go() -> None:
        sink = _Sink()
        await FramedStream(_reader(b""), sink).send(pb.Frame(busy=pb.Busy(reason="x")))  # type: ignore[arg-type]
        stream = FramedStream(_reader(bytes(sink.data)), _Sink())  # type: ignore[arg-type]
        with pytest.raises(WireError, match="expected roster"):
            await stream.expect("roster")

    asyncio.run(go())
