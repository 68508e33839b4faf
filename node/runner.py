"""One node's life: start the host, agree on the run, catch up, train and average, report, leave.

    run(config) -> exit code
      host      SwarmHost: p2pd + DHT (swarm.p2p)
      spec      the run's RunSpec, published by the first node, adopted by joiners
      trainer   x_i and its optimizer (node.trainer)
      averager  rounds over x' (swarm.averaging.round)
The event loop serves peers' streams at all times; local steps run in a worker thread between rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from node.config import NetworkConfig, NodeConfig, RunConfig
from node.reporting import Reporter, local_address_towards
from node.resume import ResumeError, load_resume_state, save_resume_state
from node.trainer import LocalTrainer, describe_device, pick_device
from swarm import __version__
from swarm.auth import CredentialError, Gate, Revocations
from swarm.averaging.journal import JournalEntry
from swarm.averaging.round import (
    PROTOCOL_VERSION,
    Averager,
    Contribution,
    Misbehaviour,
    ReplayError,
    RoundOutcome,
    Status,
    fetch_journal,
    fetch_state,
)
from swarm.averaging.shards import gather, shards_for
from swarm.averaging.state import GlobalCopy
from swarm.checkpoint.files import SWARM_FILE, CheckpointFolderError, checkpoint_files, read_checkpoint_folder
from swarm.checkpoint.manifest import Manifest, build_manifest
from swarm.checkpoint.pointer import Pointer, PointerError, generate_identity, load_identity
from swarm.checkpoint.service import CheckpointService, fetch_checkpoint, read_pointers
from swarm.checkpoint.store import CheckpointStore
from swarm.checkpoint.wire import pointer_from_pb, pointer_to_pb
from swarm.compression.cocktail import CocktailParams
from swarm.compression.codecs import Codec
from swarm.compression.registry import make_codec
from swarm.data.corpus import load_corpus
from swarm.data.sampling import eval_batches, train_batch
from swarm.dht.records import (
    MAX_MEMBER_ADDRS,
    MAX_ROUND_PERIOD_S,
    CoordinatorRecord,
    MemberRecord,
    RunSpec,
    checkpoints_key,
    config_key,
    coordinator_key,
    members_key,
)
from swarm.metrics import NodeMetrics
from swarm.models.build import build_model, resolve_model
from swarm.p2p import BootstrapError, HostOptions, SwarmHost, peer_from_name, peer_name
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as ckpt_pb
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as coord_pb

logger = logging.getLogger("swarm.node")

HEARTBEAT_INTERVAL_S = 5.0
NETWORK_CHECK_INTERVAL_S = 3.0
STATUS_ROUNDS = 50
"""The status file lists this many most recent rounds (round, digest, group size, time)."""
OVERLAP_MARGIN = 1.25
"""With overlap, a round's communication should take at most 1/1.25 of the next round's compute."""
SERIAL_FACTOR = 4.0
"""Without overlap, rounds are spaced so that communication takes at most a quarter of the time."""
SPEC_TTL_S = 24 * 3600.0


class NodeError(RuntimeError):
    """A condition that stops the node with one clear line (no traceback)."""


@dataclass
class Progress:
    """Counters shared by the training thread and the event loop (plain ints and floats)."""

    steps: int = 0
    samples: int = 0
    last_loss: float | None = None
    eval_loss: float | None = None
    steps_since_round: int = 0
    samples_since_round: int = 0
    steps_in_flight: int = 0
    """Local steps of the contribution whose round is communicating now (overlap)."""
    rounds: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """Checkpoints this node wrote and announced: round and manifest hash."""
    catch_up: dict[str, Any] = field(default_factory=dict)
    """How this node got the swarm's x' when it joined (source, rounds, bytes)."""
    peers: int = 0
    relayed: list[str] = field(default_factory=list)
    """Connected peers reached only through a relay (base58)."""
    direct: list[str] = field(default_factory=list)
    """Connected peers with at least one direct connection (base58)."""
    aborted_shards: int = 0
    repairs: int = 0
    rejections: int = 0
    excluded_parts: int = 0
    local_steps_last_round: int = 0
    round_period_s: float = 0.0
    wanted_period_s: float = 0.0
    round_time_ema_s: float | None = None
    last_members: frozenset[bytes] = frozenset()
    """The group of the last committed round (whether the next one's matchmaking waited for joiners)."""
    bytes_sent: int = 0
    bytes_received: int = 0
    fp32_bytes: int = 0
    loop_cpu_s: float = 0.0
    """CPU seconds of the averaging work: the event loop thread and the worker that hashes x'
    (training has its own thread)."""
    loop_cpu_mark_s: float | None = None
    hash_cpu_mark_s: float = 0.0
    training_idle_s: float = 0.0
    """Wall time the training thread stood still between rounds (waiting for, applying, preparing them)."""


def _ip_of(maddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    parts = maddr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(parts[2])
        except ValueError:
            return None
    return None


def effective_reachability(net: NetworkConfig) -> str:
    """``net.reachability``, except that in auto mode a node that listens on private addresses only
    and joins through a peer with a public one is behind NAT: it is private from the start, so it
    reserves a relay slot at once instead of waiting for AutoNAT's verdict (minutes, or never when
    too few peers can dial back). A swarm on one LAN or on loopback stays on auto."""
    if net.reachability != "auto" or net.announce_maddrs:
        return net.reachability
    ours: list[ipaddress.IPv4Address | ipaddress.IPv6Address | None] = []
    for a in (_ip_of(m) for m in net.host_maddrs):
        # 0.0.0.0 / :: listen on every interface: judge by the interfaces' addresses.
        ours += _interface_addresses(a.version) if a is not None and a.is_unspecified else [a]
    theirs = [_ip_of(m) for m in net.peers]
    private_here = all(a is not None and not a.is_global for a in ours)
    if private_here and any(a is not None and a.is_global for a in theirs):
        return "private"
    return "auto"


def _interface_addresses(version: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    import socket

    import psutil

    family = socket.AF_INET if version == 4 else socket.AF_INET6
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address | None] = []
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.family == family:
                with contextlib.suppress(ValueError):
                    ip = ipaddress.ip_address(entry.address.split("%")[0])
                    if not ip.is_loopback and not ip.is_link_local:
                        found.append(ip)
    return found


def reachability(visible: Sequence[str], announced: Sequence[str]) -> str:
    """What a user should know at start-up about whether other peers can dial this node."""
    if announced:
        return (
            f"announcing {', '.join(announced)}: peers dial this node there, so that port must be open"
            " or forwarded to this machine"
        )
    direct = [m for m in visible if "p2p-circuit" not in m]
    public = [m for m in direct if (a := _ip_of(m)) is not None and a.is_global]
    if public:
        return f"public address(es) {', '.join(public)}: peers anywhere can dial this node"
    if any("p2p-circuit" in m for m in visible):
        return "reachable through a relay only (/p2p-circuit): expect slower rounds"
    return (
        "only private or loopback addresses: peers outside this network cannot dial this node (behind"
        " NAT or a firewall). Peers on the same network can. To serve the internet, forward the port"
        " and pass --announce-maddr with the public address, or pass --reachability private to be"
        " reached through a relay"
    )


def cap_gpu_memory(device: torch.device, gigabytes: float | None) -> None:
    """Cap torch's allocator on ``device`` at ``gigabytes`` (the micro-batch search then fits under it)."""
    if gigabytes is None:
        return
    if device.type != "cuda":
        logger.info("--gpu-memory-gb %.1f has no effect: training on %s", gigabytes, device)
        return
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, gigabytes * 1e9 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    logger.info("GPU memory capped at %.1f GB of %.1f GB", fraction * total / 1e9, total / 1e9)


def codec_for_spec(spec: RunSpec) -> Codec:
    params = (
        CocktailParams(sparsity=spec.sparsity, topk=spec.topk, bits=spec.bits)
        if spec.codec == "cocktail"
        else None
    )
    return make_codec(spec.codec, params)


def period_grid(base_s: float) -> Iterator[float]:
    """The periods a swarm may round on: ``base_s`` times 1, 1.5, 2, 3, 4, 6, 8, ... (up to
    MAX_ROUND_PERIOD_S). Neighbours are at most 1.5x apart, so a round never waits more than a third
    of its period for the next boundary (powers of two alone left up to half of it, and half of a slow
    link, idle), and any two periods of the grid still share a boundary at least every 3 of the longer."""
    k = 0
    while (period := base_s * 2 ** (k // 2) * (1.5 if k % 2 else 1.0)) <= MAX_ROUND_PERIOD_S:
        yield period
        k += 1


def wanted_period(base_s: float, round_time_s: float, *, overlap: bool) -> float:
    """The shortest period of ``period_grid(base_s)`` in which a round of ``round_time_s`` hides."""
    needed = round_time_s * (OVERLAP_MARGIN if overlap else SERIAL_FACTOR)
    chosen = base_s
    for chosen in period_grid(base_s):
        if chosen >= needed:
            break
    return chosen


def round_time_to_hide(outcome: RoundOutcome, last_members: frozenset[bytes]) -> float:
    """The seconds of a committed round that the next period must hide behind local steps.

    A round with the same group as the last one is sized by its whole duration (matchmaking, the
    exchange, the commit): all of it keeps the next round's members from starting. A round whose group
    changed is sized by its exchange alone, since its matchmaking waited for joiners or for a
    member's timeout, which a longer period would not hide."""
    return outcome.duration_s if frozenset(outcome.members) == last_members else outcome.transfer_s


def spec_for(run: RunConfig, *, model_hash: str, data_hash: str, initial_digest: str) -> RunSpec:
    values = run.resolved()
    return RunSpec(
        model=values["model"],
        model_hash=model_hash,
        initial_digest=initial_digest,
        data=",".join(values["data"]),
        data_hash=data_hash,
        codec=values["codec"],
        sparsity=float(values["sparsity"]),
        topk=float(values["topk"]),
        bits=values["bits"],
        warmup_rounds=values["warmup_rounds"],
        exact_every=values["exact_every"],
        seq_len=values["seq_len"],
        batch_size=values["batch_size"],
        lr=float(values["lr"]),
        warmup_steps=values["warmup_steps"],
        total_steps=values["total_steps"],
        weight_decay=float(values["weight_decay"]),
        seed=values["seed"],
        num_shards=values["num_shards"],
        software=f"swarm-averaging/{PROTOCOL_VERSION}",
        owner_key=values["owner_key"],
    )


def _check_adoption(run: RunConfig, spec: RunSpec) -> None:
    """A joiner's explicit run-level settings must match the run's."""
    mismatches = []
    for name, value in run.explicit().items():
        theirs: Any = getattr(spec, name)
        ours: Any = ",".join(value) if name == "data" else value
        if ours != theirs:
            mismatches.append(f"{name}: this node has {ours!r}, the run has {theirs!r}")
    if spec.software != f"swarm-averaging/{PROTOCOL_VERSION}":
        mismatches.append(
            f"software: this node speaks swarm-averaging/{PROTOCOL_VERSION}, the run {spec.software}"
        )
    if mismatches:
        raise NodeError(
            f"this node's settings contradict run {run.run_id!r}: "
            + "; ".join(mismatches)
            + " (drop these options to adopt the run's values, or pick another --run-id)"
        )


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.metrics = NodeMetrics()
        self.progress = Progress()
        self.stop = asyncio.Event()
        self.stop_thread = threading.Event()
        self.paused = threading.Event()
        """Set by SIGUSR1 (``swarm-node pause``), cleared by SIGUSR2: no local steps meanwhile; the
        node stays a member of the rounds (owner of its shards, its unsent work still goes out)."""
        self.host: SwarmHost | None = None
        self.averager: Averager | None = None
        self.maddrs: list[str] = []
        self.gate: Gate | None = None
        """Who may take part (a closed run's rule); set once the run's spec is known."""
        self.metrics_port: int | None = None
        self.progress.round_period_s = config.training.round_period_s
        self.metrics.round_period.set(config.training.round_period_s)
        self._results_sent = 0
        self._round_in_progress = 0
        self._dumped_delta: torch.Tensor | None = None
        """x_i - x' (dense) of the round in progress, for fault dumps only (``--dump-dir``)."""
        self.reporter: Reporter | None = None
        self._archive_stored: dict[tuple[str, bytes], float] = {}
        self._last_report_t = time.time()
        self._tasks: list[asyncio.Task] = []
        self.started = time.time()
        self._last_eval_t = time.monotonic()
        self._scratch = Path(tempfile.gettempdir())
        self.key: Ed25519PrivateKey | None = None
        self.checkpoints: CheckpointService | None = None
        self._publishing: asyncio.Task | None = None

    # --- start-up -----------------------------------------------------------------------------

    def _gate(self, spec: RunSpec, host: SwarmHost) -> Gate:
        """Who may take part in this run, and this node's own credential (checked now, clearly)."""
        net, run_id = self.config.network, self.config.run.run_id
        if not spec.owner_key:
            if net.credential is not None:
                logger.info("run %r is open: --credential is not needed", run_id)
            return Gate(run_id=run_id)
        revoked: frozenset[int] = frozenset()
        if net.revocations is not None:
            try:
                raw = Path(net.revocations).read_bytes()
                revoked = Revocations.from_bytes(raw, owner_key=spec.owner_key, run_id=run_id).serials
            except (OSError, CredentialError) as e:
                raise NodeError(f"--revocations {net.revocations}: {e}") from None
        own = b""
        if net.credential is not None:
            try:
                own = Path(net.credential).read_bytes()
            except OSError as e:
                raise NodeError(f"--credential {net.credential}: {e}") from None
        gate = Gate(run_id=run_id, owner_key=spec.owner_key, own_credential=own, revoked=revoked)
        problem = gate.problem(host.peer_id, own)
        if problem is None:
            logger.info("closed run %r: this node's credential is valid", run_id)
        elif self.config.fault.ignore_auth:
            logger.warning(
                "test hook: taking part in closed run %r without a valid credential (%s)", run_id, problem
            )
        else:
            raise NodeError(
                f"run {run_id!r} is closed and this node may not take part: {problem}. Ask the run's owner"
                f" for a credential for peer id {host.peer_name} (swarm-node credential issue --peer-id"
                f" {host.peer_name} ...), then pass --credential FILE, with --identity so the peer id stays"
            )
        return gate

    def _identity(self) -> Path:
        """The peer key file (created as Ed25519 if missing; a scratch one without --identity)."""
        net = self.config.network
        path = Path(net.identity) if net.identity is not None else self._scratch / "identity.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            generate_identity(path)
        self.key = load_identity(path)
        if self.key is None:
            logger.warning(
                "identity %s is not an Ed25519 key: this node serves checkpoints but cannot announce them",
                path,
            )
        return path

    async def _start_host(self) -> SwarmHost:
        net = self.config.network
        options = HostOptions(
            initial_peers=tuple(net.peers),
            host_maddrs=tuple(net.host_maddrs),
            announce_maddrs=tuple(net.announce_maddrs),
            identity_path=str(self._identity()),
            nat_port_map=net.nat_port_map,
            reachability=effective_reachability(net),
            auto_relay=net.auto_relay,
            relays=tuple(net.relays),
            startup_timeout_s=net.startup_timeout_s,
            max_upload_bytes_per_s=None if net.max_upload_mbit is None else net.max_upload_mbit * 1e6 / 8,
        )
        try:
            host = await SwarmHost.start(options)
        except BootstrapError as e:
            raise NodeError(f"{e}; run id {self.config.run.run_id!r}") from None
        host.on_bytes = self.metrics.count_bytes
        return host

    async def _find_run_spec(self, host: SwarmHost) -> RunSpec | None:
        """A joiner's run spec, read once before anything is loaded; None for a node starting the run."""
        run = self.config.run
        if not self.config.network.peers:
            return None
        key = config_key(run.run_id)
        # The swarm may be reachable but our routing table still filling: look a few times.
        for attempt in range(11):
            existing = await host.dht_get(key, RunSpec.from_wire)
            if existing is not None:
                _check_adoption(run, existing)
                return existing
            if attempt < 10:
                await asyncio.sleep(0.5)
        raise NodeError(
            f"the peers at {', '.join(self.config.network.peers)} answered, but no run {run.run_id!r} is"
            " published in their swarm: check --run-id"
        )

    async def _publish_run_spec(self, host: SwarmHost, spec: RunSpec) -> None:
        await host.dht_store(config_key(self.config.run.run_id), spec.to_wire(), ttl_s=SPEC_TTL_S)

    async def _fetch_from_any(
        self, peers: list[bytes], copy: GlobalCopy, *, min_round: int = 0
    ) -> tuple[bytes, torch.Tensor] | None:
        """Replace x' (and its counters) with the first peer's copy that downloads and verifies.

        Returns the peer and our previous x', or None when no peer could send its copy.
        """
        assert self.host is not None
        for peer in peers:
            try:
                header, values = await fetch_state(
                    self.host,
                    peer,
                    run_id=self.config.run.run_id,
                    num_elements=copy.values.numel(),
                    min_round=min_round,
                    connect_timeout_s=5.0,
                    timeout_s=600.0,
                )
            except Exception as e:
                logger.warning("could not fetch x' from %s: %s", peer_name(peer)[-8:], e)
                continue
            old = copy.values.clone()
            copy.replace(
                values, round=header.round, global_step=header.global_step, swarm_samples=header.swarm_samples
            )
            if self.averager is not None:
                self.averager.journal.clear()  # its rounds no longer lead to this x'
            logger.info(
                "took x' from %s: round %d, global step %d",
                peer_name(peer)[-8:],
                header.round,
                header.global_step,
            )
            return peer, old
        return None

    async def _replay_from_any(
        self, peers: list[bytes], copy: GlobalCopy, *, min_round: int = 0
    ) -> tuple[bytes, list[JournalEntry]] | None:
        """Bring x' forward by replaying the rounds a peer journaled since our round (first peer
        that can), checking x's digest after every round. Returns the peer and the rounds replayed,
        or None when no peer could (its journal does not reach back, or it does not replay)."""
        assert self.host is not None and self.averager is not None
        averager = self.averager
        for peer in peers:
            try:
                entries = await fetch_journal(
                    self.host, peer, run_id=self.config.run.run_id, after_round=copy.round,
                    min_round=min_round, num_shards=averager.layout.num_shards,
                    max_part_bytes=averager.shard_frame_bytes, max_total_bytes=averager.journal.max_bytes,
                    connect_timeout_s=5.0, timeout_s=600.0,
                )  # fmt: skip
                if copy.round + len(entries) < min_round:
                    raise ReplayError(f"its journal ends before round {min_round}")
                scratch = GlobalCopy(
                    copy.values.clone(), round=copy.round, global_step=copy.global_step,
                    swarm_samples=copy.swarm_samples,
                )  # fmt: skip
                await asyncio.to_thread(averager.replay, entries, scratch)
            except Exception as e:  # refused, gone, malformed, or it does not lead to the digests
                logger.info("could not replay rounds from %s: %s", peer_name(peer)[-8:], e)
                continue
            copy.replace(
                scratch.values, round=scratch.round, global_step=scratch.global_step,
                swarm_samples=scratch.swarm_samples,
            )  # fmt: skip
            for entry in entries:  # the same rounds now lead to our x': we can serve them too
                averager.journal.append(entry)
            return peer, entries
        return None

    async def _dial(self, pointers: list[Pointer]) -> None:
        """Dial providers at the addresses their pointers name, all at once (a few seconds at most):
        the coordinator's archive, for one, is no hivemind peer that p2pd could look up."""
        assert self.host is not None
        host = self.host

        async def dial(pointer: Pointer) -> None:
            try:
                await host.connect(pointer.provider, pointer.addrs, timeout_s=5.0)
            except Exception as e:  # a provider that left: the download goes on without it
                logger.info("could not dial provider %s: %s", peer_name(pointer.provider)[-8:], e)

        await asyncio.gather(*(dial(p) for p in pointers))

    async def _load_swarm_checkpoint(
        self, copy: GlobalCopy, trainer: LocalTrainer, spec: RunSpec
    ) -> Manifest | None:
        """Download the run's newest checkpoint from every provider that announced it (verified
        chunk by chunk, resumable) into this node's store, and take x' from it. None if none."""
        assert self.host is not None and self.checkpoints is not None
        pointers = [
            p
            for p in await read_pointers(self.host, self.config.run.run_id, self.gate)
            if p.round > copy.round
        ]
        if not pointers:
            return None
        newest = pointers[0]
        providers = sorted({p.provider for p in pointers if p.manifest_hash == newest.manifest_hash})
        await self._dial([p for p in pointers if p.manifest_hash == newest.manifest_hash and p.addrs])
        store = self.checkpoints.store
        manifest = store.manifest(newest.manifest_hash)
        try:
            if manifest is None:
                folder = store.download_folder(newest.manifest_hash)
                logger.info(
                    "downloading the checkpoint of round %d (%.1f MB) from %d provider(s)",
                    newest.round, newest.total_bytes / 1e6, len(providers),
                )  # fmt: skip
                shown = [0]

                def progress(have: int, total: int) -> None:
                    tenth = 10 * have // max(1, total)
                    if tenth > shown[0]:
                        shown[0] = tenth
                        logger.info("checkpoint download: %d%% of %.1f MB", 10 * tenth, total / 1e6)

                manifest = await fetch_checkpoint(
                    self.host, providers, newest.manifest_hash, folder, on_progress=progress
                )
                await asyncio.to_thread(store.adopt, manifest, folder)
            values, info = await asyncio.to_thread(
                read_checkpoint_folder, store.folder(manifest.hash), trainer.model
            )
            if info.get("run_id") != self.config.run.run_id or info.get("round") != manifest.round:
                raise CheckpointFolderError("its swarm.json names another run or round than its manifest")
            _check_saved_spec(info["spec"], spec, store.folder(manifest.hash))
        except Exception as e:  # no provider delivered, or what they delivered is not this run's
            logger.warning("could not start from the checkpoint of round %d: %s", newest.round, e)
            return None
        copy.replace(
            values, round=info["round"], global_step=info["global_step"], swarm_samples=info["swarm_samples"]
        )
        if self.averager is not None:
            self.averager.journal.clear()
        self.progress.catch_up.update(
            checkpoint_round=manifest.round, checkpoint_bytes=manifest.total_bytes, checkpoint_manifest=manifest.hash,
            providers=len(providers), provider_names=[peer_name(p) for p in providers],
        )  # fmt: skip
        return manifest

    async def _catch_up(
        self,
        averager: Averager,
        copy: GlobalCopy,
        trainer: LocalTrainer,
        spec: RunSpec,
        *,
        keep_local_work: bool = False,
    ) -> None:
        """A joiner first takes x' (and its round and step) from the swarm: the newest checkpoint,
        downloaded from all its providers, then the rounds since replayed from a member's journal;
        failing that (no checkpoint, or no journal reaching back to it), x' from the most advanced
        live member. A resumed node replays or downloads what it missed and keeps its unsent work
        (x_i - x'): x_i moves by as much as x' does.
        """
        assert self.host is not None
        members = {p: r for p, r in (await averager.live_members()).items() if not r.leaving}
        members.pop(self.host.peer_id, None)
        # Whatever x' this node takes, its source may commit another round before we first meet it:
        # until our first committed round we are a newcomer (we gather at an established member,
        # and if we are behind it, we repair rather than outvote it).
        averager.fresh = bool(members)
        if keep_local_work:
            ahead = sorted(
                (p for p in members if members[p].round > copy.round), key=lambda p: -members[p].round
            )
            old = copy.values.clone()
            if ahead and (
                await self._replay_from_any(ahead, copy) is not None
                or await self._fetch_from_any(ahead, copy) is not None
            ):
                trainer.adopt_global_change(old, copy.values)
            return
        ranked = sorted(members, key=lambda peer: -members[peer].round)
        catch_up = self.progress.catch_up
        if (
            members
            and all(r.round == 0 for r in members.values())
            and copy.digest.hex() == spec.initial_digest
        ):
            # The heartbeats say no round yet, but they may be seconds old (a member alone can commit
            # rounds meanwhile, and a fresh pair trusting a stale "round 0" would then outvote it at
            # the next rendezvous): ask the members' journals what was committed since.
            replayed = await self._replay_from_any(ranked, copy)
            if replayed is not None and not replayed[1]:
                logger.info(
                    "the run has committed no round yet and this node holds its initial x': no download"
                )
                return
            if replayed is not None:
                self._caught_up_by_replay(replayed, copy, trainer, source="journal", start="")
                return
        checkpoint = await self._load_swarm_checkpoint(copy, trainer, spec) if ranked else None
        if checkpoint is not None:
            replayed = await self._replay_from_any(ranked, copy)
            if replayed is not None:
                _, entries = replayed
                if entries:  # the journal's digests vouch for the checkpoint: serve it too
                    assert self.checkpoints is not None
                    await self.checkpoints.publish(checkpoint)
                start = f"checkpoint of round {catch_up['checkpoint_round']}, then "
                self._caught_up_by_replay(replayed, copy, trainer, source="checkpoint+journal", start=start)
                return
            logger.info("no member's journal reaches back to the checkpoint: taking x' from a member")
        if await self._fetch_from_any(ranked, copy) is not None:
            trainer.load_flat(copy.values)
            catch_up.update(source="state transfer", round=copy.round)
            return
        if members:
            raise NodeError("no live member of the run could send its x'; try again in a moment")
        logger.warning("no live member to catch up from: starting from the run's initial weights")

    def _caught_up_by_replay(
        self,
        replayed: tuple[bytes, list[JournalEntry]],
        copy: GlobalCopy,
        trainer: LocalTrainer,
        *,
        source: str,
        start: str,
    ) -> None:
        """A joiner's x' was brought forward by a member's journal: train from it and report how."""
        peer, entries = replayed
        trainer.load_flat(copy.values)
        self.progress.catch_up.update(
            source=source, replayed_rounds=len(entries), round=copy.round,
            journal_bytes=sum(e.size for e in entries),
        )  # fmt: skip
        logger.info(
            "caught up: %s%d rounds replayed from %s's journal: round %d",
            start, len(entries), peer_name(peer)[-8:], copy.round,
        )  # fmt: skip

    async def _repair(self, outcome: RoundOutcome, copy: GlobalCopy, trainer: LocalTrainer) -> bool:
        """Bring x' to the round ``outcome`` names (or later); whether it did."""
        # The providers are committing this very round: ask for its result, not the copy before it.
        # A member that only fell behind replays the rounds it missed (a few percent of x' each with
        # a compressed codec); one whose x' went wrong, or is too far behind, downloads x'.
        old = copy.values.clone()
        replayed = await self._replay_from_any(outcome.repair_from, copy, min_round=outcome.round)
        if replayed is not None:
            logger.info("round %d: replayed %d missed rounds from %s", outcome.round, len(replayed[1]),
                        peer_name(replayed[0])[-8:])  # fmt: skip
        elif await self._fetch_from_any(outcome.repair_from, copy, min_round=outcome.round) is None:
            logger.warning(
                "round %d: could not repair x' from any of %d peers", outcome.round, len(outcome.repair_from)
            )
            return False
        trainer.adopt_global_change(old, copy.values)
        self.progress.repairs += 1
        self.metrics.repairs.inc()
        return True

    # --- background tasks ---------------------------------------------------------------------

    async def _heartbeat(self, copy: GlobalCopy) -> None:
        assert self.host is not None
        while True:
            record = MemberRecord(
                round=copy.round,
                global_step=copy.global_step,
                local_steps_per_round=float(self.progress.local_steps_last_round),
                wanted_period_s=self.progress.wanted_period_s,
                credential=self.averager.gate.own_credential if self.averager is not None else b"",
                fresh=self.averager.fresh if self.averager is not None else False,
                # Relay addresses first: they are the ones no routing table knows.
                addrs=tuple(sorted(self.maddrs, key=lambda m: "p2p-circuit" not in m)[:MAX_MEMBER_ADDRS]),
            )
            with contextlib.suppress(Exception):
                await self.host.dht_store(
                    members_key(self.config.run.run_id),
                    record.to_wire(),
                    ttl_s=3 * HEARTBEAT_INTERVAL_S,
                    subkey=self.host.peer_name,
                )
                if self.averager is not None and self.config.training.adaptive_rounds:
                    live = await self.averager.live_members()
                    self._adopt_period([r.wanted_period_s for r in live.values() if not r.leaving])
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def _watch_network(self) -> None:
        """Every few seconds: count direct and relayed connections; say so when our reachable
        addresses change (a private node's relay address appears once its reservation is made, and
        again after a reset); when every connection is gone (a router reboot, a relay reset), dial
        the bootstrap and relay peers again instead of waiting to be found. A node reached through
        relays keeps a slot on them (``SwarmHost.keep_relay_slots``) when p2pd lost its own."""
        assert self.host is not None
        net = self.config.network
        lonely_since: float | None = None
        connected_once = False
        relays = [*net.relays] or [*net.peers]
        through_relays = net.auto_relay and effective_reachability(net) == "private"
        while True:
            await asyncio.sleep(NETWORK_CHECK_INTERVAL_S)
            try:
                connections = await self.host.connections()
                p = self.progress
                p.peers = len(connections)
                p.relayed = sorted(peer for peer, kind in connections.items() if kind == "relayed")
                p.direct = sorted(peer for peer, kind in connections.items() if kind == "direct")
                self.metrics.peers.set(p.peers)
                self.metrics.relayed_peers.set(len(p.relayed))
                if connections:
                    lonely_since = None
                    connected_once = True
                elif lonely_since is None and connected_once:  # not the first node, alone at start
                    lonely_since = time.monotonic()
                    logger.warning("lost every connection to the swarm; dialling its peers again")
                if lonely_since is not None and (net.peers or net.relays):
                    reached = await self._redial([*net.relays, *net.peers])
                    if reached:
                        logger.info(
                            "reconnected to %d peer(s) after %.0f s alone",
                            reached,
                            time.monotonic() - lonely_since,
                        )
                through_relays = net.auto_relay and (
                    through_relays or any("p2p-circuit" in m for m in self.maddrs)
                )
                if through_relays and relays:
                    for relay in await self.host.keep_relay_slots(relays):
                        logger.info("p2pd holds no relay slot: reserved one on %s", relay)
                maddrs = await self.host.visible_maddrs(latest=True)
                if maddrs and set(maddrs) != set(self.maddrs):
                    self.maddrs = maddrs
                    logger.info("reachability: %s", reachability(maddrs, net.announce_maddrs))
            except Exception as e:  # the daemon is busy or restarting: try again next time
                logger.debug("network check failed: %s", e)

    async def _redial(self, maddrs: list[str]) -> int:
        """Connect to each ``.../p2p/<peer id>`` address that answers; how many did."""
        assert self.host is not None
        reached = 0
        for maddr in maddrs:
            address, _, peer = maddr.rpartition("/p2p/")
            try:
                await self.host.connect(peer_from_name(peer), [address])
                reached += 1
            except Exception as e:  # not there (yet): the next check tries again
                logger.debug("dialling %s failed: %s", maddr, e)
        return reached

    def _adopt_period(self, wanted: list[float]) -> None:
        """The swarm's round period: the longest any live member needs (never below our base)."""
        p = self.progress
        period = max([self.config.training.round_period_s, p.wanted_period_s, *wanted])
        if period != p.round_period_s:
            logger.info(
                "round period %.1f s -> %.1f s (what the slowest link needs)", p.round_period_s, period
            )
            p.round_period_s = period
            self.metrics.round_period.set(period)

    def _status(self, copy: GlobalCopy, state: str) -> dict[str, Any]:
        assert self.host is not None
        p = self.progress
        return {
            "state": "paused" if state == "training" and self.paused.is_set() else state,
            "pid": os.getpid(),
            "run_id": self.config.run.run_id,
            "peer_id": self.host.peer_name,
            "maddrs": self.maddrs,
            "metrics_port": self.metrics_port,
            "step": p.steps,
            "global_step": copy.global_step,
            "round": copy.round,
            "digest": None if copy.known_digest is None else copy.known_digest.hex(),
            "loss": p.last_loss,
            "eval_loss": p.eval_loss,
            "peers": p.peers,
            "relayed_peers": p.relayed,
            "direct_peers": p.direct,
            "bytes_sent": self.host.traffic.sent,
            "bytes_received": self.host.traffic.received,
            "rounds_completed": p.rounds[Status.COMMITTED.value],
            "checkpoints": p.checkpoints,
            "recent": [  # rounds whose x' is hashed (the last one may still be on the worker thread)
                {k: h[k] for k in ("round", "digest", "group_size", "time")}
                for h in p.history[-STATUS_ROUNDS:]
                if h["digest"] is not None
            ],
        }

    async def _write_status_forever(self, copy: GlobalCopy) -> None:
        while True:
            self._write_status(copy, "training")
            await asyncio.sleep(1.0)

    def _write_status(self, copy: GlobalCopy, state: str) -> None:
        path = self.config.output.status_file
        if path is None:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self._status(copy, state), f)
        os.replace(tmp, path)

    def _on_send(self, kind: str) -> None:
        """Failure injection for tests: SIGKILL ourselves after K results sent in round R."""
        fault = self.config.fault
        if kind != "result" or fault.kill_round is None or self._round_in_progress != fault.kill_round:
            return
        self._results_sent += 1
        if fault.kill_after_results is not None and self._results_sent >= fault.kill_after_results:
            logger.warning(
                "fault injection: killing the %s after %d results", fault.kill_scope, self._results_sent
            )
            logging.shutdown()
            if fault.kill_scope == "group":
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    # --- the loop -----------------------------------------------------------------------------

    def _train_until_round(
        self, trainer: LocalTrainer, copy: GlobalCopy, corpus_train: Any, spec: RunSpec
    ) -> None:
        training = self.config.training
        p = self.progress
        period = p.round_period_s
        boundary = (int(time.time() / period) + 1) * period
        peer = self.host.peer_id if self.host is not None else b""
        while not self.stop_thread.is_set():
            if self.paused.is_set():
                # Paused: no steps; the next round still starts on time, so the swarm never waits on us.
                if time.time() >= boundary:
                    return
                self.stop_thread.wait(min(0.2, max(0.0, boundary - time.time())))
                continue
            if training.local_steps is not None:
                if p.steps_since_round >= training.local_steps:
                    return
            elif time.time() >= boundary and p.steps_since_round > 0:
                return
            if training.max_steps is not None and p.steps >= training.max_steps:
                return
            batch = train_batch(
                corpus_train,
                seq_len=spec.seq_len,
                batch_size=spec.batch_size,
                seed=spec.seed,
                peer_id=peer,
                round=copy.round,
                step=trainer.steps,
            )
            loss = trainer.step(batch, global_step=copy.global_step + p.steps_in_flight + p.steps_since_round)
            p.steps, p.samples, p.last_loss = trainer.steps, trainer.samples, loss
            p.steps_since_round += 1
            p.samples_since_round += batch.shape[0]
            self.metrics.step.set(p.steps)
            self.metrics.loss.set(loss)
            self.metrics.samples.inc(batch.shape[0])

    # --- checkpoints --------------------------------------------------------------------------

    def _start_publish(self, trainer: LocalTrainer, copy: GlobalCopy) -> None:
        """Write and announce x' as a checkpoint in the background, from a snapshot taken now."""
        if self.checkpoints is None:
            return
        if self._publishing is not None and not self._publishing.done():
            logger.warning("round %d: the previous checkpoint is still being written; skipping", copy.round)
            return
        self._publishing = asyncio.create_task(
            self._publish(
                trainer.model, copy.values.clone(), round=copy.round, global_step=copy.global_step,
                samples=copy.swarm_samples,
            )
        )  # fmt: skip

    async def _publish(
        self, model: torch.nn.Module, values: torch.Tensor, *, round: int, global_step: int, samples: int
    ) -> None:
        service = self.checkpoints
        assert service is not None
        run_id = self.config.run.run_id

        def write() -> Any:
            files = checkpoint_files(
                model=model, values=values, model_config=self._model_config, spec=self._spec,
                run_id=run_id, round=round, global_step=global_step, swarm_samples=samples,
            )  # fmt: skip
            manifest = build_manifest(files, run_id=run_id, round=round, global_step=global_step)
            service.store.add(manifest, files)
            return manifest

        try:
            manifest = await asyncio.to_thread(write)
            await service.publish(manifest)
            if self.reporter is not None:
                self.reporter.announce(
                    coord_pb.AnnounceCheckpointRequest(
                        run_id=run_id,
                        round=round,
                        global_step=global_step,
                        manifest_hash=manifest.hash,
                        total_bytes=manifest.total_bytes,
                        provider=self.host.peer_name if self.host else "",
                        addrs=await service.serving_addrs(),
                        manifest=manifest.to_bytes(),
                    )
                )
            self.progress.checkpoints.append({"round": round, "manifest": manifest.hash})
            self.metrics.checkpoint_round.set(round)
            logger.info(
                "checkpoint of round %d: manifest %s, %.1f MB, served from %s",
                round, manifest.hash[:12], manifest.total_bytes / 1e6, service.store.folder(manifest.hash),
            )  # fmt: skip
        except Exception:
            logger.exception("could not write or announce the checkpoint of round %d", round)

    def _restore(
        self, folder: Path, trainer: LocalTrainer, copy: GlobalCopy, averager: Averager, spec: RunSpec
    ) -> bool:
        state = load_resume_state(folder, run_id=self.config.run.run_id, num_elements=copy.values.numel())
        if state is None and (folder / SWARM_FILE).is_file():
            return self._start_from_checkpoint(folder, trainer, copy, spec)
        if state is None:
            logger.info("resume folder %s holds no state yet: starting fresh, saving there", folder)
            return False
        _check_saved_spec(state["spec"], spec, folder)
        trainer.load_flat(state["local"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.steps, trainer.samples = state["steps"], state["samples"]
        copy.replace(
            state["global"], round=state["round"], global_step=state["global_step"],
            swarm_samples=state["swarm_samples"],
        )  # fmt: skip
        averager.restore_owner_errors(state["owner_error"])
        torch.set_rng_state(state["rng"])
        p = self.progress
        p.steps, p.samples = trainer.steps, trainer.samples
        p.steps_since_round, p.samples_since_round = state["steps_since_round"], state["samples_since_round"]
        logger.info(
            "resumed from %s: round %d, %d local steps, %d not yet averaged in",
            folder, copy.round, trainer.steps, p.steps_since_round,
        )  # fmt: skip
        return True

    def _start_from_checkpoint(
        self, folder: Path, trainer: LocalTrainer, copy: GlobalCopy, spec: RunSpec
    ) -> bool:
        """A swarm checkpoint folder (``swarm-node pull``) given to --resume: start from its x'."""
        try:
            values, info = read_checkpoint_folder(folder, trainer.model)
        except CheckpointFolderError as e:
            raise ResumeError(str(e)) from None
        if info.get("run_id") != self.config.run.run_id:
            raise ResumeError(
                f"{folder} is a checkpoint of run {info.get('run_id')!r}, not {self.config.run.run_id!r}"
            )
        _check_saved_spec(info["spec"], spec, folder)
        copy.replace(
            values, round=info["round"], global_step=info["global_step"], swarm_samples=info["swarm_samples"]
        )
        trainer.load_flat(values)
        logger.info("starting from the swarm checkpoint in %s: round %d, global step %d", folder, copy.round,
                    copy.global_step)  # fmt: skip
        return True

    def _save_resume(self, trainer: LocalTrainer, copy: GlobalCopy) -> None:
        """Write this node's resume state; only while the training thread is idle."""
        folder = self.config.checkpoints.resume
        if folder is None or self.averager is None:
            return
        p = self.progress
        save_resume_state(
            Path(folder), run_id=self.config.run.run_id, spec=self._spec, local=trainer.flat(),
            optimizer=trainer.optimizer.state_dict(), copy=copy, steps=trainer.steps, samples=trainer.samples,
            owner_error=self.averager.owner_errors(),
            counters={"steps_since_round": p.steps_since_round, "samples_since_round": p.samples_since_round},
        )  # fmt: skip

    # --- the coordinator ------------------------------------------------------------------------

    async def _start_reporter(self, host: SwarmHost, device: torch.device) -> None:
        """Report to the configured coordinator, or to the one a member publishes in the DHT."""
        cfg = self.config
        if cfg.output.coordinator is not None:
            self._make_reporter(host, device, cfg.output.coordinator)
            self._tasks.append(asyncio.create_task(self._announce_coordinator(cfg.output.coordinator)))
        else:
            self._tasks.append(asyncio.create_task(self._discover_coordinator(host, device)))

    def _make_reporter(self, host: SwarmHost, device: torch.device, address: str) -> None:
        cfg = self.config
        metrics_url = cfg.output.metrics_advertise or ""
        if not metrics_url and self.metrics_port is not None:
            metrics_url = f"{local_address_towards(address)}:{self.metrics_port}"
        loop = asyncio.get_running_loop()

        def arrived(raw: list[bytes]) -> None:  # on the reporter's thread
            asyncio.run_coroutine_threadsafe(self._store_archive_pointers(raw), loop)

        self.reporter = Reporter(
            address, run_id=cfg.run.run_id, peer_id=host.peer_name, device=describe_device(device),
            metrics_url=metrics_url, addrs=tuple(m.split("/p2p/")[0] for m in self.maddrs),
            on_archive_pointers=arrived,
        )  # fmt: skip

        self.reporter.start()

    async def _discover_coordinator(self, host: SwarmHost, device: torch.device) -> None:
        """Look for a coordinator address in the DHT now and every 30 s until one appears."""
        while True:
            try:
                record = await host.dht_get(
                    coordinator_key(self.config.run.run_id), CoordinatorRecord.from_wire
                )
            except Exception as e:
                logger.debug("could not read the coordinator's address from the DHT: %s", e)
                record = None
            if record is not None:
                logger.info("the swarm names coordinator %s: reporting there", record.address)
                self._make_reporter(host, device, record.address)
                return
            await asyncio.sleep(30.0)

    async def _store_archive_pointers(self, raw: list[bytes]) -> None:
        """Put the coordinator archive's pointers into the DHT (verified first; each at most every 15 min)."""
        assert self.host is not None
        now = time.time()
        for blob in raw[:100]:
            try:
                pointer = pointer_from_pb(ckpt_pb.Pointer.FromString(blob)).verify()
            except (PointerError, DecodeError) as e:
                logger.warning("the coordinator sent a bad archive pointer: %s", e)
                continue
            key = (pointer.manifest_hash, pointer.provider)
            if pointer.run_id != self.config.run.run_id or now - self._archive_stored.get(key, 0.0) < 900:
                continue
            try:
                await self.host.dht_store(
                    checkpoints_key(pointer.run_id), pointer.to_wire(), ttl_s=max(60.0, pointer.expires_at - now),
                    subkey=f"{peer_name(pointer.provider)}/{pointer.round}",
                )  # fmt: skip
                self._archive_stored[key] = now
            except Exception as e:
                logger.warning("could not store the archive's pointer in the DHT: %s", e)

    async def _announce_coordinator(self, address: str) -> None:
        """Keep the coordinator's address in the DHT, so joiners without --coordinator report too."""
        assert self.host is not None
        record = CoordinatorRecord(address=address).to_wire()
        while True:
            try:
                await self.host.dht_store(coordinator_key(self.config.run.run_id), record, ttl_s=600.0)
            except Exception as e:
                logger.warning("could not store the coordinator's address in the DHT: %s", e)
            await asyncio.sleep(150.0)

    def _report(self, outcome: RoundOutcome, contribution: Contribution, copy: GlobalCopy) -> None:
        # Only committed rounds: the coordinator keys reports by round, and a round that did not
        # commit carries its work into the next one (which reports it).
        if self.reporter is None or outcome.status is not Status.COMMITTED:
            return
        p, now = self.progress, time.time()
        elapsed, self._last_report_t = now - self._last_report_t, now
        evaluated = bool(p.history) and p.history[-1].get("eval_loss") is not None
        self.reporter.submit(
            coord_pb.RoundReport(
                round=copy.round,
                global_step=copy.global_step,
                loss=math.nan if p.last_loss is None or not math.isfinite(p.last_loss) else p.last_loss,
                samples=contribution.samples,
                samples_per_s=contribution.samples / elapsed if elapsed > 0 else 0.0,
                sent_bytes=outcome.bytes_sent,
                received_bytes=outcome.bytes_received,
                compression_ratio=outcome.compression_ratio,
                group_size=len(outcome.members),
                time=now,
                eval_loss=p.history[-1]["eval_loss"] if evaluated else math.nan,
                status=outcome.status.value,
            )
        )

    async def _refresh_pointers(self) -> None:
        assert self.checkpoints is not None
        while True:
            try:
                await self.checkpoints.republish()
            except Exception as e:
                logger.warning("could not refresh checkpoint pointers: %s", e)
            await asyncio.sleep(self.config.checkpoints.pointer_ttl_s / 4)

    async def _status_response(self, averager: Averager, copy: GlobalCopy) -> ckpt_pb.StatusResponse:
        assert self.host is not None
        live = await averager.live_members()
        pointers = await read_pointers(self.host, self.config.run.run_id, self.gate)
        return ckpt_pb.StatusResponse(
            run_id=self.config.run.run_id,
            round=copy.round,
            global_step=copy.global_step,
            members=[
                ckpt_pb.MemberInfo(peer_id=peer, round=r.round, global_step=r.global_step, leaving=r.leaving)
                for peer, r in sorted(live.items())
            ],
            checkpoints=[pointer_to_pb(p) for p in pointers],
            model=self._spec.model,
            codec=self._spec.codec,
        )

    def _evaluation_due(self, committed_rounds: int) -> bool:
        training = self.config.training
        if committed_rounds % training.eval_every_rounds == 0:
            return True
        return (
            training.eval_every_s is not None
            and time.monotonic() - self._last_eval_t >= training.eval_every_s
        )

    def _record(
        self,
        outcome: RoundOutcome,
        contribution: Contribution,
        copy: GlobalCopy,
        hashing: asyncio.Task[bytes] | None,
    ) -> None:
        """Count the round, in the metrics and the history. ``hashing``: the task that hashes x'
        after the round (``Averager.applied``); the history gets the digest when it is done."""
        p = self.progress
        p.rounds[outcome.status.value] += 1
        self.metrics.rounds.labels(status=outcome.status.value).inc()
        # _record runs on the event loop thread once a round: the CPU it used since the last one is
        # this round's averaging work (its contribution, codec, reductions, protocol and commit),
        # plus the worker thread's hashing of x'.
        loop_cpu, mark = time.thread_time(), p.loop_cpu_mark_s
        hash_cpu, p.hash_cpu_mark_s = copy.hash_cpu_s - p.hash_cpu_mark_s, copy.hash_cpu_s
        round_cpu_s = 0.0 if mark is None else loop_cpu - mark + hash_cpu
        p.loop_cpu_mark_s = loop_cpu
        p.loop_cpu_s += round_cpu_s
        self.metrics.loop_cpu.inc(round_cpu_s)
        p.bytes_sent += outcome.bytes_sent
        p.bytes_received += outcome.bytes_received
        self.metrics.round_sent_bytes.set(outcome.bytes_sent)
        self.metrics.round_received_bytes.set(outcome.bytes_received)
        if outcome.status is Status.COMMITTED:
            p.fp32_bytes += outcome.fp32_bytes
            self.metrics.compression_ratio.set(outcome.compression_ratio)
            if self.config.training.adaptive_rounds and self.config.training.local_steps is None:
                hide = round_time_to_hide(outcome, p.last_members)
                ema = p.round_time_ema_s
                p.round_time_ema_s = ema = hide if ema is None else 0.7 * ema + 0.3 * hide
                p.wanted_period_s = wanted_period(
                    self.config.training.round_period_s, ema, overlap=self.config.training.overlap
                )
                self._adopt_period([])
            p.last_members = frozenset(outcome.members)
            self.metrics.round_duration.observe(outcome.duration_s)
            self.metrics.group_size.set(len(outcome.members))
            self.metrics.aborted_shards.inc(len(outcome.aborted_shards))
            p.aborted_shards += len(outcome.aborted_shards)
            known = copy.known_digest
            p.history.append(
                {
                    "round": copy.round,
                    "digest": None if known is None else known.hex(),  # else filled in once hashed
                    "group_size": len(outcome.members),
                    "duration_s": round(outcome.duration_s, 4),
                    "transfer_s": round(outcome.transfer_s, 4),
                    "loop_cpu_s": round(round_cpu_s, 4),
                    "local_steps": contribution.local_steps,
                    "codec": outcome.codec,
                    "bytes_sent": outcome.bytes_sent,
                    "bytes_received": outcome.bytes_received,
                    "fp32_bytes": outcome.fp32_bytes,
                    "compression_ratio": round(outcome.compression_ratio, 2),
                    "round_period_s": p.round_period_s,
                    "swarm_samples": copy.swarm_samples,
                    "time": round(time.time(), 3),
                }
            )
            if known is None and hashing is not None:
                entry = p.history[-1]

                def fill(task: asyncio.Task[bytes]) -> None:
                    if not task.cancelled() and task.exception() is None:
                        entry["digest"] = task.result().hex()

                hashing.add_done_callback(fill)
            del p.history[:-1000]
        self.metrics.round.set(copy.round)
        self.metrics.global_step.set(copy.global_step)
        if self.averager is not None:
            self.metrics.rejected.inc(self.averager.rejections - p.rejections)
            p.rejections = self.averager.rejections
            self.metrics.excluded_parts.inc(self.averager.excluded_parts - p.excluded_parts)
            p.excluded_parts = self.averager.excluded_parts
            self.metrics.banned_peers.set(len(self.averager.bans))

    async def run(self) -> int:
        cfg = self.config
        if cfg.training.threads is not None:
            torch.set_num_threads(cfg.training.threads)
        self._scratch = Path(tempfile.mkdtemp(prefix="swarm-node-"))
        try:
            self.host = host = await self._start_host()
            try:
                return await self._run_with_host(host)
            finally:
                for task in self._tasks:
                    task.cancel()
                if self.reporter is not None:
                    await asyncio.to_thread(self.reporter.stop)
                if self.averager is not None:
                    await self.averager.shutdown()
                await host.shutdown()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    async def _run_with_host(self, host: SwarmHost) -> int:
        cfg = self.config
        self.maddrs = await host.visible_maddrs()
        run_values = cfg.run.resolved()
        # The run's model and data come from the DHT for joiners; read it before loading anything.
        adopted = await self._find_run_spec(host)
        if adopted is not None:
            run_values.update(model=adopted.model, data=adopted.data.split(","), seed=adopted.seed)
        source = resolve_model(run_values["model"])
        corpus = await asyncio.to_thread(
            load_corpus, run_values["data"], max_bytes=cfg.training.max_data_bytes
        )
        # The starting node publishes its spec once x' exists (the spec names x's digest).
        spec = adopted or spec_for(
            cfg.run, model_hash=source.config_hash, data_hash=corpus.content_hash, initial_digest=""
        )
        if spec.data_hash != corpus.content_hash:
            raise NodeError(
                f"this node's data ({corpus.description}) differs from run {cfg.run.run_id!r}'s: hash"
                f" {corpus.content_hash[:12]} != {spec.data_hash[:12]} (same files? same Python version for stdlib?)"
            )
        if spec.model_hash != source.config_hash:
            raise NodeError(
                f"this node's model {spec.model!r} has another configuration than run {cfg.run.run_id!r}'s"
            )
        model = await asyncio.to_thread(build_model, source, seed=spec.seed)
        device = pick_device(cfg.training.device)
        cap_gpu_memory(device, cfg.training.gpu_memory_gb)
        trainer = LocalTrainer(
            model,
            device=device,
            peak_lr=spec.lr,
            warmup_steps=spec.warmup_steps,
            total_steps=spec.total_steps,
            weight_decay=spec.weight_decay,
            batch_size=spec.batch_size,
            micro_batch=cfg.training.micro_batch,
            joiner_warmup_steps=cfg.training.joiner_warmup_steps if cfg.network.peers else 0,
        )
        copy = GlobalCopy(trainer.flat())
        if adopted is None:
            spec = replace(spec, initial_digest=copy.digest.hex())
            await self._publish_run_spec(host, spec)
        self.gate = gate = self._gate(spec, host)
        self.averager = averager = Averager(
            host,
            run_id=cfg.run.run_id,
            codec=codec_for_spec(spec),
            global_copy=copy,
            num_shards=shards_for(spec.num_shards, copy.values.numel()),
            timing=cfg.rounds,
            warmup_rounds=spec.warmup_rounds,
            exact_every=spec.exact_every,
            defence=cfg.defence,
            gate=gate,
            on_send=self._on_send,
        )
        if cfg.fault.lose_results_round is not None:
            averager.lose_results_round = cfg.fault.lose_results_round
            logger.warning(
                "test hook: this node drops one owner's results in round %d", cfg.fault.lose_results_round
            )
        if cfg.fault.misbehave is not None:
            averager.misbehave = Misbehaviour(cfg.fault.misbehave, factor=cfg.fault.misbehave_factor)
            logger.warning("test hook: this node sends hostile parts (%s)", cfg.fault.misbehave)
        await averager.start()
        self._model_config, self._spec = source.config, spec
        store_dir = Path(cfg.checkpoints.dir) if cfg.checkpoints.dir else self._scratch / "checkpoints"
        self.checkpoints = CheckpointService(
            host,
            CheckpointStore(store_dir, keep=cfg.checkpoints.keep),
            run_id=cfg.run.run_id,
            key=self.key,
            status=lambda: self._status_response(averager, copy),
            pointer_ttl_s=cfg.checkpoints.pointer_ttl_s,
            gate=gate,
        )
        await self.checkpoints.start()
        resumed = cfg.checkpoints.resume is not None and await asyncio.to_thread(
            self._restore, Path(cfg.checkpoints.resume), trainer, copy, averager, spec
        )
        if cfg.network.peers:
            await self._catch_up(averager, copy, trainer, spec, keep_local_work=resumed)
        if cfg.output.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.output.metrics_port, cfg.output.metrics_host)
            logger.info("metrics at http://%s:%d/metrics", cfg.output.metrics_host, self.metrics_port)
        await self._start_reporter(host, device)
        self._tasks.append(asyncio.create_task(self._refresh_pointers()))
        self._tasks.append(asyncio.create_task(self._heartbeat(copy)))
        self._tasks.append(asyncio.create_task(self._watch_network()))
        self._tasks.append(asyncio.create_task(self._write_status_forever(copy)))
        if not cfg.network.peers:
            shown = [m for m in self.maddrs if "p2p-circuit" not in m]
            print(f"Started run {cfg.run.run_id!r}. Other nodes join with:", flush=True)
            for maddr in shown:
                print(f"  swarm-node join --run-id {cfg.run.run_id} --peer {maddr}", flush=True)
        logger.info("reachability: %s", reachability(self.maddrs, cfg.network.announce_maddrs))
        logger.info(
            "peer %s training %s (%d parameters) on %s, data %s, codec %s",
            host.peer_name,
            spec.model,
            copy.values.numel(),
            device,
            corpus.description,
            spec.codec,
        )
        sample = train_batch(
            corpus.train,
            seq_len=spec.seq_len,
            batch_size=spec.batch_size,
            seed=spec.seed,
            peer_id=host.peer_id,
            round=0,
            step=0,
        )
        await asyncio.to_thread(trainer.auto_micro_batch, sample)
        evals = eval_batches(
            corpus.eval,
            seq_len=spec.seq_len,
            batch_size=spec.batch_size,
            num_batches=cfg.training.eval_batches,
        )
        await self._loop(host, averager, trainer, copy, corpus.train, spec, evals)
        # Hand the final x' over as a checkpoint before leaving (members at this round share it).
        if self._publishing is not None:
            await self._publishing
        held = self.checkpoints.store.manifests() if self.checkpoints is not None else []
        if copy.round > 0 and not any(m.round == copy.round for m in held):
            self._start_publish(trainer, copy)
            if self._publishing is not None:
                await self._publishing
        await asyncio.to_thread(self._save_resume, trainer, copy)
        for task in self._tasks:  # no heartbeat may outlive the leaving notice
            task.cancel()
        await averager.announce_leaving()
        self.progress.eval_loss = await asyncio.to_thread(trainer.evaluate, copy.values, evals)
        self.metrics.eval_loss.set(self.progress.eval_loss)
        self._write_summary(copy, device)
        if cfg.output.save_model is not None:
            await asyncio.to_thread(self._save_model, trainer, copy)
        self._write_status(copy, "done")
        logger.info(
            "left after %d steps and %d rounds; eval loss of x' %.3f",
            self.progress.steps,
            self.progress.rounds[Status.COMMITTED.value],
            self.progress.eval_loss,
        )
        return 0

    async def _loop(
        self,
        host: SwarmHost,
        averager: Averager,
        trainer: LocalTrainer,
        copy: GlobalCopy,
        corpus_train: Any,
        spec: RunSpec,
        evals: list[torch.Tensor],
    ) -> None:
        """Train, and average every round; with overlap, round r communicates while round r+1 trains.

        Staleness is one round at most: round r's outcome is applied before round r+1 is sent.
        Outcomes are applied and x_i is read only while the training thread is idle.
        """
        training = self.config.training
        p = self.progress
        pending: tuple[asyncio.Task[RoundOutcome], Contribution] | None = None
        p.loop_cpu_mark_s = time.thread_time()
        idle_since: float | None = None
        try:
            while not self.stop.is_set():
                if idle_since is not None:
                    # Training waited: for the last round's exchange, to apply it, to prepare the next.
                    idle = time.monotonic() - idle_since
                    p.training_idle_s += idle
                    self.metrics.training_idle.inc(idle)
                await asyncio.to_thread(self._train_until_round, trainer, copy, corpus_train, spec)
                idle_since = time.monotonic()
                if pending is not None:
                    await self._finish_round(await pending[0], pending[1], averager, trainer, copy, evals)
                    pending = None
                out_of_steps = training.max_steps is not None and p.steps >= training.max_steps
                enough_rounds = (
                    training.max_rounds is not None
                    and p.rounds[Status.COMMITTED.value] >= training.max_rounds
                ) or (training.until_round is not None and copy.round >= training.until_round)
                if self.stop.is_set() or enough_rounds or (out_of_steps and p.steps_since_round == 0):
                    break
                contribution = self._contribution(trainer, copy, averager)
                task = asyncio.create_task(averager.run_round(contribution))
                if training.overlap:
                    pending = (task, contribution)
                else:
                    await self._finish_round(await task, contribution, averager, trainer, copy, evals)
        finally:
            # A stop while a round communicates: finish it (bounded by its deadlines), lose nothing;
            # a round still forming gets the join grace, not the whole join timeout.
            if pending is not None:
                averager.hurry(self.config.rounds.join_grace_s)
                outcome = await pending[0]
                await self._finish_round(outcome, pending[1], averager, trainer, copy, evals)
            await averager.settled()

    def _contribution(self, trainer: LocalTrainer, copy: GlobalCopy, averager: Averager) -> Contribution:
        """x_i - x' on the next round's supports, computed on the model's device: a GPU member
        moves x' on the supports to the device (a tenth of x' at the defaults) and encodes there."""
        p = self.progress
        round_id = copy.round + 1
        self._round_in_progress, self._results_sent = round_id, 0
        if not trainer.all_finite():
            # Local training diverged: drop this node's unsent work rather than poison the round.
            logger.error("local model holds NaN/Inf after %d steps: resetting it to the global copy", p.steps)
            trainer.reset_to(copy.values)
        spans = averager.supports(round_id)
        delta = trainer.gather(spans).sub_(gather(copy.values, spans).to(trainer.device))
        if self.config.fault.dump_dir is not None:
            self._dumped_delta = trainer.flat().sub_(copy.values)
        contribution = Contribution(
            delta=delta,
            round=round_id,
            weight=1.0,
            samples=p.samples_since_round,
            local_steps=p.steps_since_round,
        )
        p.steps_in_flight = p.steps_since_round
        p.steps_since_round = p.samples_since_round = 0
        return contribution

    async def _finish_round(
        self,
        outcome: RoundOutcome,
        contribution: Contribution,
        averager: Averager,
        trainer: LocalTrainer,
        copy: GlobalCopy,
        evals: list[torch.Tensor],
    ) -> None:
        p = self.progress
        p.steps_in_flight = 0
        await averager.settled()  # the last round's digest (hashed while this one trained)
        trainer.apply_folds(outcome.folds)
        if outcome.status is Status.COMMITTED:
            dumping = self.config.fault.dump_dir is not None
            before = copy.values.clone() if dumping else None
            local_before = trainer.flat() if dumping else None
            trainer.apply_round(outcome.updates, copy)
            if before is not None and local_before is not None:
                self._dump(outcome, contribution, before, local_before, trainer.flat(), copy)
            if self.config.fault.diverge_round == copy.round:
                logger.warning("fault injection: perturbing x' after round %d", copy.round)
                copy.apply_shard(0, torch.full((1,), 1e-3))
            copy.round = outcome.round
            copy.global_step += outcome.global_step_increment
            copy.swarm_samples += outcome.samples
            self.metrics.local_steps_per_round.set(contribution.local_steps)
            p.local_steps_last_round = contribution.local_steps
        else:
            repaired = outcome.status is Status.REPAIR and await self._repair(outcome, copy, trainer)
            # A member that lacked some results of a round the others committed with its parts takes
            # that round from a peer: its work is in x' and in the round's counters. Otherwise the
            # work stays in x_i - x' and goes with the next round: so do its counters.
            assert self.host is not None
            if not (repaired and self.host.peer_id in outcome.members):
                p.steps_since_round += contribution.local_steps
                p.samples_since_round += contribution.samples
        if outcome.status in (Status.COMMITTED, Status.REPAIR):
            # x' is hashed (and the round journaled) on a worker thread while the next round trains.
            hashing = averager.applied(outcome if outcome.status is Status.COMMITTED else None)
        else:
            hashing = None
        self._record(outcome, contribution, copy, hashing)
        every = self.config.checkpoints.every_rounds
        if outcome.status is Status.COMMITTED and every and copy.round % every == 0:
            self._start_publish(trainer, copy)
            await asyncio.to_thread(self._save_resume, trainer, copy)
        if outcome.status is Status.COMMITTED and self._evaluation_due(p.rounds[Status.COMMITTED.value]):
            self._last_eval_t = time.monotonic()
            p.eval_loss = await asyncio.to_thread(trainer.evaluate, copy.values, evals)
            self.metrics.eval_loss.set(p.eval_loss)
            p.history[-1]["eval_loss"] = p.eval_loss
            if self.config.training.eval_local:
                p.history[-1]["local_eval_loss"] = await asyncio.to_thread(trainer.evaluate, None, evals)
        logger.info(
            "round %d %s: group %d, %d shards aborted, %.2fs, %s %.0f kB sent (%.0fx vs fp32),"
            " loss %.3f, eval %s",
            outcome.round or copy.round + 1,
            outcome.status.value,
            len(outcome.members),
            len(outcome.aborted_shards),
            outcome.duration_s,
            outcome.codec or "-",
            outcome.bytes_sent / 1e3,
            outcome.compression_ratio,
            p.last_loss or float("nan"),
            "-" if p.eval_loss is None else f"{p.eval_loss:.3f}",
        )
        self._report(outcome, contribution, copy)

    def _dump(
        self,
        outcome: RoundOutcome,
        contribution: Contribution,
        before: torch.Tensor,
        local_before: torch.Tensor,
        local_after: torch.Tensor,
        copy: GlobalCopy,
    ) -> None:
        """Numerical record of one committed round, for tests that check the algebra."""
        assert self.config.fault.dump_dir is not None and self.host is not None
        folder = Path(self.config.fault.dump_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "round": outcome.round,
            "peer": self.host.peer_name,
            "members": [peer_name(m) for m in outcome.members],
            "delta": self._dumped_delta,
            "local_steps": contribution.local_steps,
            "before": before,
            "after": copy.values.clone(),
            "residual_before": local_before - before,
            "residual_after": local_after - copy.values,
            "folds": outcome.folds,
            "updates": [(u.shard, u.start, u.dense(u.aggregate), u.dense(u.own)) for u in outcome.updates],
            "aborted": outcome.aborted_shards,
        }
        torch.save(record, folder / f"{self.host.peer_name}-round{outcome.round}.pt")

    def _save_model(self, trainer: LocalTrainer, copy: GlobalCopy) -> None:
        """Write x' as a model folder that ``--model`` (and ``transformers``) loads, for fine-tuning."""
        path = self.config.output.save_model
        assert path is not None
        trainer.load_flat(copy.values)
        trainer.model.save_pretrained(path)  # type: ignore[operator]
        logger.info("saved x' of round %d to %s", copy.round, path)

    def _write_summary(self, copy: GlobalCopy, device: torch.device) -> None:
        path = self.config.output.summary_json
        if path is None or self.host is None:
            return
        p = self.progress
        summary = {
            "run_id": self.config.run.run_id,
            "peer_id": self.host.peer_name,
            "software": __version__,
            "device": str(device),
            "final_step": p.steps,
            "global_step": copy.global_step,
            "round": copy.round,
            "digest": copy.digest.hex(),
            "rounds_completed": p.rounds[Status.COMMITTED.value],
            "rounds_by_status": p.rounds,
            "aborted_shards": p.aborted_shards,
            "repairs": p.repairs,
            "rejections": p.rejections,
            "excluded_parts": p.excluded_parts,
            "banned_peers": len(self.averager.bans) if self.averager is not None else 0,
            "catch_up": p.catch_up,
            "last_loss": p.last_loss,
            "eval_loss": p.eval_loss,
            "samples": p.samples,
            "unsent_samples": p.samples_since_round,
            "checkpoints": p.checkpoints,
            "bytes_sent": self.host.traffic.sent,
            "bytes_received": self.host.traffic.received,
            "round_bytes_sent": p.bytes_sent,
            "round_bytes_received": p.bytes_received,
            "compression_ratio": (
                p.fp32_bytes / (p.bytes_sent + p.bytes_received) if p.bytes_sent + p.bytes_received else None
            ),
            "overlap": self.config.training.overlap,
            "round_period_s": p.round_period_s,
            "loop_cpu_s": round(p.loop_cpu_s, 3),
            "training_idle_s": round(p.training_idle_s, 3),
            "duration_s": time.time() - self.started,
            "history": p.history,
        }
        tmp = f"{path}.tmp"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, path)


def _check_saved_spec(saved: dict[str, Any], spec: RunSpec, folder: Path) -> None:
    """A resume state or checkpoint must come from a run with this run's settings (its initial x'
    digest aside: a checkpoint started elsewhere may have begun from other weights)."""
    differences = [d for d in RunSpec(**saved).differences(spec) if not d.startswith("initial_digest")]
    if differences:
        raise ResumeError(f"{folder} was saved under other run settings: {'; '.join(differences)}")


async def _run_async(config: NodeConfig) -> int:
    node = Node(config)
    loop = asyncio.get_running_loop()

    def _graceful() -> None:
        if node.stop.is_set():
            logger.warning("second signal: leaving now")
            os._exit(130)
        logger.info("stopping after the current step (signal again to leave at once)")
        node.stop.set()
        node.stop_thread.set()
        if node.averager is not None:  # a round still forming gets the join grace, not the join timeout
            node.averager.hurry(config.rounds.join_grace_s)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _graceful)

    def _pause(pause: bool) -> None:
        if pause == node.paused.is_set():
            return
        if pause:
            node.paused.set()
            logger.info("paused: no local training until resumed; still a member of the rounds")
        else:
            node.paused.clear()
            logger.info("resumed local training")
        node.metrics.paused.set(1 if pause else 0)

    loop.add_signal_handler(signal.SIGUSR1, _pause, True)
    loop.add_signal_handler(signal.SIGUSR2, _pause, False)
    return await node.run()


MALLOC_ARENAS = 2


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (M_ARENA_MAX). glibc gives threads their own arenas, up to 8 per
    core, and each keeps what it once held: in the soak, every long-lived node's main process took
    one ~150 MB step at a random time and kept it. A node's threads (training, the round loop's
    helpers, metrics, the reporter) do not need separate arenas. False where it does not apply."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(-8, count))  # -8: M_ARENA_MAX (glibc malloc.h)
    except (OSError, AttributeError):
        return False


def run(config: NodeConfig) -> int:
    """Run one node until it is told to stop or reaches its limits; returns the exit code."""
    limit_malloc_arenas()
    logging.basicConfig(
        level=config.output.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("hivemind", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return asyncio.run(_run_async(config))
    except (NodeError, BootstrapError, ResumeError) as e:
        print(f"swarm-node: error: {e}", flush=True)
        return 2
