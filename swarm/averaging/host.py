"""The narrow view of a node's host that the round protocol uses: streams, the member list in the DHT.

``swarm.p2p.SwarmHost`` (hivemind's libp2p daemon and DHT) is the production host; a simulator
provides an in-memory one with the same methods. The roles of the round depend on this protocol
only, never on hivemind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from swarm.wire.asyncio_streams import ByteCounter, FramedStream

StreamHandler = Callable[[bytes, FramedStream], Awaitable[None]]
"""Serves one incoming stream: ``(peer id, stream)``."""


class RoundHost(Protocol):
    @property
    def peer_id(self) -> bytes: ...

    @property
    def peer_name(self) -> str: ...

    async def add_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        max_frame_bytes: int,
        counter: ByteCounter | None = None,
    ) -> None:
        """Serve ``protocol``; a frame above ``max_frame_bytes`` ends the stream unread."""

    async def open_stream(
        self,
        peer: bytes,
        protocol: str,
        *,
        timeout_s: float,
        max_frame_bytes: int,
        counter: ByteCounter | None = None,
    ) -> FramedStream:
        """A stream to ``peer``; raises when it cannot be opened within ``timeout_s``."""

    def remember_addresses(self, peer: bytes, maddrs: Sequence[str]) -> None:
        """Where ``peer`` says it can be dialled (its heartbeat)."""

    async def dht_store(self, key: str, value: Any, *, ttl_s: float, subkey: str | None = None) -> bool: ...

    async def dht_get_subkeys(
        self, key: str, parse: Callable[[Any], Any], *, latest: bool = True
    ) -> dict[str, Any]:
        """Every valid ``subkey -> record`` under ``key``."""
