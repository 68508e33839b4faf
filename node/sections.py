"""The node's typed config tree: one keyword-only dataclass per section, validated on construction.

Every field is a setting declared once (``swarm.settings.setting``): its type, default, help, group,
choices and bounds. ``node.config`` derives the flags, the ``SWARM_*`` variables and the TOML keys
from these declarations, and ``scripts/gen_config_docs.py`` derives docs/configuration.md.

Run-level settings (``[run]``) describe what the whole swarm trains and are declared in
``swarm.run_settings``: a node that starts a run fills in their defaults; a node that joins adopts
the run's published values, and any value it set explicitly that differs from the run's is a clear
error. Importing this module loads no torch (``swarm-node --help`` reads the declarations).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from swarm.averaging.defence import Defence
from swarm.averaging.timing import RoundTiming
from swarm.checkpoint.bounds import DownloadLimits
from swarm.dht.records import validate_run_id
from swarm.run_settings import RUN_SETTINGS, RunSettings
from swarm.settings import SettingError, check, setting, validate

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$")


ConfigError = SettingError
"""A configuration value that cannot work; the message names the setting (its flag)."""


@dataclass(kw_only=True)
class NetworkConfig:
    peers: list[str] = setting(
        factory=list,
        group="network",
        flag="peer",
        metavar="MULTIADDR",
        help="Address of a peer of a running swarm, repeatable (any live member works); none "
        "starts a new swarm.",
    )
    host_maddrs: list[str] = setting(
        factory=lambda: ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"],
        group="network",
        flag="host-maddr",
        metavar="MULTIADDR",
        help="Where to listen, repeatable (by default every interface, TCP and QUIC, on free ports).",
    )
    announce_maddrs: list[str] = setting(
        factory=list,
        group="network",
        flag="announce-maddr",
        metavar="MULTIADDR",
        help="Public address to announce (behind port forwarding; explicit ports only), repeatable.",
    )
    nat_port_map: bool = setting(
        False,
        group="network",
        help="Ask the router for a port mapping (UPnP/NAT-PMP). Off: no traffic to the router.",
    )
    reachability: str = setting(
        "auto",
        group="network",
        choices=("auto", "public", "private"),
        help="Whether peers can dial this node: auto (the swarm's dial-backs decide), public, or "
        "private (behind NAT or a firewall: go through a relay at once).",
    )
    auto_relay: bool = setting(
        True,
        group="network",
        help="When this node is private, reserve a slot on a relay (--relay peers, else the --peer "
        "ones) and announce a relayed address.",
    )
    relays: list[str] = setting(
        factory=list,
        group="network",
        flag="relay",
        metavar="MULTIADDR",
        help="Relay peer to use when private, repeatable. Default: the --peer addresses.",
    )
    startup_timeout_s: float = setting(
        30.0,
        group="network",
        flag="startup-timeout",
        above=0,
        at_most=3600,
        metavar="SECONDS",
        help="Limit for starting the libp2p daemon and the DHT.",
    )
    identity: str | None = setting(
        None,
        group="security",
        metavar="FILE",
        help="This node's persistent peer key (Ed25519), created if missing; it also signs the "
        "node's checkpoint pointers. Unset: <home>/identity.key (a fresh key each start when --ephemeral).",
    )
    credential: str | None = setting(
        None,
        group="security",
        metavar="FILE",
        help="A closed run's credential for this node's peer id (swarm-node credential issue).",
    )
    revocations: str | None = setting(
        None,
        group="security",
        metavar="FILE",
        help="The run owner's signed revocation list (swarm-node credential revoke).",
    )
    max_upload_mbit: float | None = setting(
        None,
        group="volunteer",
        at_least=0.1,
        below=1e6,
        metavar="MBIT",
        help="Cap on this node's upload (rounds, state transfers, checkpoints served), Mbit/s; the "
        "round period lengthens to fit. Unset: no cap.",
    )

    def __post_init__(self) -> None:
        check(self, "network")
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
            raise ConfigError("--host-maddr needs at least one address to listen on")
        if self.relays and not self.auto_relay:
            raise ConfigError("relays are given but auto_relay is off: drop --relay or --no-auto-relay")


@dataclass(kw_only=True)
class RunConfig:
    """``[run]``: the run's name, and the run-level settings (``swarm.run_settings``) this node gave."""

    run_id: str = setting(
        "swarm",
        group="run",
        metavar="NAME",
        help="The run: a name starts a run pinned to this node's key (its full id, name.pin, is "
        "printed at start); a joiner passes that full id, or the name with --peer, or nothing: it "
        "then joins the run its --peer trains.",
    )
    given: dict[str, Any] = field(default_factory=dict)
    """Run-level settings set in this node's config, by name; the others come from the run."""

    def __post_init__(self) -> None:
        check(self, "run")
        try:
            validate_run_id(self.run_id)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name, value in self.given.items():
            if name not in RUN_SETTINGS:
                raise ConfigError(f"[run] has no setting {name!r}")
            self.given[name] = validate(RUN_SETTINGS[name], value)
        for name, other, wanted in _conditions(self.given):
            if other in self.given and self.given[other] != wanted:
                raise ConfigError(
                    f"{_label(name)} applies with {_label(other)} {wanted} only, and it is {self.given[other]!r}"
                )

    def explicit(self) -> dict[str, Any]:
        """Run-level values this node set itself (the ones a joiner must not contradict)."""
        return dict(self.given)

    def resolved(self) -> RunSettings:
        """Every run-level value, defaults filled in: what a node starting the run publishes."""
        settings = RunSettings(**self.given)
        for name, other, wanted in _conditions(self.given):
            if getattr(settings, other) != wanted:
                raise ConfigError(
                    f"{_label(name)} applies with {_label(other)} {wanted} only: add {_label(other)} {wanted}"
                )
        return settings


