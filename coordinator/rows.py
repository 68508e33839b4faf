"""The coordinator's record, row by row: what the store takes in (``Report``) and what its queries
return (peers, checkpoints and their providers, a run's summary, its series). Plain frozen data;
``coordinator.store`` reads and writes them, the service and the dashboard show them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Report:
    round: int
    global_step: int
    loss: float | None
    samples: int
    samples_per_s: float
    sent_bytes: int
    received_bytes: int
    compression_ratio: float
    group_size: int
    time: float
    eval_loss: float | None
    status: str


@dataclass(frozen=True, kw_only=True)
class PeerInfo:
    peer_id: str
    device: str
    metrics_url: str
    addrs: tuple[str, ...]
    first_seen: float
    last_seen: float
    last_round: int
    samples_per_s: float
    rounds: int
    samples: int


@dataclass(frozen=True, kw_only=True)
class Provider:
    peer_id: str
    addrs: tuple[str, ...]
    last_announced: float


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    run_id: str
    round: int
    global_step: int
    manifest_hash: str
    total_bytes: int
    first_announced: float
    archived: bool
    providers: tuple[Provider, ...] = field(default=())


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    run_id: str
    first_seen: float
    last_seen: float
    round: int
    global_step: int
    members_online: int
    samples_per_s: float
    loss: float | None
    eval_loss: float | None
    samples: int
    sent_bytes: int
    compression_ratio: float | None
    peers_seen: int
    latest_checkpoint: CheckpointInfo | None


@dataclass(frozen=True, kw_only=True)
class SeriesPoint:
    """The run at one round (raw window) or one minute (older): what the dashboard plots."""

    time: float
    round: int
    loss: float | None
    eval_loss: float | None
    samples_per_s: float
    members: int
    sent_bytes: int
    compression_ratio: float | None
