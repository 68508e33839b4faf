"""Frames on py-libp2p's streams (trio): the light client's and the coordinator's archive's side.

``TrioFramedStream`` reads and writes one py-libp2p stream through the pure core
(``swarm.wire.frames``): the same frames, limits and errors as the node's asyncio side. Imports
py-libp2p (lazily: importing it takes most of a second, and the coordinator imports this module
whether or not its archive runs), never hivemind (the two cannot share one process: both register
the protobuf package ``crypto.pb``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from swarm.wire.frames import (
    LENGTH_PREFIX,
    MAX_FRAME_BYTES,
    StreamClosed,
    decode,
    encode,
    expect_kind,
    frame_length,
)

READ_BYTES = 1 << 16
"""Most bytes asked of the stream at once while a frame is read."""


class TrioFramedStream:
    """One py-libp2p stream, read and written as frames of ``frame_type``.

    ``max_frame_bytes`` bounds what the peer may send: a larger announced frame ends the exchange
    before a byte of it is read. ``stream`` is py-libp2p's ``INetStream``."""

    def __init__(self, stream: Any, *, frame_type: Any, max_frame_bytes: int = MAX_FRAME_BYTES):
        from libp2p.exceptions import BaseLibp2pError

        self._stream_errors = BaseLibp2pError
        """What py-libp2p raises when a stream ends (StreamEOF, StreamReset, ...)."""
        self.stream = stream
        self._frame_type = frame_type
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            try:
                data = await self.stream.read(max(n - len(self._buffer), READ_BYTES))
            except self._stream_errors as e:
                raise StreamClosed(
                    f"the stream ended in the middle of a frame ({type(e).__name__})"
                ) from None
            if not data:
                raise StreamClosed("the peer closed the stream in the middle of a frame")
            self._buffer += data
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    async def send(self, frame: Any) -> None:
        await self.stream.write(encode(frame))

    async def recv(self) -> Any:
        length = frame_length(await self._read_exactly(LENGTH_PREFIX.size), self._max_frame_bytes)
        return decode(await self._read_exactly(length), self._frame_type)

    async def expect(self, *kinds: str) -> Any:
        """Receive one frame whose body is one of ``kinds``; anything else is a WireError."""
        return expect_kind(await self.recv(), kinds)

    async def close(self) -> None:
        await self.stream.close()

    async def close_quietly(self) -> None:
        """Close; a stream the peer already broke (reset, gone) has nothing left to close."""
        import trio

        with contextlib.suppress(self._stream_errors, trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.close()