def _conditions(names: Iterable[str]) -> Iterator[tuple[str, str, Any]]:
    """(setting, other setting, value) for each of ``names`` that applies only where the other has that value."""
    for name in names:
        condition = RUN_SETTINGS[name].meta.only_with
        if condition is not None:
            yield name, condition[0], condition[1]


def _label(name: str) -> str:
    return RUN_SETTINGS[name].label


@dataclass(kw_only=True)
class TrainingConfig:
    device: str = setting(
        "auto",
        group="training",
        choices=("auto", "cpu", "cuda"),
        help="Where to train: auto is CUDA when present.",
    )
    precision: str = setting(
        "fp32",
        group="training",
        choices=("fp32", "bf16", "fp16"),
        help="Arithmetic of this node's forward and backward passes: bf16 or fp16 autocast them (fp16 "
        "with a loss scaler); the weights, the optimizer and x' stay fp32 whatever it is.",
    )
    local_steps: int | None = setting(
        None,
        group="training",
        at_least=1,
        metavar="STEPS",
        help="Deterministic mode: exactly this many local steps per round. Unset: rounds follow the clock "
        "(--round-period).",
    )
    round_period_s: float = setting(
        5.0,
        group="training",
        flag="round-period",
        above=0,
        at_most=3600,
        metavar="SECONDS",
        help="Rounds start at multiples of this period of wall-clock time, the same instants on every "
        "node (with --adaptive-rounds, the shortest period).",
    )
    adaptive_rounds: bool = setting(
        True,
        group="training",
        help="Lengthen the round period (x1, 1.5, 2, 3, 4, 6, ..., agreed through the DHT) until a "
        "round's communication fits inside the next round's compute.",
    )
    overlap: bool = setting(
        True,
        group="training",
        help="Exchange round r while round r+1's local steps compute (staleness of one round).",
    )
    micro_batch: int | None = setting(
        None,
        group="training",
        at_least=1,
        metavar="SEQUENCES",
        help="Sequences per forward pass. Unset: sized to the GPU's memory (the whole batch on a CPU).",
    )
    eval_every_rounds: int = setting(
        5,
        group="training",
        flag="eval-every",
        at_least=1,
        metavar="ROUNDS",
        help="Evaluate x' on the held-out split every this many rounds (and at exit).",
    )
    eval_every_s: float | None = setting(
        None,
        group="training",
        above=0,
        metavar="SECONDS",
        help="Also evaluate x' after a round that commits this long or more after the last evaluation.",
    )
    eval_batches: int = setting(
        8,
        group="training",
        at_least=1,
        metavar="BATCHES",
        help="Batches of the held-out split per evaluation.",
    )
    eval_local: bool = setting(
        False,
        group="training",
        help="At each evaluation, also evaluate this node's working model x_i (x' plus what it has "
        "not sent yet).",
    )
    joiner_warmup_steps: int = setting(
        20,
        group="training",
        at_least=0,
        metavar="STEPS",
        help="A node's own steps over which its fresh optimizer ramps up to the run's learning rate.",
    )
    max_data_bytes: int = setting(
        64 * 1024 * 1024,
        group="training",
        at_least=1,
        metavar="BYTES",
        help="Read at most this much text from the data source.",
    )
    max_rounds: int | None = setting(
        None,
        group="volunteer",
        at_least=1,
        metavar="ROUNDS",
        help="Leave gracefully after this many committed rounds.",
    )
    until_round: int | None = setting(
        None,
        group="volunteer",
        at_least=1,
        metavar="ROUND",
        help="Leave gracefully once x' reaches this round id: the same round on every member.",
    )
    max_steps: int | None = setting(
        None,
        group="volunteer",
        at_least=1,
        metavar="STEPS",
        help="Leave gracefully after this many local steps.",
    )
    threads: int | None = setting(
        None,
        group="volunteer",
        at_least=1,
        help="torch CPU threads. Unset: all cores (1 per node under swarm-node demo).",
    )
    gpu_memory_gb: float | None = setting(
        None,
        group="volunteer",
        above=0,
        below=1e4,
        metavar="GB",
        help="Use at most this much GPU memory: a cap on torch's allocator, and the micro-batch is "
        "sized under it. Unset: the whole GPU.",
    )

    def __post_init__(self) -> None:
        check(self, "training")


