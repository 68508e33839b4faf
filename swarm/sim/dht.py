"""A modelled DHT: values per key and subkey with expiry, stored on replicas, bytes counted.

Each key lives on ``replicas`` DHT nodes (Kademlia stores a value on the k nodes nearest its id).
A store sends the sealed record (``swarm.dht.envelope.seal``, the bytes the real DHT carries) to
every replica; a read fetches the key's whole value (every unexpired subkey) from one replica,
round-robin. Each operation takes ``latency_s`` of lookup plus the bytes over the reader's
downlink. What is modelled: bytes per replica, the largest value a read returned (hivemind's
danger zone starts near 16 KB), expiry by the loop's (virtual) clock. What is not: routing hops'
own bytes, replicas disagreeing, a value's propagation delay, the validators' checks (records are
sealed for their size; a read returns the payload without verifying the signature).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.dht.envelope import seal
from swarm.sim.network import Network


@dataclass
class _Entry:
    payload: Any
    size_bytes: int
    expires_at: float


@dataclass
class DhtStats:
    """What the modelled DHT carried."""

    replica_bytes: Counter[str] = field(default_factory=Counter)
    """Key -> bytes in and out of one of its replicas (stores reach every replica, reads one)."""
    stores: int = 0
    reads: int = 0
    largest_value_bytes: int = 0
    """The largest value one read returned (every unexpired subkey of a key)."""
    largest_key: str = ""


class SimDHT:
    """Values per key and subkey with expiry (see the module docstring)."""

    def __init__(self, network: Network, *, replicas: int = 5, latency_s: float = 0.15):
        self.network, self.replicas, self.latency_s = network, replicas, latency_s
        self._values: dict[str, dict[str | None, _Entry]] = {}
        self.stats = DhtStats()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def store(
        self,
        writer: bytes,
        key: Ed25519PrivateKey,
        dht_key: str,
        value: Any,
        *,
        ttl_s: float,
        subkey: str | None,
    ) -> bool:
        expires_at = self._now() + ttl_s
        # hivemind packs the sealed record with msgpack (its DHT's wire serialiser).
        size = len(msgpack.packb(seal(key, key=dht_key, subkey=subkey, payload=value, expires_at=expires_at)))
        size += len(dht_key) + len(subkey or "")
        self.network.dht_charge(writer, sent=size * self.replicas)
        await asyncio.sleep(self.latency_s)
        if not self.network.alive(writer):
            return False
        entries = self._values.setdefault(dht_key, {})
        current = entries.get(subkey)
        if current is None or current.expires_at <= expires_at:  # the latest expiration wins
            entries[subkey] = _Entry(value, size, expires_at)
        self.stats.stores += 1
        self.stats.replica_bytes[dht_key] += size
        return True

    async def get(self, reader: bytes, dht_key: str) -> dict[str | None, Any]:
        now = self._now()
        entries = self._values.get(dht_key, {})
        for subkey in [s for s, e in entries.items() if e.expires_at <= now]:
            del entries[subkey]
        size = sum(e.size_bytes for e in entries.values())
        found = {subkey: e.payload for subkey, e in entries.items()}
        self.stats.reads += 1
        self.stats.replica_bytes[dht_key] += size // self.replicas  # reads are spread over replicas
        if size > self.stats.largest_value_bytes:
            self.stats.largest_value_bytes, self.stats.largest_key = size, dht_key
        self.network.dht_charge(reader, received=size)
        link = self.network.link(reader)
        await asyncio.sleep(self.latency_s + 8.0 * size / link.down_bps)
        return found
