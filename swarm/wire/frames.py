"""Length-prefixed protobuf frames, without I/O: encoding, decoding, size bounds, errors, byte counts.

A frame is a 4-byte big-endian length followed by a serialised ``Frame`` of one of Swarm's protocol
packages (``swarm.averaging.v1``, ``swarm.checkpoint.v1``); each ``Frame`` has a ``body`` oneof.
The I/O adapters (``asyncio_streams`` for p2pd's streams, ``trio_streams`` for py-libp2p's) read
and write the bytes; every rule about what a frame may be lives here, so both sides of a protocol
agree whichever stack they run on. Nothing here half-closes a stream: p2pd resets a stream whose
writer half-closes, so every exchange ends with an explicit message and both sides close after
reading it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""No frame is ever larger. Each stream also has its own, smaller limit for what it accepts."""

LENGTH_PREFIX = struct.Struct(">I")
"""The length in front of every frame."""


class WireError(ConnectionError):
    """The peer sent something that is not a valid frame, or a frame we did not expect."""


class StreamClosed(WireError):
    """The stream ended before a whole frame arrived: the peer left or its connection broke."""


@dataclass
class ByteCounter:
    """Bytes written to and read from streams, including the length prefixes."""

    sent: int = 0
    received: int = 0


NO_COUNTER = ByteCounter()
"""Counts what nobody asked to count."""


class Tally:
    """Counts one stream's bytes into several counters (the host's total, a protocol's own) and
    reports them to ``on_bytes`` (metrics)."""

    def __init__(self, *counters: ByteCounter, on_bytes: Callable[[int, int], None] | None = None) -> None:
        self._counters = counters
        self._on_bytes = on_bytes

    def __call__(self, sent: int, received: int) -> None:
        for counter in self._counters:
            counter.sent += sent
            counter.received += received
        if self._on_bytes is not None:
            self._on_bytes(sent, received)


def encode(frame: Any) -> bytes:
    """``frame`` with its length prefix; a frame above ``MAX_FRAME_BYTES`` is never sent."""
    data = frame.SerializeToString()
    if len(data) > MAX_FRAME_BYTES:
        raise WireError(f"refusing to send a {len(data)}-byte frame (limit {MAX_FRAME_BYTES})")
    return LENGTH_PREFIX.pack(len(data)) + data


def frame_length(prefix: bytes, max_frame_bytes: int) -> int:
    """The length a frame's prefix announces; above ``max_frame_bytes`` it is refused before a byte
    of the frame is read."""
    (length,) = LENGTH_PREFIX.unpack(prefix)
    if length > max_frame_bytes:
        raise WireError(f"peer announced a {length}-byte frame (limit {max_frame_bytes})")
    return int(length)


def decode(data: bytes, frame_type: Any) -> Any:
    """A ``frame_type`` parsed from ``data``; malformed bytes or an empty body are a WireError."""
    frame = frame_type()
    try:
        frame.ParseFromString(data)
    except DecodeError as e:
        raise WireError(f"malformed frame: {e}") from e
    if frame.WhichOneof("body") is None:
        raise WireError("frame carries no message")
    return frame


def expect_kind(frame: Any, kinds: tuple[str, ...]) -> Any:
    """``frame`` if its body is one of ``kinds``; anything else is a WireError."""
    kind = frame.WhichOneof("body")
    if kind not in kinds:
        raise WireError(f"expected {' or '.join(kinds)}, got {kind}")
    return frame
