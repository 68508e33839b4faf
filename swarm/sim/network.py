"""Modelled links between simulated members: bandwidth, latency, relays, CPU, and the bytes they carry.

Each member has an access link: ``up_bps`` and ``down_bps`` (bits per second) and a one-way
``latency_s``; a message from a to b waits ``a.latency_s + b.latency_s`` past its last byte. A
transfer of B bytes occupies a's uplink for B / up and b's downlink for B / down, each direction
serialised on its own (a member's bulk uploads queue behind each other, as do its downloads; control
frames do not wait behind them, see ``BULK_KINDS``), and the bytes reach b once both are through: a fan-in of many slow senders into a fast owner is limited by
the senders, not by one sender's rate held across the owner's link. This is coarser than a fluid
(max-min fair) model: a late small message waits behind a large one already queued on the link.

A relayed member (behind NAT, reachable only through a relay) has every stream to or from it go
through the relay: its rate is capped at ``relay_bps``, ``relay_latency_s`` is added, and a stream
that carries more than ``relay_limit_bytes`` is reset, as a libp2p relay (circuit v2) resets a
relayed connection past its data limit. CPU work charged to a member (``charge_cpu``) delays what
it sends next: the simulated clock does not move while Python runs.

Bytes are *charged* bytes: payloads scaled to the simulated model size (``swarm.sim.streams``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MBIT = 1e6

STATE_KINDS = frozenset(
    {"state_request", "state_header", "state_chunk", "state_end", "journal_request", "journal_part",
     "journal_round", "journal_end"}
)  # fmt: skip
"""Frames of state transfers (repairs, joiners), counted apart from the rounds' own."""
BULK_KINDS = frozenset({"part", "result", "state_chunk", "journal_part"})
"""Frames that queue on a link behind each other; the others (joins, rosters, receipts, commits: a
few hundred bytes to a few kB) share it, as TCP connections and yamux streams interleave."""


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """One member's access link."""

    up_bps: float
    """Upload rate, bits per second."""
    down_bps: float
    """Download rate, bits per second."""
    latency_s: float = 0.02
    """One-way latency of the access link; a message between two members takes the sum of theirs."""
    relayed: bool = False
    """Behind NAT: reachable only through a relay (see the module docstring)."""

    def __post_init__(self) -> None:
        if not (self.up_bps > 0 and self.down_bps > 0 and self.latency_s >= 0):
            raise ValueError(f"a link needs positive rates and a latency >= 0, got {self}")


@dataclass
class Traffic:
    """Charged bytes of one member: on streams by frame kind, and with the DHT."""

    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    dht_sent: int = 0
    dht_received: int = 0

    @property
    def round_sent(self) -> int:
        """Bytes of rendezvous and shard streams (what ``Averager.round_traffic`` counts: no state
        transfers, no DHT)."""
        return sum(n for kind, n in self.sent.items() if kind not in STATE_KINDS)

    @property
    def round_received(self) -> int:
        return sum(n for kind, n in self.received.items() if kind not in STATE_KINDS)


@dataclass
class _Member:
    link: LinkSpec
    up_free: float = 0.0
    down_free: float = 0.0
    cpu_free: float = 0.0
    cpu_s: float = 0.0
    alive: bool = True
    traffic: Traffic = field(default_factory=Traffic)


@dataclass(frozen=True, kw_only=True)
class RelaySpec:
    """What relaying costs a stream (see the module docstring)."""

    bps: float = 50 * MBIT
    latency_s: float = 0.03
    limit_bytes: int = 256 * 1024
    """A relayed stream carrying more than this (both directions) is reset."""


class Network:
    """The links of every simulated member, the transfers on them, and their charged bytes."""

    def __init__(self, *, relay: RelaySpec | None = None):
        self.relay = relay or RelaySpec()
        self._members: dict[bytes, _Member] = {}
        self.relay_resets = 0
        """Streams reset for exceeding the relay's data limit."""
        self.on_frame: Callable[[bytes, bytes, str], None] = lambda src, dst, kind: None
        """Called with every frame booked (fault injection: kill the conductor once it sends rosters)."""

    def add(self, peer: bytes, link: LinkSpec) -> None:
        self._members[peer] = _Member(link)

    def link(self, peer: bytes) -> LinkSpec:
        return self._members[peer].link

    def traffic(self, peer: bytes) -> Traffic:
        return self._members[peer].traffic

    def cpu_s(self, peer: bytes) -> float:
        """CPU seconds charged to ``peer`` so far."""
        return self._members[peer].cpu_s

    def alive(self, peer: bytes) -> bool:
        member = self._members.get(peer)
        return member is not None and member.alive

    def kill(self, peer: bytes) -> None:
        self._members[peer].alive = False

    def revive(self, peer: bytes) -> None:
        self._members[peer].alive = True

    def relayed(self, a: bytes, b: bytes) -> bool:
        return self._members[a].link.relayed or self._members[b].link.relayed

    def latency_s(self, a: bytes, b: bytes) -> float:
        extra = self.relay.latency_s if self.relayed(a, b) else 0.0
        return self._members[a].link.latency_s + self._members[b].link.latency_s + extra

    def charge_cpu(self, peer: bytes, seconds: float) -> None:
        """``peer`` computes for ``seconds``: its next transfers start no earlier than when it is done."""
        member = self._members[peer]
        now = asyncio.get_running_loop().time()
        member.cpu_free = max(now, member.cpu_free) + seconds
        member.cpu_s += seconds

    def transmit(self, src: bytes, dst: bytes, size_bytes: int, kind: str) -> tuple[float, float]:
        """Book ``size_bytes`` from ``src`` to ``dst``: (when the sender's uplink is through with them,
        when the last byte reaches ``dst``), on the running loop's clock."""
        a, b = self._members[src], self._members[dst]
        now = asyncio.get_running_loop().time()
        relayed = a.link.relayed or b.link.relayed
        up = min(a.link.up_bps, self.relay.bps) if relayed else a.link.up_bps
        down = min(b.link.down_bps, self.relay.bps) if relayed else b.link.down_bps
        bits = 8.0 * size_bytes
        # The receiver's downlink is booked from now, not from when the sender's queue reaches these
        # bytes: booking it in the future would hold up every transfer booked after this one (a slow
        # owner's result queued for a minute would block a fast owner's result behind it).
        if kind in BULK_KINDS:
            start = max(now, a.up_free, a.cpu_free)
            a.up_free = start + bits / up
            b.down_free = max(b.down_free, now) + bits / down
            through = max(a.up_free, b.down_free)
        else:  # a control frame shares the links with the bulk queued on them instead of waiting behind it
            start = max(now, a.cpu_free)
            through = start + bits / min(up, down)
            a.up_free = max(a.up_free, start) + bits / up
            b.down_free = max(b.down_free, now) + bits / down
        self.on_frame(src, dst, kind)
        a.traffic.sent[kind] += size_bytes
        b.traffic.received[kind] += size_bytes
        return a.up_free, through + self.latency_s(src, dst)

    def dht_charge(self, peer: bytes, *, sent: int = 0, received: int = 0) -> None:
        traffic = self._members[peer].traffic
        traffic.dht_sent += sent
        traffic.dht_received += received
