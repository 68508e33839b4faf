"""The node's typed config tree: one keyword-only dataclass per section, validated on construction.

Run-level fields (``[run]``) describe what the whole swarm trains. They default to ``None``: a node
that starts a run fills them with the defaults below; a node that joins adopts the run's published
values, and any value it set explicitly that differs from the run's is a clear error.
Where the values come from (file, environment, command line) is ``node.config``'s business.
Importing this module loads no torch (``swarm-node --help`` reads the fields' docstrings): the
codecs, which need it, are imported where a run's settings are validated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from swarm.averaging.defence import Defence
from swarm.averaging.timing import RoundTiming
from swarm.dht.records import validate_run_id

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


@dataclass(kw_only=True)
class NetworkConfig:
    peers: list[str] = field(default_factory=list)
    """Multiaddrs of peers of a running swarm (any live one works); none starts a new swarm."""
    host_maddrs: list[str] = field(
        default_factory=lambda: ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
    )
    """Where to listen. The default is every interface, TCP and QUIC, on free ports."""
    announce_maddrs: list[str] = field(default_factory=list)
    """Public addresses to announce (behind port forwarding); explicit ports only."""
    identity: str | None = None
    """Path of a persistent peer key (Ed25519), created if missing; without it a fresh key each start.
    The key also signs this node's checkpoint pointers."""
    nat_port_map: bool = False
    """Ask the router for a port mapping (UPnP/NAT-PMP). Off by default: no traffic to the router."""
    reachability: str = "auto"
    """Whether peers can dial this node: auto (the swarm's AutoNAT dial-backs decide), public, or
    private (behind NAT or a firewall: become reachable through a relay at once)."""
    auto_relay: bool = True
    """When this node is private, reserve a slot on a relay (the --relay peers, else the bootstrap
    peers) and announce a /p2p-circuit address, so peers reach it through the relay."""
    relays: list[str] = field(default_factory=list)
    """Relay peers to use when private (multiaddrs with /p2p/); default: the --peer addresses."""
    startup_timeout_s: float = 30.0
    """Limit for starting the libp2p daemon and the DHT."""
    credential: str | None = None
    """A closed run's credential file for this node's peer id (swarm-node credential issue)."""
    revocations: str | None = None
    """The run owner's signed revocation list (swarm-node credential revoke): revoked peers are refused."""
    max_upload_mbit: float | None = None
    """Cap on this node's upload (averaging rounds, state transfers, checkpoints served), Mbit/s;
    the round period lengthens to fit. Unset: no cap."""

    def __post_init__(self) -> None:
        for maddr in [*self.peers, *self.host_maddrs, *self.announce_maddrs, *self.relays]:
            if not maddr.startswith("/"):
                raise ConfigError(
                    f"{maddr!r} is not a multiaddr (it should look like /ip4/1.2.3.4/tcp/31337/p2p/12D3...)"
                )
        for maddr in [*self.peers, *self.relays]:
            if "/p2p/" not in maddr:
                raise ConfigError(
                    f"peer {maddr!r} lacks its /p2p/<peer id> part: copy the whole address the peer printed"
                )
        if not self.host_maddrs:
            raise ConfigError("host_maddrs needs at least one address to listen on")
        if self.reachability not in ("auto", "public", "private"):
            raise ConfigError(f"reachability must be auto, public or private, got {self.reachability!r}")
        if self.relays and not self.auto_relay:
            raise ConfigError("relays are given but auto_relay is off: drop --relay or --no-auto-relay")
        if self.max_upload_mbit is not None and not (0.1 <= self.max_upload_mbit < 1e6):
            raise ConfigError(f"max_upload_mbit must be at least 0.1 Mbit/s, got {self.max_upload_mbit}")


