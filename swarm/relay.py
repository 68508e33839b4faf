"""Relays for a node behind NAT: circuit v2 slots kept by hand, and relay addresses p2pd can dial.

p2pd's autorelay (go-libp2p 0.32) reserves a slot on its static relays once; when the relay resets
the connection, it puts that relay on a one-hour back-off and the node stays unreachable until then.
``RelaySlots`` keeps a slot itself while p2pd holds none: it sends the relay a circuit v2 RESERVE
(a HopMessage, written and parsed here in a few bytes of protobuf) and renews it every
``SLOT_RENEW_S``. ``daemon_multiaddr`` writes relay addresses in the bytes go-multiaddr reads.
Part of the node's hivemind side (``swarm.p2p`` composes it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hivemind.p2p import P2P, PeerID
from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError, read_unsigned_varint

logger = logging.getLogger(__name__)

P2P_CODE = 421
"""Multiaddr code of /p2p/<peer id>."""
P2P_CIRCUIT_CODE = 290
"""Multiaddr code of /p2p-circuit."""
HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop"
RESERVE = b"\x08\x00"
"""A circuit v2 HopMessage with type = RESERVE (field 1, varint 0), nothing else."""
HOP_STATUS_OK = 100
SLOT_RENEW_S = 30.0
"""How often a slot this node reserved itself is renewed, and a refusing relay asked again. The
relay drops a slot when its connection drops; a renewal over the new connection makes it again."""
RESERVE_TIMEOUT_S = 10.0
"""Bound on dialling a relay and on its answer to one RESERVE."""
MAX_HOP_MESSAGE_BYTES = 4096
"""A relay's answer is a few dozen bytes; a longer one is refused unread."""

RESERVE_ERRORS = (P2PDaemonError, OSError, EOFError, ValueError)
"""How a reservation fails: the daemon cannot dial or open the stream, the connection breaks or
times out (OSError), the relay closes mid-answer (EOFError), or answers garbage (ValueError)."""

Connect = Callable[[bytes, Sequence[str], float], Awaitable[None]]
"""``await connect(peer, maddrs, timeout_s)``: dial ``peer`` at ``maddrs`` (without /p2p/)."""


class RelaySlots:
    """The relay slots a host reserved itself, and the relays that refused it lately."""

    def __init__(self, p2p: P2P, connect: Connect) -> None:
        self._p2p, self._connect = p2p, connect
        self.own: dict[str, float] = {}
        """Relay address -> when this host reserved its slot there (monotonic)."""
        self.failures: dict[str, float] = {}
        """Relays that refused or did not answer: relay address -> when (monotonic)."""

    def circuit_addrs(self, own_name: str, announced: Sequence[str]) -> list[str]:
        """The /p2p-circuit addresses of our own slots that ``announced`` lacks."""
        own = f"/p2p/{own_name}"
        return [
            f"{relay}/p2p-circuit{own}" for relay in self.own if f"{relay}/p2p-circuit{own}" not in announced
        ]

    async def keep(self, relays: Sequence[str]) -> list[str]:
        """Hold a slot on each of ``relays`` (``.../p2p/<relay id>`` addresses) while p2pd holds none;
        call it every few seconds. Returns the relays newly reserved on."""
        daemon = [str(m) for m in await self._p2p.get_visible_maddrs(latest=True)]
        if any("p2p-circuit" in m for m in daemon):
            self.own.clear()
            return []
        reserved = []
        now = time.monotonic()
        for relay in relays:
            last = self.own.get(relay, self.failures.get(relay))
            if last is not None and now - last < SLOT_RENEW_S:
                continue
            try:
                await self.reserve(relay)
            except RESERVE_ERRORS as e:
                if relay not in self.failures:  # said once, then retried quietly
                    logger.info("could not reserve a slot on relay %s: %s", relay, e)
                self.own.pop(relay, None)
                self.failures[relay] = time.monotonic()
                continue
            if relay not in self.own:
                reserved.append(relay)
            self.failures.pop(relay, None)
            self.own[relay] = time.monotonic()
        return reserved

    async def reserve(self, relay: str, timeout_s: float = RESERVE_TIMEOUT_S) -> None:
        """One circuit v2 RESERVE to ``relay``; raises unless it answers OK."""
        address, _, name = relay.rpartition("/p2p/")
        peer = PeerID.from_base58(name)
        await self._connect(peer.to_bytes(), [address], timeout_s)
        async with asyncio.timeout(timeout_s):
            # hivemind's P2P has no public call to open a stream on a protocol it does not serve.
            _, reader, writer = await self._p2p._client.stream_open(peer, [HOP_PROTOCOL])
            try:
                writer.write(uvarint(len(RESERVE)) + RESERVE)
                await writer.drain()
                length = await read_unsigned_varint(reader)
                if length > MAX_HOP_MESSAGE_BYTES:
                    raise ConnectionError(f"relay answered with a {length}-byte message")
                status = hop_status(await reader.readexactly(length))
            finally:
                writer.close()
        if status != HOP_STATUS_OK:
            raise ConnectionError(f"relay refused the reservation (circuit v2 status {status})")


_P2P_PART = re.compile(r"(/p2p/[^/]+|/p2p-circuit)")


def daemon_multiaddr(maddr: str) -> Any:
    """``maddr`` as a Multiaddr whose bytes p2pd parses. hivemind's multiaddr package writes a
    /p2p/ component as a CID, where go-multiaddr reads a bare multihash ("length greater than
    remaining number of bytes in buffer"): relay addresses (``.../p2p/<relay>/p2p-circuit``) would
    never dial. Those components are written by hand; the rest as the package writes them."""
    from hivemind.utils.multiaddr import Multiaddr

    raw = b""
    for part in _P2P_PART.split(maddr):
        if part.startswith("/p2p/"):
            multihash = PeerID.from_base58(part.removeprefix("/p2p/")).to_bytes()
            raw += uvarint(P2P_CODE) + uvarint(len(multihash)) + multihash
        elif part == "/p2p-circuit":
            raw += uvarint(P2P_CIRCUIT_CODE)
        elif part:
            raw += Multiaddr(part).to_bytes()
    return Multiaddr(raw)


def uvarint(value: int) -> bytes:
    """``value`` as an unsigned LEB128 varint (protobuf's and multiaddr's)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def hop_status(message: bytes) -> int | None:
    """The status field (5) of a circuit v2 HopMessage; other fields are skipped."""
    i, status = 0, None
    while i < len(message):
        key, i = _varint_at(message, i)
        field_number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = _varint_at(message, i)
            if field_number == 5:
                status = value
        elif wire_type == 2:
            length, i = _varint_at(message, i)
            i += length
        else:
            raise ConnectionError(f"unexpected wire type {wire_type} in the relay's answer")
    if i != len(message):
        raise ConnectionError("truncated answer from the relay")
    return status


def _varint_at(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if i >= len(data):
            raise ConnectionError("truncated varint in the relay's answer")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
    raise ConnectionError("malformed varint in the relay's answer")
