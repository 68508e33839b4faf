"""Shared set-up for the protocol tests: real libp2p hosts in one process, members on them, and the
checkpoint services; plus what the node does with a round's outcome, on bare tensors.

Each test module keeps the constants that are its own (vector sizes, shard counts, timings with
other group sizes); what several modules share lives here, so that no test module imports another.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import torch

from swarm.auth import Gate
from swarm.averaging.defence import Defence
from swarm.averaging.outcome import RoundOutcome, Status
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.averaging.timing import RoundTiming
from swarm.checkpoint.artifacts import ArtifactStore
from swarm.checkpoint.manifest import Manifest
from swarm.checkpoint.service import CheckpointService
from swarm.checkpoint.store import CheckpointStore
from swarm.compression.codecs import Codec, Fp32Codec
from swarm.dht.records import MemberRecord, members_key
from swarm.identity import generate_identity, load_identity
from swarm.p2p import HostOptions, SwarmHost

RUN_ID = "proto"
"""The run the members join unless a test names its own (runs on one DHT keep their members apart)."""

TIMING = RoundTiming(gather_s=0.2, join_grace_s=3.0, join_timeout_s=15.0, min_group=2, min_transfer_s=2.0)
"""Rounds of two or more members on loopback: a short gathering, joins bounded well above what a
loaded machine needs."""

TEST_BOUND_S = 120
"""The most one test's event loop may run: a bound that turns a hang into a failure, not a wait."""

HOST_STARTUP_TIMEOUT_S = 60
"""How long a host may take to start its p2pd and DHT: on a loaded 2-core CI machine a DHT process
took over the 20 s default."""

HEARTBEAT_TTL_S = 60
"""How long a member's heartbeat stays in the DHT: longer than any test that does not renew it."""

CHUNK = 64 * 1024
"""Chunk size of the checkpoints the checkpoint tests build (small, so that a file has many)."""

CHECKPOINT_RUN_ID = "ckpt"
"""The run whose checkpoints the checkpoint services serve."""

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
"""Where the hosts listen: loopback TCP on a port the system picks."""


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a test's coroutine in a fresh event loop, failing it after ``TEST_BOUND_S``."""
    asyncio.run(asyncio.wait_for(coro, timeout=TEST_BOUND_S))


async def start_hosts(count: int, *, identities: Sequence[Path] = ()) -> list[SwarmHost]:
    """``count`` hosts on loopback, each bootstrapped from the first; with ``identities`` (one key file
    per host) their peer ids are those keys'. If one fails to start, those started are shut down."""
    if identities and len(identities) != count:
        raise ValueError(f"{len(identities)} identities for {count} hosts")
    paths: list[str | None] = [str(path) for path in identities] if identities else [None] * count
    first = HostOptions(
        host_maddrs=LOOPBACK, identity_path=paths[0], startup_timeout_s=HOST_STARTUP_TIMEOUT_S
    )
    hosts = [await SwarmHost.start(first)]
    try:
        for path in paths[1:]:
            peers = tuple(await hosts[0].visible_maddrs())
            options = HostOptions(
                host_maddrs=LOOPBACK,
                initial_peers=peers,
                identity_path=path,
                startup_timeout_s=HOST_STARTUP_TIMEOUT_S,
            )
            hosts.append(await SwarmHost.start(options))
    except BaseException:
        for host in hosts:  # the test never gets them to shut down
            await host.shutdown()
        raise
    return hosts


async def announce(
    host: SwarmHost,
    run_id: str = RUN_ID,
    *,
    round: int = 0,
    fresh: bool = False,
    credential: bytes = b"",
    ttl_s: float = HEARTBEAT_TTL_S,
    addrs: tuple[str, ...] = (),
) -> None:
    """Store the host's member heartbeat for ``run_id``: its x' at ``round``, one local step a round."""
    record = MemberRecord(
        round=round, global_step=0, local_steps_per_round=1.0, credential=credential, fresh=fresh,
        addrs=addrs,
    )  # fmt: skip
    await host.dht_store(members_key(run_id), record.to_wire(), ttl_s=ttl_s, subkey=host.peer_name)


async def start_member(
    host: SwarmHost,
    start: torch.Tensor,
    *,
    codec: Codec | None = None,
    run_id: str = RUN_ID,
    num_shards: int = 4,
    timing: RoundTiming = TIMING,
    round: int = 0,
    fresh: bool = False,
    warmup_rounds: int = 0,
    exact_every: int = 0,
    defence: Defence | None = None,
    gate: Gate | None = None,
    heartbeat_ttl_s: float | None = HEARTBEAT_TTL_S,
) -> Averager:
    """A started averager of ``run_id`` on a copy of ``start`` (x' at ``round``), fp32 unless ``codec``
    is given, whose heartbeat (``announce``) says it is a live member for ``heartbeat_ttl_s``; with
    ``heartbeat_ttl_s=None`` it announces none (the test announces it when it chooses)."""
    averager = Averager(
        host,
        run_id=run_id,
        codec=codec or Fp32Codec(),
        global_copy=GlobalCopy(start.clone(), round=round),
        num_shards=num_shards,
        timing=timing,
        warmup_rounds=warmup_rounds,
        exact_every=exact_every,
        defence=defence,
        gate=gate,
    )
    averager.fresh = fresh
    await averager.start()
    if heartbeat_ttl_s is not None:
        await announce(host, run_id, round=round, fresh=fresh, ttl_s=heartbeat_ttl_s)
    return averager


