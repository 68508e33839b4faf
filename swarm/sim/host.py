"""``SimHost``: a member's host in the simulator, the ``RoundHost`` the real roles run on.

Streams are in-memory (``swarm.sim.streams``) over the modelled links (``swarm.sim.network``); the
DHT is the modelled one (``swarm.sim.dht``). Opening a stream costs one round trip; a stream to a
member that is down, or that serves no such protocol, fails after ``DEAD_DIAL_S`` (or the
caller's timeout, if shorter), as a dial into silence does. A handler runs as ``SwarmHost`` runs
it: after its last frame it lingers until the peer closes, then closes its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.averaging.host import StreamHandler
from swarm.identity import peer_id_of, public_key_protobuf
from swarm.peer_names import peer_name, short_name
from swarm.sim.dht import SimDHT
from swarm.sim.network import Network
from swarm.sim.streams import ChargePolicy, Connection, EndOptions, connect
from swarm.wire.asyncio_streams import NO_COUNTER, ByteCounter, FramedStream
from swarm.wire.frames import WireError

logger = logging.getLogger(__name__)

LINGER_S = 30.0
"""How long a handler waits for its peer to close after its last frame (``swarm.p2p.LINGER_S``)."""
PRUNE_AT = 256
"""A host forgets its finished connections once it holds this many."""
DEAD_DIAL_S = 3.0
"""How long a dial to a member that is down takes to fail."""


@dataclass
class _Handler:
    serve: StreamHandler
    max_frame_bytes: int
    counter: ByteCounter | None


class SimHost:
    """One simulated member's host (see the module docstring)."""

    def __init__(
        self,
        network: Network,
        dht: SimDHT,
        key: Ed25519PrivateKey,
        hosts: dict[bytes, SimHost],
        policy: ChargePolicy,
    ):
        self.network, self.dht, self.key, self.policy = network, dht, key, policy
        self._peer_id = peer_id_of(public_key_protobuf(key.public_key()))
        self._name = peer_name(self._peer_id)
        self._hosts = hosts
        """Every host of the simulation by peer id (shared): whom a stream can reach."""
        self.traffic = ByteCounter()
        """Real (unscaled) bytes of every stream of this host, as ``SwarmHost.traffic``."""
        self._handlers: dict[str, _Handler] = {}
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def peer_id(self) -> bytes:
        return self._peer_id

    @property
    def peer_name(self) -> str:
        return self._name

    async def add_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        max_frame_bytes: int,
        counter: ByteCounter | None = None,
    ) -> None:
        self._handlers[protocol] = _Handler(handler, max_frame_bytes, counter)

    async def open_stream(
        self,
        peer: bytes,
        protocol: str,
        *,
        timeout_s: float,
        max_frame_bytes: int,
        counter: ByteCounter | None = None,
    ) -> FramedStream:
        target = self._hosts.get(peer)
        handler = target._handlers.get(protocol) if target is not None else None
        if target is None or handler is None or not self.network.alive(peer):
            await asyncio.sleep(min(timeout_s, DEAD_DIAL_S))
            raise ConnectionRefusedError(f"cannot reach {short_name(peer)} on {protocol}")
        rtt_s = 2 * self.network.latency_s(self.peer_id, peer)
        if rtt_s > timeout_s:
            await asyncio.sleep(timeout_s)
            raise TimeoutError(f"opening {protocol} to {short_name(peer)}")
        await asyncio.sleep(rtt_s)
        if not self.network.alive(self.peer_id) or not self.network.alive(peer):
            raise ConnectionResetError(f"{short_name(peer)} went down while we dialled")
        ours = EndOptions(
            counter=self.traffic, extra_counter=counter or NO_COUNTER, max_frame_bytes=max_frame_bytes
        )
        theirs = EndOptions(
            counter=target.traffic,
            extra_counter=handler.counter or NO_COUNTER,
            max_frame_bytes=handler.max_frame_bytes,
        )
        mine, served, connection = connect(self.network, self.policy, self.peer_id, peer, ours, theirs)
        for host in (self, target):
            if len(host._connections) > PRUNE_AT:
                host._connections = {c for c in host._connections if c.open}
            host._connections.add(connection)
        target._spawn(target._serve(handler, protocol, served, connection))
        return mine

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, handler: _Handler, protocol: str, stream: FramedStream, connection: Connection
    ) -> None:
        peer = connection.peers[0]
        try:
            await handler.serve(peer, stream)
            await stream.linger(LINGER_S)
        except WireError as e:
            logger.warning("rejected a stream %s from %s: %s", protocol, short_name(peer), e)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
            logger.info("stream %s from %s ended: %s", protocol, short_name(peer), e)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("handler %s failed on a stream from %s", protocol, short_name(peer))
        finally:
            stream.close()
            self._connections.discard(connection)

    def remember_addresses(self, peer: bytes, maddrs: Sequence[str]) -> None:
        """Addresses mean nothing in memory: every live member can be dialled."""

    async def dht_store(self, key: str, value: Any, *, ttl_s: float, subkey: str | None = None) -> bool:
        return await self.dht.store(self.peer_id, self.key, key, value, ttl_s=ttl_s, subkey=subkey)

    async def dht_get_subkeys(
        self, key: str, parse: Callable[[Any], Any], *, latest: bool = True
    ) -> dict[str, Any]:
        found = await self.dht.get(self.peer_id, key)
        return {subkey: parse(value) for subkey, value in found.items() if subkey is not None}

    async def kill(self) -> None:
        """This member vanishes: its streams reset, its handlers' tasks end, its dials fail."""
        self.network.kill(self.peer_id)
        for connection in list(self._connections):
            connection.reset()
        self._connections.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
