"""N simulated members running the real ``Averager`` in lockstep rounds, and what each round cost.

Every member is a real ``Averager`` (rendezvous, conductor, owners, commit: the node's own code) on
a ``SimHost``; it heartbeats into the modelled DHT as ``node.network`` does (every 5 s, living
15 s), brings a small random delta to each round and applies the committed outcome to its x'
(what ``TrainingLoop._finish_round`` does to x'). A member told to repair, and every joiner, takes
x' from a peer through the real protocols: a repair replays a peer's journal (``fetch_journal``)
or else downloads x' (``fetch_state``), as ``node.catch_up`` does; a joiner downloads x'. Rounds run in lockstep: all
live members enter round k together, as nodes in deterministic mode do, and the round ends when
the last of them has its outcome.

Faults: ``kill_on`` kills a member when a frame of a given kind passes (the conductor right after
it sends its first roster, say), and ``churn`` replaces members between rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.averaging.outcome import Contribution, ReplayError, RoundOutcome, Status
from swarm.averaging.round import PART_FRAME_OVERHEAD_BYTES, Averager
from swarm.averaging.shards import assign_owners
from swarm.averaging.state import GlobalCopy
from swarm.averaging.timing import RoundTiming
from swarm.averaging.transfer import fetch_journal, fetch_state
from swarm.compression.registry import make_codec
from swarm.dht.records import MemberRecord, members_key
from swarm.sim.codec import ChargedCodec, CodecCost
from swarm.sim.dht import SimDHT
from swarm.sim.host import SimHost
from swarm.sim.network import LinkSpec, Network, RelaySpec
from swarm.sim.streams import ChargePolicy

HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 15.0
"""As ``node.network``: a member is gone after its third missed heartbeat."""
STATE_TIMEOUT_S = 600.0
RUN_ID = "sim"


@dataclass(kw_only=True)
class SimSettings:
    """One simulation: who, on which links, with which codec, charged as which model."""

    links: list[LinkSpec]
    """One per initial member; joiners under churn draw from these too."""
    real_elements: int = 16 * 1024
    """Elements of the real x' every member holds."""
    model_elements: int = 100_000_000
    """Elements of the model whose bytes and CPU are charged."""
    codec: str = "cocktail"
    cost: CodecCost | None = None
    """Measured codec cost (``swarm.sim.codec.measure``); None: bytes scaled by elements, no CPU charged."""
    num_shards: int = 16
    timing: RoundTiming = field(default_factory=RoundTiming)
    relay: RelaySpec = field(default_factory=RelaySpec)
    dht_replicas: int = 5
    dht_latency_s: float = 0.15
    """Lookup time of a DHT operation (a few hops across the internet; well under this on a LAN)."""
    seed: int = 0


@dataclass
class RoundReport:
    """What one round cost and how it ended."""

    round: int
    members: int
    """Live members that entered the round."""
    statuses: dict[str, int]
    committed_round: int
    round_s: float
    """Virtual seconds from the round's start until the last member had its outcome."""
    duration_median_s: float
    """The median member's ``RoundOutcome.duration_s`` (what the WAN benchmark reports)."""
    bytes_sent_mean: float
    bytes_received_mean: float
    busiest_owner_bytes: int
    conductor_bytes: int
    dht_replica_bytes: int
    dht_largest_value_bytes: int
    aborted_shards: int
    repairs: int
    joins: int
    distinct_digests: int
    """Distinct digests of x' among the round's members after it, those repairing left out."""
    repairing: int = 0
    """Members whose repair (a state transfer) was still running when the round ended."""
    killed: list[str] = field(default_factory=list)


@dataclass
class _Member:
    host: SimHost
    averager: Averager
    generator: torch.Generator
    beat: asyncio.Task | None = None
    task: asyncio.Task | None = None
    repair: asyncio.Task | None = None
    """Taking x' from a peer after a REPAIR outcome: the member sits out rounds until it is done."""