@dataclass(kw_only=True)
class OutputConfig:
    metrics_port: int | None = setting(
        None,
        group="output",
        at_least=0,
        at_most=65535,
        metavar="PORT",
        help="Serve Prometheus /metrics on this port (0: a free port, printed at start).",
    )
    metrics_host: str = setting(
        "0.0.0.0", group="output", metavar="HOST", help="Interface of the metrics server."
    )
    summary_json: str | None = setting(
        None, group="output", metavar="FILE", help="Write a JSON summary here at exit."
    )
    save_model: str | None = setting(
        None,
        group="output",
        metavar="DIR",
        help="At exit, save x' here as a model folder (loads with --model DIR or transformers).",
    )
    status_file: str | None = setting(
        None,
        group="output",
        metavar="FILE",
        help="Keep a small JSON status here, rewritten as training goes (swarm-node demo reads it).",
    )
    log_level: str = setting(
        "INFO",
        group="output",
        pattern="(?i)debug|info|warning|error|critical",
        metavar="LEVEL",
        help="Log level: DEBUG, INFO, WARNING or ERROR.",
    )
    verbose: bool = setting(
        False,
        group="output",
        help="Debug logs, and the traceback of an error that stops the node (usage errors included).",
    )
    coordinator: str | None = setting(
        None,
        group="coordinator",
        metavar="HOST:PORT",
        help="The run's coordinator: every round is reported there and checkpoints announced, off the "
        "training path. Unset: the address a member published in the DHT, if any.",
    )
    metrics_advertise: str | None = setting(
        None,
        group="coordinator",
        metavar="HOST:PORT",
        help="Where the coordinator tells Prometheus to scrape this node. Unset: the address this "
        "machine uses to reach the coordinator, with the metrics port.",
    )

    def __post_init__(self) -> None:
        check(self, "output")
        for item in ("coordinator", "metrics_advertise"):
            value = getattr(self, item)
            if value is not None and not _HOST_PORT.match(value):
                raise ConfigError(f"--{item.replace('_', '-')} must be host:port, got {value!r}")


@dataclass(kw_only=True)
class CheckpointConfig(DownloadLimits):
    """``[checkpoints]``: what this node publishes, keeps and resumes from, and the cap on what it
    downloads (``max_gb``, declared with ``swarm-node pull``'s flag in ``swarm.checkpoint.bounds``)."""

    every_rounds: int = setting(
        50,
        group="checkpoints",
        flag="checkpoint-every",
        at_least=0,
        metavar="ROUNDS",
        help="Publish x' as a checkpoint after every round whose id is a multiple of this, and at a "
        "graceful exit (0: at exit only). Every member at that round writes the same bytes.",
    )
    keep: int = setting(
        3,
        group="checkpoints",
        flag="keep-checkpoints",
        at_least=1,
        metavar="N",
        help="Checkpoints this node keeps on disk and serves (the newest).",
    )
    home: str | None = setting(
        None,
        group="checkpoints",
        metavar="DIR",
        help="This node's data folder, kept across restarts: its identity, and per run its checkpoints, "
        "the run's artifacts and its resume state (node.home). Unset: $SWARM_HOME, else "
        "$XDG_DATA_HOME/swarm, else ~/.local/share/swarm.",
    )
    ephemeral: bool = setting(
        False,
        group="checkpoints",
        help="Keep nothing: a fresh identity and a temporary folder removed at exit, instead of the "
        "data folder (for throwaway local swarms).",
    )
    dir: str | None = setting(
        None,
        group="checkpoints",
        flag="checkpoint-dir",
        metavar="DIR",
        help="Where checkpoints and the run's artifacts are kept. Unset: <home>/runs/<run id>/checkpoints.",
    )
    pointer_ttl_s: float = setting(
        3600.0,
        group="checkpoints",
        flag="checkpoint-pointer-ttl",
        at_least=60,
        at_most=7 * 24 * 3600,
        metavar="SECONDS",
        help="Lifetime of the DHT pointers to this node's checkpoints; they are refreshed well before.",
    )
    resume: str | None = setting(
        None,
        group="checkpoints",
        metavar="DIR",
        help="This node's own resume folder: restored at start when it holds a state, rewritten at "
        "every checkpoint round and at exit. Unset: <home>/runs/<run id>/resume (none when --ephemeral).",
    )

    def __post_init__(self) -> None:
        check(self, "checkpoints")


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
