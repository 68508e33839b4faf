"""Progress, history and the summary: what a node counts, and where it tells it.

Progress     counters shared by the training thread and the event loop
Recorder     each round into the metrics and the history (it records; the schedule decides)
StatusFiles  the status file (rewritten every second) and the summary JSON (at exit)
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from node.schedule import RoundSchedule
from node.sections import NodeConfig
from swarm import __version__
from swarm.averaging.outcome import Contribution, RoundOutcome, Status
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.metrics import NodeMetrics
from swarm.p2p import SwarmHost

STATUS_ROUNDS = 50
"""The status file lists this many most recent rounds (round, digest, group size, time)."""
STATUS_INTERVAL_S = 1.0
"""How often the status file is rewritten (``swarm-node demo`` draws its progress bar from it)."""
HISTORY_ROUNDS = 1000
"""The history (summary JSON) keeps this many most recent committed rounds."""


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
    artifact_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes of the run's artifacts fetched at this start, by kind (nothing for those held)."""
    catch_up: dict[str, Any] = field(default_factory=dict)
    """How this node got the swarm's x' when it joined (source, rounds, bytes)."""
    maddrs: list[str] = field(default_factory=list)
    """Where peers can dial this node, as the network watcher last saw it."""
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

    @property
    def committed(self) -> int:
        return self.rounds[Status.COMMITTED.value]


class Recorder:
    """Counts each round in the metrics and the history."""

    def __init__(
        self, progress: Progress, metrics: NodeMetrics, averager: Averager, schedule: RoundSchedule
    ) -> None:
        self.progress = progress
        self.metrics = metrics
        self.averager = averager
        self.schedule = schedule

    def record(
        self,
        outcome: RoundOutcome,
        contribution: Contribution,
        copy: GlobalCopy,
        hashing: asyncio.Task[bytes] | None,
    ) -> None:
        """Count the round, in the metrics and the history. ``hashing``: the task that hashes x'
        after the round (``Averager.applied``); the history gets the digest when it is done."""
        p, metrics = self.progress, self.metrics
        p.rounds[outcome.status.value] += 1
        metrics.rounds.labels(status=outcome.status.value).inc()
        # record() runs on the event loop thread once a round: the CPU it used since the last one is
        # this round's averaging work (its contribution, codec, reductions, protocol and commit),
        # plus the worker thread's hashing of x'.
        loop_cpu, mark = time.thread_time(), p.loop_cpu_mark_s
        hash_cpu, p.hash_cpu_mark_s = copy.hash_cpu_s - p.hash_cpu_mark_s, copy.hash_cpu_s
        round_cpu_s = 0.0 if mark is None else loop_cpu - mark + hash_cpu
        p.loop_cpu_mark_s = loop_cpu
        p.loop_cpu_s += round_cpu_s
        metrics.loop_cpu.inc(round_cpu_s)
        p.bytes_sent += outcome.bytes_sent
        p.bytes_received += outcome.bytes_received
        metrics.round_sent_bytes.set(outcome.bytes_sent)
        metrics.round_received_bytes.set(outcome.bytes_received)
        if outcome.status is Status.COMMITTED:
            p.fp32_bytes += outcome.fp32_bytes
            metrics.compression_ratio.set(outcome.compression_ratio)
            metrics.round_duration.observe(outcome.duration_s)
            metrics.group_size.set(len(outcome.members))
            metrics.aborted_shards.inc(len(outcome.aborted_shards))
            p.aborted_shards += len(outcome.aborted_shards)
            self._add_to_history(outcome, contribution, copy, hashing, round_cpu_s)
        metrics.round.set(copy.round)
        metrics.global_step.set(copy.global_step)
        averager = self.averager
        metrics.rejected.inc(averager.rejections - p.rejections)
        p.rejections = averager.rejections
        metrics.excluded_parts.inc(averager.excluded_parts - p.excluded_parts)
        p.excluded_parts = averager.excluded_parts
        metrics.banned_peers.set(len(averager.bans))

    def _add_to_history(
        self,
        outcome: RoundOutcome,
        contribution: Contribution,
        copy: GlobalCopy,
        hashing: asyncio.Task[bytes] | None,
        round_cpu_s: float,
    ) -> None:
        history, known = self.progress.history, copy.known_digest
        history.append(
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
                "round_period_s": self.schedule.reported_period_s,
                "swarm_samples": copy.swarm_samples,
                "time": round(time.time(), 3),
            }
        )
        if known is None and hashing is not None:
            entry = history[-1]

            def fill(task: asyncio.Task[bytes]) -> None:
                if not task.cancelled() and task.exception() is None:
                    entry["digest"] = task.result().hex()

            hashing.add_done_callback(fill)
        del history[:-HISTORY_ROUNDS]