RUN_DEFAULTS: dict[str, Any] = dict(
    model="tiny",
    data=["stdlib"],
    codec="fp32",
    sparsity=0.1,
    topk=0.2,
    bits=4,
    warmup_rounds=0,
    exact_every=0,
    seq_len=128,
    batch_size=16,
    lr=3e-3,
    warmup_steps=50,
    total_steps=3000,
    weight_decay=0.01,
    seed=0,
    num_shards=16,
    owner_key="",
)


@dataclass(kw_only=True)
class RunConfig:
    run_id: str = "swarm"
    """Name of the run. Nodes train together only with the same run id."""
    model: str | None = None
    """Model preset (tiny, small, base) or a local model directory. Default: tiny."""
    data: list[str] | None = None
    """Training data: stdlib (the embedded corpus) or local text/JSONL/Parquet files and folders."""
    codec: str | None = None
    """Averaging codec: cocktail (CocktailSGD: random mask, top-k, q-bit), fp16 or fp32 (exact). Default: fp32."""
    sparsity: float | None = None
    """Cocktail codec: fraction p of entries the shared random mask keeps, in (0, 1]. Default: 0.1."""
    topk: float | None = None
    """Cocktail codec: fraction r of the kept entries sent (largest magnitudes), in (0, 1]. Default: 0.2."""
    bits: int | None = None
    """Cocktail codec: bits q per sent value, 2, 4 or 8. Default: 4."""
    warmup_rounds: int | None = None
    """The run's first rounds are averaged exactly (fp32) before its codec takes over. Default: 0."""
    exact_every: int | None = None
    """Every N-th round is averaged exactly, flushing what compression held back into x'. Default: 0 (never)."""
    seq_len: int | None = None
    """Tokens per sequence. Default: 128."""
    batch_size: int | None = None
    """Sequences per local optimizer step. Default: 16."""
    lr: float | None = None
    """Peak learning rate. Default: 3e-3."""
    warmup_steps: int | None = None
    """Global warm-up steps. Default: 50."""
    total_steps: int | None = None
    """Global steps of the cosine schedule. Default: 3000."""
    weight_decay: float | None = None
    """AdamW weight decay. Default: 0.01."""
    seed: int | None = None
    """Seed of the initial weights and of data sampling. Default: 0."""
    num_shards: int | None = None
    """Shards of the sharded reduce. Default: 16."""
    owner_key: str | None = None
    """Closed run: the owner's public key (hex, printed by swarm-node owner-key); only peers holding a
    credential it signed take part. Default: an open run."""

    def __post_init__(self) -> None:
        from swarm.compression.cocktail import CocktailParams
        from swarm.compression.registry import CODEC_NAMES

        try:
            validate_run_id(self.run_id)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.codec is not None and self.codec not in CODEC_NAMES:
            raise ConfigError(f"codec {self.codec!r} is unknown; choose one of {', '.join(CODEC_NAMES)}")
        defaults = CocktailParams()
        try:
            CocktailParams(
                sparsity=defaults.sparsity if self.sparsity is None else self.sparsity,
                topk=defaults.topk if self.topk is None else self.topk,
                bits=defaults.bits if self.bits is None else self.bits,
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        cocktail_set = [n for n in ("sparsity", "topk", "bits") if getattr(self, n) is not None]
        if cocktail_set and self.codec not in (None, "cocktail"):
            raise ConfigError(
                f"{', '.join(cocktail_set)} apply to the cocktail codec only, and codec is {self.codec!r}"
            )
        for name in ("warmup_rounds", "exact_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be at least 0, got {value}")
        for name in ("seq_len", "batch_size", "warmup_steps", "total_steps", "num_shards"):
            value = getattr(self, name)
            if value is not None and (value < (0 if name == "warmup_steps" else 1)):
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.owner_key is not None and not re.fullmatch(r"[0-9a-f]{64}|", self.owner_key):
            raise ConfigError("owner_key must be the 64 hex characters swarm-node owner-key printed")
        if self.lr is not None and not (0 < self.lr < 1):
            raise ConfigError(f"lr must be in (0, 1), got {self.lr}")
        if self.weight_decay is not None and not (0 <= self.weight_decay < 1):
            raise ConfigError(f"weight_decay must be in [0, 1), got {self.weight_decay}")

    def explicit(self) -> dict[str, Any]:
        """Run-level values this node set itself (the ones a joiner must not contradict)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "run_id" and getattr(self, f.name) is not None
        }

    def resolved(self) -> dict[str, Any]:
        """Every run-level value, defaults filled in."""
        values = {**RUN_DEFAULTS, **self.explicit()}
        cocktail_set = [n for n in ("sparsity", "topk", "bits") if getattr(self, n) is not None]
        if cocktail_set and values["codec"] != "cocktail":
            raise ConfigError(
                f"{', '.join(cocktail_set)} apply to the cocktail codec only: add --codec cocktail"
            )
        return values


@dataclass(kw_only=True)
class TrainingConfig:
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    local_steps: int | None = None
    """Deterministic mode: exactly this many local steps per round. Unset: rounds follow round_period_s."""
    round_period_s: float = 5.0
    """Rounds start at multiples of this period of wall-clock time, the same instants on every node
    (with adaptive_rounds: the shortest period; the swarm lengthens it while communication would not fit)."""
    adaptive_rounds: bool = True
    """Lengthen the round period (round_period_s times 1, 1.5, 2, 3, 4, 6, ..., agreed through the DHT) until a
    round's communication fits inside the next round's compute."""
    overlap: bool = True
    """Run round r's communication while round r+1's local steps compute (staleness of one round)."""
    max_rounds: int | None = None
    """Leave gracefully after this many committed rounds."""
    until_round: int | None = None
    """Leave gracefully once x' reaches this round id: the same round on every member (benchmarks)."""
    max_steps: int | None = None
    """Leave gracefully after this many local steps."""
    micro_batch: int | None = None
    """Sequences per forward pass; unset: sized to the GPU's memory (the whole batch on a CPU)."""
    threads: int | None = None
    """torch CPU threads; unset: all cores, or 1 under `swarm-node demo`."""
    eval_every_rounds: int = 5
    """Evaluate x' on the held-out split every this many rounds (and at exit)."""
    eval_every_s: float | None = None
    """Also evaluate x' after a round that commits this many seconds or more after the last evaluation."""
    eval_batches: int = 8
    """Batches of the held-out split per evaluation."""
    eval_local: bool = False
    """At each evaluation, also evaluate this node's working model x_i (x' plus what it has not sent yet)."""
    gpu_memory_gb: float | None = None
    """Use at most this much GPU memory (GB): a cap on torch's allocator, and the micro-batch is
    sized under it. Unset: the whole GPU."""
    joiner_warmup_steps: int = 20
    """A node's own steps over which its fresh optimizer ramps up to the global learning rate."""
    max_data_bytes: int = 64 * 1024 * 1024
    """Read at most this much text from the data source."""

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("local_steps", "max_rounds", "until_round", "max_steps", "micro_batch", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if not (self.round_period_s > 0 and math.isfinite(self.round_period_s)):
            raise ConfigError(f"round_period_s must be positive, got {self.round_period_s}")
        if self.eval_every_rounds < 1 or self.eval_batches < 1:
            raise ConfigError("eval_every_rounds and eval_batches must be at least 1")
        if self.gpu_memory_gb is not None and not (0 < self.gpu_memory_gb < 1e4):
            raise ConfigError(f"gpu_memory_gb must be a positive number of GB, got {self.gpu_memory_gb}")
        if self.eval_every_s is not None and not (self.eval_every_s > 0 and math.isfinite(self.eval_every_s)):
            raise ConfigError(f"eval_every_s must be positive, got {self.eval_every_s}")


@dataclass(kw_only=True)
class OutputConfig:
    metrics_port: int | None = None
    """Serve Prometheus /metrics on this port (0: a free port, printed at start)."""
    metrics_host: str = "0.0.0.0"
    """Interface of the metrics server."""
    summary_json: str | None = None
    """Write a JSON summary here at exit."""
    save_model: str | None = None
    """At exit, save x' here as a model folder (loads with --model DIR or transformers)."""
    status_file: str | None = None
    """Keep a small JSON status here, rewritten as training goes (used by `swarm-node demo`)."""
    log_level: str = "INFO"
    """Python log level."""
    coordinator: str | None = None
    """The run's coordinator, host:port: every round is reported there and checkpoints announced,
    off the training path (training goes on while it is down). Unset: the address a member
    published in the DHT, if any."""
    metrics_advertise: str | None = None
    """host:port the coordinator lists for Prometheus to scrape this node. Unset: the address this
    machine uses to reach the coordinator, with the metrics port."""

    def __post_init__(self) -> None:
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
        for name in ("coordinator", "metrics_advertise"):
            value = getattr(self, name)
            if value is not None and not _HOST_PORT.match(value):
                raise ConfigError(f"{name} must be host:port, got {value!r}")


@dataclass(kw_only=True)
class CheckpointConfig:
    every_rounds: int = 50
    """Publish x' as a checkpoint after every round whose id is a multiple of this, and at a graceful
    exit (0: at exit only). Every member at that round writes the same bytes and serves them."""
    keep: int = 3
    """Checkpoints this node keeps on disk and serves (the newest)."""
    dir: str | None = None
    """Where checkpoints are kept. Unset: a temporary folder removed at exit (the swarm keeps copies)."""
    pointer_ttl_s: float = 3600.0
    """Lifetime of the DHT pointers to this node's checkpoints; they are refreshed well before."""
    resume: str | None = None
    """This node's own resume folder: restored at start when it holds a state (x_i, optimizer,
    counters, owner errors, x'), and rewritten at every checkpoint round and at exit."""

    def __post_init__(self) -> None:
        if self.every_rounds < 0:
            raise ConfigError(f"checkpoint every_rounds must be at least 0, got {self.every_rounds}")
        if self.keep < 1:
            raise ConfigError(f"checkpoint keep must be at least 1, got {self.keep}")
        if not 60 <= self.pointer_ttl_s <= 7 * 24 * 3600:
            raise ConfigError(f"checkpoint pointer_ttl_s must be in [60 s, 7 days], got {self.pointer_ttl_s}")


@dataclass(kw_only=True)
class FaultConfig:
    """Test hooks, from the environment only: failure injection and numerical dumps."""

    kill_round: int | None = None
    """SWARM_FAULT=round:R,...: the round in which to die."""
    kill_after_results: int | None = None
    """SWARM_FAULT=...,after_results:K: die after sending K shard results as an owner."""
    kill_scope: str = "group"
    """SWARM_FAULT=...,scope:group|process: kill the whole process group or the main process only."""
    diverge_round: int | None = None
    """SWARM_FAULT=diverge:R: perturb our x' after committing round R (tests the digest repair)."""
    dump_dir: str | None = None
    """SWARM_DUMP_DIR: save each committed round's delta, results and x' before and after (tests)."""
    misbehave: str | None = None
    """SWARM_FAULT=misbehave:MODE[,factor:F]: send hostile parts (nan, oversized, scale, random)."""
    misbehave_factor: float = 100.0
    ignore_auth: bool = False
    """SWARM_FAULT=ignore_auth: skip this node's own credential check (an intruder, for tests)."""
    lose_results_round: int | None = None
    """SWARM_FAULT=lose_results:R: in round R, drop the results of one owner (the highest other
    peer id) as if its stream had broken: the others commit, this member repairs the round."""


@dataclass(kw_only=True)
class NodeConfig:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    run: RunConfig = field(default_factory=RunConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    rounds: RoundTiming = field(default_factory=RoundTiming)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    defence: Defence = field(default_factory=Defence)
    fault: FaultConfig = field(default_factory=FaultConfig)
