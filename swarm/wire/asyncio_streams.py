"""Frames on the asyncio streams of hivemind's p2pd daemon: the node's side of every protocol.

``FramedStream`` reads and writes one stream through the pure core (``swarm.wire.frames``), counts
its bytes, and draws what it writes from the host's ``UploadLimit`` (the volunteer's upload cap).
Imports asyncio and protobuf, no libp2p: py-libp2p's processes use ``trio_streams``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.frames import (
    LENGTH_PREFIX,
    MAX_FRAME_BYTES,
    NO_COUNTER,
    ByteCounter,
    StreamClosed,
    Tally,
    WireError,
    decode,
    encode,
    expect_kind,
    frame_length,
)

__all__ = [
    "MAX_FRAME_BYTES",
    "NO_COUNTER",
    "ByteCounter",
    "FramedStream",
    "StreamClosed",
    "UploadLimit",
    "WireError",
]
"""The core's names a caller of ``FramedStream`` meets (what it raises, what it counts into) are
importable from here too, so a module of the node's protocols needs one import for its streams."""


class UploadLimit:
    """A token bucket every stream of a host draws from: what the node writes stays under
    ``bytes_per_s`` on average, in bursts of at most ``burst`` bytes. ``clock`` and ``sleep`` are
    injectable for tests."""

    def __init__(
        self,
        bytes_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if not bytes_per_s > 0:
            raise ValueError(f"an upload limit must be positive, got {bytes_per_s}")
        self.rate = float(bytes_per_s)
        self.burst = max(16 * 1024, int(self.rate / 8))
        """Largest write at once: 1/8 s of the rate, so concurrent streams interleave finely."""
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._last = clock()

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` (at most ``burst``) bytes may be written."""
        while True:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n - 1e-6:  # float rounding of the refill must not loop forever
                self._tokens -= n
                return
            await self._sleep((n - self._tokens) / self.rate)


class FramedStream:
    """One stream, read and written as frames. Bytes count into ``counter`` (the host's total) and
    ``extra_counter`` (a protocol's own), and ``on_bytes`` reports them to metrics.

    ``max_frame_bytes`` bounds what the peer may send us: a larger announced frame ends the stream
    before a byte of it is read.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        counter: ByteCounter = NO_COUNTER,
        extra_counter: ByteCounter = NO_COUNTER,
        on_bytes: Callable[[int, int], None] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        frame_type: Any = pb.Frame,
        upload_limit: UploadLimit | None = None,
    ):
        self._reader, self._writer = reader, writer
        self._upload_limit = upload_limit
        self._frame_type = frame_type
        self._count = Tally(counter, extra_counter, on_bytes=on_bytes)
        self._max_frame_bytes = max_frame_bytes

    async def send(self, frame: Any) -> None:
        framed = encode(frame)
        if self._upload_limit is None:
            self._writer.write(framed)
            await self._writer.drain()
        else:
            view = memoryview(framed)
            step = self._upload_limit.burst
            for start in range(0, len(view), step):
                piece = view[start : start + step]
                await self._upload_limit.acquire(len(piece))
                self._writer.write(piece)
                await self._writer.drain()
        self._count(len(framed), 0)

    async def recv(self) -> Any:
        try:
            prefix = await self._reader.readexactly(LENGTH_PREFIX.size)
            length = frame_length(prefix, self._max_frame_bytes)
            data = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            raise StreamClosed("stream closed in the middle of a frame") from e
        self._count(0, LENGTH_PREFIX.size + length)
        return decode(data, self._frame_type)

    async def expect(self, *kinds: str) -> Any:
        """Receive one frame whose body is one of ``kinds``; anything else is a WireError."""
        return expect_kind(await self.recv(), kinds)

    async def linger(self, timeout_s: float) -> None:
        """After our last frame: wait (bounded) until the peer closes. Closing first would let p2pd
        reset the stream and cut the tail of what we sent."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self._reader.read(1 << 16):  # anything more is discarded
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass

    def close(self) -> None:
        self._writer.close()
