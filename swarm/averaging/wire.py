"""Length-prefixed protobuf frames on a libp2p stream, with byte accounting and size bounds.

A frame is a 4-byte big-endian length followed by a serialised ``Frame`` of one of Swarm's protocol
packages (``swarm.averaging.v1`` by default, ``swarm.checkpoint.v1``); each has a ``body`` oneof.
Nothing here half-closes a stream: p2pd resets a stream whose writer half-closes, so every
exchange ends with an explicit message and both sides close after reading it.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""No frame is ever larger. Each stream also has its own, smaller limit for what it accepts."""

_LENGTH = struct.Struct(">I")


class WireError(ConnectionError):
    """The peer sent something that is not a valid frame, or a frame we did not expect."""


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


class StreamClosed(WireError):
    """The stream ended before a whole frame arrived: the peer left or its connection broke."""


@dataclass
class ByteCounter:
    """Bytes written to and read from streams, including the length prefixes."""

    sent: int = 0
    received: int = 0


NO_COUNTER = ByteCounter()


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
        self._counters = (counter, extra_counter)
        self._on_bytes = on_bytes
        self._max_frame_bytes = max_frame_bytes

    def _count(self, sent: int, received: int) -> None:
        for counter in self._counters:
            counter.sent += sent
            counter.received += received
        if self._on_bytes is not None:
            self._on_bytes(sent, received)

    async def send(self, frame: Any) -> None:
        data = frame.SerializeToString()
        if len(data) > MAX_FRAME_BYTES:
            raise WireError(f"refusing to send a {len(data)}-byte frame (limit {MAX_FRAME_BYTES})")
        framed = _LENGTH.pack(len(data)) + data
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
            header = await self._reader.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(header)
            if length > self._max_frame_bytes:
                raise WireError(f"peer announced a {length}-byte frame (limit {self._max_frame_bytes})")
            data = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            raise StreamClosed("stream closed in the middle of a frame") from e
        self._count(0, _LENGTH.size + length)
        frame = self._frame_type()
        try:
            frame.ParseFromString(data)
        except DecodeError as e:
            raise WireError(f"malformed frame: {e}") from e
        if frame.WhichOneof("body") is None:
            raise WireError("frame carries no message")
        return frame

    async def expect(self, *kinds: str) -> Any:
        """Receive one frame whose body is one of ``kinds``; anything else is a WireError."""
        frame = await self.recv()
        kind = frame.WhichOneof("body")
        if kind not in kinds:
            raise WireError(f"expected {' or '.join(kinds)}, got {kind}")
        return frame

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