def apply_outcome(outcome: RoundOutcome, x: torch.Tensor, copy: GlobalCopy) -> torch.Tensor:
    """What the node does with an outcome to x' and to x_i (``TrainingLoop._finish_round`` in
    node/loop.py: the trainer's ``apply_folds`` and ``apply_round``), with x_i a bare vector; returns
    the new x_i. The counters beside x' are left alone."""
    x = x.clone()
    for start, moved in outcome.folds:
        x[start : start + moved.numel()] += moved
    if outcome.status is Status.COMMITTED:
        for update in outcome.updates:  # values on the shard's support: every stride-th entry
            copy.apply_shard(update.first, update.aggregate, update.stride)
            change = update.aggregate if update.own is None else update.aggregate - update.own
            x[update.first :: update.stride][: change.numel()] += change
        copy.round = outcome.round
    return x


def commit_to_copy(outcome: RoundOutcome, copy: GlobalCopy) -> None:
    """What the node does to x' and its counters with an outcome (``TrainingLoop._finish_round`` in
    node/loop.py, x' part of node/trainer.py ``apply_round``); an outcome that did not commit changes
    nothing."""
    if outcome.status is not Status.COMMITTED:
        return
    for update in outcome.updates:
        copy.apply_shard(update.first, update.aggregate, update.stride)
    copy.round = outcome.round
    copy.global_step += outcome.global_step_increment
    copy.swarm_samples += outcome.samples


MEMBERS_ROUND = 100
MEMBERS_TTL_S = 600.0


async def checkpoint_nodes(
    folder: Path, count: int, *, artifacts: bool = False
) -> tuple[list[SwarmHost], list[CheckpointService]]:
    """``count`` hosts with identities kept in ``folder``, each serving its own checkpoint store there
    (``store<i>``) for the run ``CHECKPOINT_RUN_ID``, each a member whose heartbeat says its x' is at
    round ``MEMBERS_ROUND`` (the members attest the pointers readers follow: swarm.dht.attestation).
    With ``artifacts``, each also holds and serves an artifact store (``artifacts<i>``)."""
    identities = [folder / f"id{i}.key" for i in range(count)]
    for identity in identities:
        generate_identity(identity)
    hosts = await start_hosts(count, identities=identities)
    services: list[CheckpointService] = []
    for i, (host, identity) in enumerate(zip(hosts, identities, strict=True)):
        store = CheckpointStore(folder / f"store{i}")
        service = CheckpointService(
            host, store, run_id=CHECKPOINT_RUN_ID, key=load_identity(identity),
            artifacts=ArtifactStore(folder / f"artifacts{i}") if artifacts else None,
        )  # fmt: skip
        await service.start()
        services.append(service)
        await announce(host, CHECKPOINT_RUN_ID, round=MEMBERS_ROUND, ttl_s=MEMBERS_TTL_S)
    return hosts, services


def read_files(folder: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    """The bytes of each of ``files`` as written in ``folder``, to compare with ``files``."""
    return {name: (folder / name).read_bytes() for name in files}


def random_checkpoint_files(model_bytes: int) -> dict[str, bytes]:
    """A checkpoint's files: random model weights of ``model_bytes`` and small fixed configs."""
    return {
        "model.safetensors": os.urandom(model_bytes),
        "config.json": b'{"model_type":"llama"}',
        "swarm.json": b"{}",
    }


class HostView:
    """A host whose DHT answers a member list as ``members`` rewrites it (a stale or withheld
    replica: what one member reads while the others read the truth); everything else passes on."""

    def __init__(self, host: SwarmHost):
        self._host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    @property
    def peer_id(self) -> bytes:
        return self._host.peer_id

    @property
    def peer_name(self) -> str:
        return self._host.peer_name

    def members(self, records: dict[str, Any]) -> dict[str, Any]:
        return records

    async def dht_get_subkeys(
        self, key: str, parse: Callable[[Any], Any], *, latest: bool = True
    ) -> dict[str, Any]:
        records = await self._host.dht_get_subkeys(key, parse, latest=latest)
        return self.members(records) if key == members_key(RUN_ID) else records


def serve_manifest_only(service: CheckpointService, manifest: Manifest) -> None:
    """Make ``service`` answer Manifest requests for ``manifest`` without holding its files (as a
    hostile provider of a forged manifest does: the chunks are never asked for)."""
    folder = service.store.download_folder(manifest.hash)
    folder.mkdir(parents=True)
    service.store.adopt(manifest, folder)