class Simulation:
    """Members, their rounds, and the faults injected into them (see the module docstring)."""

    def __init__(self, settings: SimSettings):
        self.settings = settings
        self.network = Network(relay=settings.relay)
        self.dht = SimDHT(self.network, replicas=settings.dht_replicas, latency_s=settings.dht_latency_s)
        cost = settings.cost
        element_scale = settings.model_elements / settings.real_elements
        scale = cost.payload_scale if cost is not None else element_scale
        self.policy = ChargePolicy(
            payload_scale={settings.codec: scale, "fp32": element_scale}, state_scale=element_scale
        )
        self.hosts: dict[bytes, SimHost] = {}
        self.members: dict[bytes, _Member] = {}
        self._random = random.Random(settings.seed)
        self.start = torch.randn(
            settings.real_elements, generator=torch.Generator().manual_seed(settings.seed)
        )
        self.kill_on: list[tuple[Callable[[bytes, bytes, str], bytes | None], str]] = []
        """Triggers (src, dst, kind) -> the peer to kill, or None; each fires once (see ``kill_when``)."""
        self._killed: list[str] = []
        self._kills: set[asyncio.Task] = set()
        self.network.on_frame = self._frame_seen

    # ------------------------------------------------------------------ members

    async def add_member(self, link: LinkSpec, *, joiner: bool = False) -> bytes:
        s = self.settings
        key = Ed25519PrivateKey.from_private_bytes(
            self._random.randbytes(32)
        )  # peer ids repeat with the seed
        host = SimHost(self.network, self.dht, key, self.hosts, self.policy)
        self.network.add(host.peer_id, link)
        self.hosts[host.peer_id] = host
        codec = make_codec(s.codec)
        if s.cost is not None:
            codec = ChargedCodec(codec, s.cost, self.network, host.peer_id)
        copy = GlobalCopy(self.start.clone())
        averager = Averager(
            host, run_id=RUN_ID, codec=codec, global_copy=copy, num_shards=s.num_shards, timing=s.timing
        )
        # The bound on shard frames follows the shard's size: the model's, not the small real one's
        # (a result names every member it includes: at 1,000 members 38 kB, over the bound of a
        # 1,024-element shard, under that of a 6.25M-element one).
        model_shard = -(-s.model_elements // s.num_shards)
        averager.shard_frame_bytes = 4 * model_shard + PART_FRAME_OVERHEAD_BYTES
        averager.services.shard_frame_bytes = averager.shard_frame_bytes
        await averager.start()
        member = _Member(host, averager, torch.Generator().manual_seed(self._random.getrandbits(31)))
        self.members[host.peer_id] = member
        if joiner:
            averager.fresh = True
            await self._take_state(member, [p for p in self.members if p != host.peer_id])
        member.beat = asyncio.create_task(self._heartbeats(member))
        await asyncio.sleep(0)
        return host.peer_id

    async def _heartbeats(self, member: _Member) -> None:
        copy, host = member.averager.copy, member.host
        while True:
            record = MemberRecord(
                round=copy.round, global_step=copy.global_step, local_steps_per_round=1.0,
                fresh=member.averager.fresh,
            )  # fmt: skip
            await host.dht_store(
                members_key(RUN_ID), record.to_wire(), ttl_s=HEARTBEAT_TTL_S, subkey=host.peer_name
            )
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def _take_state(self, member: _Member, sources: list[bytes]) -> bool:
        """Replace ``member``'s x' by a live source's (the real state protocol); False if none gave it."""
        averager = member.averager
        for peer in sources:
            if not self.network.alive(peer):
                continue
            try:
                header, values = await fetch_state(
                    member.host, peer, run_id=RUN_ID, num_elements=self.settings.real_elements,
                    connect_timeout_s=self.settings.timing.connect_timeout_s, timeout_s=STATE_TIMEOUT_S,
                )  # fmt: skip
            except (OSError, TimeoutError, ValueError, EOFError):
                continue
            averager.copy.replace(
                values, round=header.round, global_step=header.global_step, swarm_samples=header.swarm_samples
            )
            await averager.applied(None)
            return True
        return False

    async def _repair(self, member: _Member, outcome: RoundOutcome) -> bool:
        """What ``node.catch_up.repair`` does: replay the rounds a peer journaled (a few percent of x'
        each with a compressed codec), else download x'."""
        averager, copy = member.averager, member.averager.copy
        for peer in outcome.repair_from:
            if not self.network.alive(peer):
                continue
            try:
                entries = await fetch_journal(
                    member.host, peer, run_id=RUN_ID, after_round=copy.round, min_round=outcome.round,
                    num_shards=averager.layout.num_shards, max_part_bytes=averager.shard_frame_bytes,
                    max_total_bytes=averager.journal.max_bytes,
                    connect_timeout_s=self.settings.timing.connect_timeout_s, timeout_s=STATE_TIMEOUT_S,
                )  # fmt: skip
                if copy.round + len(entries) < outcome.round:
                    raise ReplayError(f"its journal ends before round {outcome.round}")
                scratch = GlobalCopy(
                    copy.values.clone(), round=copy.round, global_step=copy.global_step,
                    swarm_samples=copy.swarm_samples,
                )  # fmt: skip
                averager.replay(entries, scratch)
            except (OSError, TimeoutError, ValueError, EOFError):
                continue
            copy.replace(
                scratch.values, round=scratch.round, global_step=scratch.global_step,
                swarm_samples=scratch.swarm_samples,
            )  # fmt: skip
            for entry in entries:
                averager.journal.append(entry)
            await averager.applied(None)
            return True
        return await self._take_state(member, outcome.repair_from)

    async def kill(self, peer: bytes) -> None:
        member = self.members.pop(peer)
        self._killed.append(member.host.peer_name[-8:])
        for task in (member.beat, member.task, member.repair):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        await member.host.kill()
        await member.averager.shutdown()

    def kill_when(self, trigger: Callable[[bytes, bytes, str], bytes | None]) -> None:
        """Kill the peer ``trigger(src, dst, kind)`` names, the first time it names one."""
        self.kill_on.append((trigger, "armed"))

    def _frame_seen(self, src: bytes, dst: bytes, kind: str) -> None:
        for i, (trigger, state) in enumerate(self.kill_on):
            if state != "armed":
                continue
            victim = trigger(src, dst, kind)
            if victim is not None and victim in self.members:
                self.kill_on[i] = (trigger, "fired")
                task = asyncio.get_running_loop().create_task(self.kill(victim))
                self._kills.add(task)  # a task nobody holds may be collected before it runs
                task.add_done_callback(self._kills.discard)

    # ------------------------------------------------------------------ rounds

    async def _one(self, member: _Member) -> RoundOutcome:
        averager = member.averager
        delta = torch.randn(self.settings.real_elements, generator=member.generator) * 0.01
        outcome = await averager.run_round(Contribution(delta=delta, weight=1.0, samples=1, local_steps=1))
        copy = averager.copy
        if outcome.status is Status.COMMITTED:
            for update in outcome.updates:
                copy.apply_shard(update.first, update.aggregate, update.stride)
            copy.round = outcome.round
            copy.global_step += outcome.global_step_increment
            copy.swarm_samples += outcome.samples
            await averager.applied(outcome)
        elif outcome.status is Status.REPAIR:
            member.repair = asyncio.create_task(self._repair(member, outcome))
        return outcome

    async def run_round(self, index: int) -> RoundReport:
        """Every live member runs one round; the report of what it cost."""
        loop = asyncio.get_running_loop()
        peers = [p for p, m in self.members.items() if m.repair is None or m.repair.done()]
        before = {
            p: (self.network.traffic(p).round_sent, self.network.traffic(p).round_received) for p in peers
        }
        joins_before = {p: self.network.traffic(p).received["join"] for p in peers}
        dht_before = self.dht.stats.replica_bytes[members_key(RUN_ID)]
        self.dht.stats.largest_value_bytes = 0
        self._killed = []
        started = loop.time()
        tasks = []
        for peer in peers:
            task = asyncio.create_task(self._one(self.members[peer]))
            self.members[peer].task = task
            tasks.append(task)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        round_s = loop.time() - started
        outcomes = [r for r in results if isinstance(r, RoundOutcome)]
        statuses = Counter(o.status.name for o in outcomes)
        statuses.update("KILLED" for r in results if isinstance(r, BaseException))
        committed = [o for o in outcomes if o.status is Status.COMMITTED]
        round_id = max((o.round for o in committed), default=0)
        members = next((o.members for o in committed), [])
        owners = set(assign_owners(RUN_ID, self.settings.num_shards, members)) if members else set()
        moved = {p: self._moved(p, before[p]) for p in peers}
        conductor = max(peers, key=lambda p: self.network.traffic(p).received["join"] - joins_before[p])
        digests = {
            self.members[p].averager.copy.digest for p in peers if p in self.members and self._settled(p)
        }
        return RoundReport(
            round=index,
            members=len(peers),
            statuses=dict(statuses),
            committed_round=round_id,
            round_s=round_s,
            duration_median_s=sorted(o.duration_s for o in outcomes)[len(outcomes) // 2] if outcomes else 0.0,
            bytes_sent_mean=sum(s for s, _ in moved.values()) / len(peers),
            bytes_received_mean=sum(r for _, r in moved.values()) / len(peers),
            busiest_owner_bytes=max((sum(moved[p]) for p in owners if p in moved), default=0),
            conductor_bytes=sum(moved[conductor]),
            dht_replica_bytes=self.dht.stats.replica_bytes[members_key(RUN_ID)] - dht_before,
            dht_largest_value_bytes=self.dht.stats.largest_value_bytes,
            aborted_shards=max((len(o.aborted_shards) for o in committed), default=0),
            repairs=statuses.get("REPAIR", 0),
            joins=0,
            distinct_digests=len(digests),
            killed=list(self._killed),
            repairing=sum(1 for p in peers if p in self.members and not self._settled(p)),
        )

    def _settled(self, peer: bytes) -> bool:
        """Not repairing: its x' counts towards the digests compared."""
        repair = self.members[peer].repair
        return repair is None or repair.done()

    def _moved(self, peer: bytes, before: tuple[int, int]) -> tuple[int, int]:
        traffic = self.network.traffic(peer)
        return traffic.round_sent - before[0], traffic.round_received - before[1]

    async def shutdown(self) -> None:
        for member in self.members.values():
            for task in (member.beat, member.task, member.repair):
                if task is not None:
                    task.cancel()
        for member in self.members.values():
            await member.host.kill()
            await member.averager.shutdown()
        # Let cancelled tasks unwind before the loop closes.
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
