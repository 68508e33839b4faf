"""In-memory streams between simulated members, read and written through the real ``FramedStream``.

``connect`` gives both ends of one stream as ``FramedStream`` objects, so that the roles' own
framing, frame bounds and byte counters run unchanged. Under each, an ``asyncio.StreamReader`` is
fed by the other end's ``_Writer``, which books every frame on the modelled links
(``Network.transmit``) and delivers it when its last byte arrives; ``drain`` returns once the
sender's uplink is through with it. Closing one end delivers end-of-stream to the other after what
is in flight; a reset (a relay's data limit, a killed member) fails both readers with
``ConnectionResetError`` at once, as a broken connection does.

Charged bytes. The simulator runs small real tensors; ``ChargePolicy`` says how many bytes each
frame would have had for the simulated model: a frame's codec payload (parts, results, journal
parts, state chunks) is scaled by the codec's payload ratio, everything else counts as it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.sim.network import Network
from swarm.wire.asyncio_streams import ByteCounter, FramedStream
from swarm.wire.frames import LENGTH_PREFIX

ORDER_EPSILON_S = 1e-9
"""Frames on one direction of a stream arrive in order: a later one lands at least this much later."""


@dataclass
class ChargePolicy:
    """Bytes a frame is charged for (see the module docstring)."""

    payload_scale: dict[str, float] = field(default_factory=dict)
    """Codec name -> charged payload bytes per real payload byte."""
    state_scale: float = 1.0
    """Charged bytes per real byte of x' in state transfers (fp32 elements of the model / real)."""

    def charge(self, data: bytes) -> tuple[str, int]:
        """(frame kind, charged bytes) of one length-prefixed frame as written."""
        kind = _kind(data)
        if kind not in _PAYLOAD_KINDS:  # rosters and the like: counted as they are, never parsed
            return kind, len(data)
        frame = pb.Frame.FromString(data[LENGTH_PREFIX.size :])
        extra = 0.0
        if kind == "part":
            extra = len(frame.part.payload) * (self.payload_scale.get(frame.part.codec, 1.0) - 1)
        elif kind == "result":
            extra = len(frame.result.payload) * (self.payload_scale.get(frame.result.codec, 1.0) - 1)
        elif kind == "state_chunk":
            extra = len(frame.state_chunk.data) * (self.state_scale - 1)
        elif kind == "journal_part":
            extra = len(frame.journal_part.payload) * (self.payload_scale.get("cocktail", 1.0) - 1)
        return kind, len(data) + round(extra)


_KINDS = {field.number: field.name for field in pb.Frame.DESCRIPTOR.oneofs_by_name["body"].fields}
_PAYLOAD_KINDS = frozenset({"part", "result", "state_chunk", "journal_part"})


def _kind(data: bytes) -> str:
    """The body of a framed ``Frame`` from its first tag (a varint: field number << 3 | wire type)."""
    at, tag, shift = LENGTH_PREFIX.size, 0, 0
    while at < len(data):
        byte = data[at]
        tag |= (byte & 0x7F) << shift
        if byte < 0x80:
            return _KINDS.get(tag >> 3, "unknown")
        at, shift = at + 1, shift + 7
    return "empty"


class Connection:
    """One stream's shared state: its two ends' readers, the bytes it carried, whether it broke."""

    def __init__(self, network: Network, policy: ChargePolicy, a: bytes, b: bytes):
        self.network, self.policy, self.peers = network, policy, (a, b)
        self.readers = (asyncio.StreamReader(), asyncio.StreamReader())
        self.closed = [False, False]
        """Per end: that end closed (it reads and sends nothing more)."""
        self.last_arrival = [0.0, 0.0]
        """Per end: when the last frame sent towards it arrives."""
        self.broken = False
        self.carried_bytes = 0
        self.relayed = network.relayed(a, b)

    @property
    def open(self) -> bool:
        return not self.broken and not all(self.closed)

    def reset(self) -> None:
        if self.broken:
            return
        self.broken = True
        for reader in self.readers:
            if not reader.at_eof():
                reader.set_exception(ConnectionResetError("stream reset"))

    def _deliver(self, to: int, data: bytes) -> None:
        if not self.broken and not self.closed[to]:
            self.readers[to].feed_data(data)

    def _end(self, to: int) -> None:
        if not self.broken and not self.readers[to].at_eof():
            self.readers[to].feed_eof()

    def send(self, frm: int, data: bytes) -> float:
        """Book ``data`` from end ``frm`` to the other; returns when the sender's uplink is through."""
        if self.broken or self.closed[frm]:
            raise ConnectionResetError("stream closed or reset")
        if not self.network.alive(self.peers[frm]):
            raise ConnectionResetError("our node is down")
        to = 1 - frm
        kind, size = self.policy.charge(data)
        sent_at, arrives_at = self.network.transmit(self.peers[frm], self.peers[to], size, kind)
        arrives_at = max(arrives_at, self.last_arrival[to] + ORDER_EPSILON_S)
        self.last_arrival[to] = arrives_at
        loop = asyncio.get_running_loop()
        self.carried_bytes += size
        if self.relayed and self.carried_bytes > self.network.relay.limit_bytes:
            self.network.relay_resets += 1
            loop.call_at(sent_at, self.reset)  # the relay cuts it once it has seen too much
            return sent_at
        loop.call_at(arrives_at, self._deliver, to, data)
        return sent_at

    def close(self, end: int) -> None:
        if self.closed[end]:
            return
        self.closed[end] = True
        if not self.readers[end].at_eof() and not self.broken:
            self.readers[end].feed_eof()  # our own pending reads end
        to = 1 - end
        a, b = self.peers[end], self.peers[to]
        loop = asyncio.get_running_loop()
        when = max(loop.time() + self.network.latency_s(a, b), self.last_arrival[to] + ORDER_EPSILON_S)
        self.last_arrival[to] = when
        loop.call_at(when, self._end, to)


class _Writer:
    """The writing half of one end (what ``FramedStream`` calls ``write``, ``drain``, ``close`` on)."""

    def __init__(self, connection: Connection, end: int):
        self._connection, self._end = connection, end
        self._sent_at = 0.0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sent_at = max(self._sent_at, self._connection.send(self._end, bytes(data)))

    async def drain(self) -> None:
        wait_s = self._sent_at - asyncio.get_running_loop().time()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        if self._connection.broken:
            raise ConnectionResetError("stream reset")

    def close(self) -> None:
        self._connection.close(self._end)

    def is_closing(self) -> bool:
        return self._connection.closed[self._end]


@dataclass(frozen=True, kw_only=True)
class EndOptions:
    """How one end reads and counts its frames (``FramedStream``'s own options)."""

    counter: ByteCounter
    extra_counter: ByteCounter
    max_frame_bytes: int


def connect(
    network: Network, policy: ChargePolicy, a: bytes, b: bytes, a_end: EndOptions, b_end: EndOptions
) -> tuple[FramedStream, FramedStream, Connection]:
    """A new stream between ``a`` (the dialer) and ``b``: a's end, b's end, and the connection."""
    connection = Connection(network, policy, a, b)
    ends = []
    for i, options in enumerate((a_end, b_end)):
        writer = cast(asyncio.StreamWriter, _Writer(connection, i))
        ends.append(
            FramedStream(
                connection.readers[i],
                writer,
                counter=options.counter,
                extra_counter=options.extra_counter,
                max_frame_bytes=options.max_frame_bytes,
            )
        )
    return ends[0], ends[1], connection