class StatusFiles:
    """The status file (``--status-file``) and the summary JSON (``--summary-json``)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        progress: Progress,
        host: SwarmHost,
        averager: Averager,
        schedule: RoundSchedule,
        metrics_port: int | None,
        paused: threading.Event,
        started: float,
    ) -> None:
        self.config = config
        self.progress = progress
        self.host = host
        self.averager = averager
        self.schedule = schedule
        self.metrics_port = metrics_port
        self.paused = paused
        self.started = started

    def status(self, copy: GlobalCopy, state: str) -> dict[str, Any]:
        p = self.progress
        return {
            "state": "paused" if state == "training" and self.paused.is_set() else state,
            "pid": os.getpid(),
            "run_id": self.config.run.run_id,
            "peer_id": self.host.peer_name,
            "maddrs": p.maddrs,
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
            "rounds_completed": p.committed,
            "checkpoints": p.checkpoints,
            "artifact_bytes_fetched": p.artifact_bytes,
            "recent": [  # rounds whose x' is hashed (the last one may still be on the worker thread)
                {k: h[k] for k in ("round", "digest", "group_size", "time")}
                for h in p.history[-STATUS_ROUNDS:]
                if h["digest"] is not None
            ],
        }

    async def write_status_forever(self, copy: GlobalCopy) -> None:
        while True:
            self.write_status(copy, "training")
            await asyncio.sleep(STATUS_INTERVAL_S)

    def write_status(self, copy: GlobalCopy, state: str) -> None:
        path = self.config.output.status_file
        if path is None:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.status(copy, state), f)
        os.replace(tmp, path)

    def write_summary(self, copy: GlobalCopy, device: torch.device) -> None:
        path = self.config.output.summary_json
        if path is None:
            return
        p = self.progress
        moved = p.bytes_sent + p.bytes_received
        summary = {
            "run_id": self.config.run.run_id,
            "peer_id": self.host.peer_name,
            "software": __version__,
            "device": str(device),
            "final_step": p.steps,
            "global_step": copy.global_step,
            "round": copy.round,
            "digest": copy.digest.hex(),
            "rounds_completed": p.committed,
            "rounds_by_status": p.rounds,
            "aborted_shards": p.aborted_shards,
            "repairs": p.repairs,
            "rejections": p.rejections,
            "excluded_parts": p.excluded_parts,
            "banned_peers": len(self.averager.bans),
            "catch_up": p.catch_up,
            "last_loss": p.last_loss,
            "eval_loss": p.eval_loss,
            "samples": p.samples,
            "unsent_samples": p.samples_since_round,
            "checkpoints": p.checkpoints,
            "artifact_bytes_fetched": p.artifact_bytes,
            "bytes_sent": self.host.traffic.sent,
            "bytes_received": self.host.traffic.received,
            "round_bytes_sent": p.bytes_sent,
            "round_bytes_received": p.bytes_received,
            "compression_ratio": p.fp32_bytes / moved if moved else None,
            "overlap": self.config.training.overlap,
            "round_period_s": self.schedule.reported_period_s,
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
