"""One node's life: start the host, agree on the run, catch up, train and average, report, leave.

    run(config) -> exit code
      host           SwarmHost: p2pd + DHT (swarm.p2p, started by node.network)
      spec           the run's RunSpec, published by the first node, adopted by joiners (node.agreement)
      trainer        x_i and its optimizer (node.trainer)
      averager       rounds over x' (swarm.averaging.round)
      checkpoints    the checkpoint service, and publishing and resume (node.checkpointing)
      catch-up       x' from the swarm at start and after a missed round (node.catch_up)
      coordinator    round reports and checkpoint announcements (node.coordinator_link)
      background     heartbeats, the network watch, pointer refresh, the status file
      loop           local steps and rounds until a limit or a signal (node.loop)
The event loop serves peers' streams at all times; local steps run in a worker thread between rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sys
import time
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from node.agreement import (
    RunAgreement,
    check_local_sources,
    check_param_count,
    codec_for_spec,
    full_run_id,
    identity_file,
    spec_for,
)
from node.artifacts import fetch_run_artifact, publish_model
from node.catch_up import CatchUp
from node.checkpointing import Checkpointing, status_response
from node.coordinator_link import CoordinatorLink
from node.data import RunData
from node.errors import EXIT_USAGE, NodeError
from node.faults import FaultHooks
from node.home import Home, opened_home
from node.loop import TrainingLoop
from node.network import Heartbeat, NetworkWatcher, start_host
from node.preflight import check_before_start
from node.process import Controls, cap_gpu_memory, handle_signals, limit_malloc_arenas, set_up_logging
from node.progress import Progress, Recorder, StatusFiles
from node.reachability import reachability
from node.resume import ResumeError
from node.run_inputs import Fetch, founder_data, is_embedded, joiner_data
from node.schedule import RoundSchedule
from node.sections import ConfigError, NodeConfig
from node.trainer import LocalTrainer
from swarm.auth import Gate
from swarm.averaging.round import Averager
from swarm.averaging.shards import shards_for
from swarm.averaging.state import GlobalCopy
from swarm.checkpoint.artifacts import ArtifactStore
from swarm.checkpoint.service import CheckpointService
from swarm.checkpoint.store import CheckpointStore
from swarm.data.corpus import DataError
from swarm.dht.records import RunSpec
from swarm.metrics import NodeMetrics
from swarm.models.build import (
    ModelError,
    build_model,
    check_fits,
    companion_files,
    load_tokenizer,
    resolve_model,
)
from swarm.p2p import SwarmHost
from swarm.run_settings import RunSettings

logger = logging.getLogger("swarm.node")

ARTIFACTS_FOLDER = "artifacts"
"""The run's artifacts this node holds, beside its checkpoints (kept with --checkpoint-dir)."""

USAGE_ERRORS = (NodeError, ConfigError, ResumeError, ModelError, DataError)
"""What stops a node with one line on stderr and no traceback (``--verbose`` shows it): its
exit status is the NodeError's (``node.errors``), 2 for the others."""


@dataclass
class LocalRun:
    """What this node trains, once it agrees with the swarm on the run."""

    spec: RunSpec
    model_config: Any
    data: RunData
    device: torch.device
    trainer: LocalTrainer
    copy: GlobalCopy
    model_files: dict[str, bytes]
    """The tokenizer and generation files every checkpoint (and --save-model) carries, so that it
    is a complete model folder."""


class Node:
    """Builds a node's roles in order (host, spec, trainer, averager, checkpoints, catch-up,
    coordinator, background tasks) and runs the training loop until it leaves."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self.metrics = NodeMetrics()
        self.progress = Progress()
        self.controls = Controls()
        self.schedule = RoundSchedule(config.training, self.metrics)
        self.started = time.time()
        self._started_monotonic = time.monotonic()
        self._tasks: list[asyncio.Task] = []

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A background task for the node's lifetime (cancelled when it leaves)."""
        self._tasks.append(asyncio.create_task(work))

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def run(self) -> int:
        if self.config.training.threads is not None:
            torch.set_num_threads(self.config.training.threads)
        with opened_home(self.config.checkpoints.home, ephemeral=self.config.checkpoints.ephemeral) as home:
            # What is started is shut down in reverse: the coordinator's reporter, the averager, the host.
            async with contextlib.AsyncExitStack() as started:
                try:
                    return await self._run(home, started)
                finally:
                    self._cancel_tasks()

    async def _run(self, home: Home, started: contextlib.AsyncExitStack) -> int:
        cfg, p = self.config, self.progress
        device = check_before_start(cfg)
        metrics_port = self._serve_metrics()
        host = await start_host(cfg, identity_file(cfg.network, home.identity()), self.metrics)
        started.push_async_callback(host.shutdown)
        p.maddrs = await host.visible_maddrs()
        # From here on the run id is the pinned one: every DHT key, report and status file names it.
        run = replace(cfg.run, run_id=await full_run_id(cfg, host))
        ckpt = cfg.checkpoints
        resume = home.resume(run.run_id)
        ckpt = replace(
            ckpt,
            dir=ckpt.dir or str(home.checkpoints(run.run_id)),
            resume=ckpt.resume or (str(resume) if resume is not None else None),
        )
        cfg = self.config = replace(cfg, run=run, checkpoints=ckpt)
        agreement = RunAgreement(cfg, host)
        assert cfg.checkpoints.dir is not None
        store_dir = Path(cfg.checkpoints.dir)
        artifacts = ArtifactStore(store_dir / ARTIFACTS_FOLDER)
        local = await self._agree(agreement, device, artifacts)
        spec, trainer, copy = local.spec, local.trainer, local.copy
        gate = agreement.gate(spec)
        faults = FaultHooks(cfg.fault, peer=host.peer_name)
        averager = await self._start_averager(host, local, gate, faults, started)
        service = CheckpointService(
            host,
            CheckpointStore(store_dir, keep=cfg.checkpoints.keep),
            run_id=cfg.run.run_id,
            key=host.signing_key,
            status=lambda: status_response(
                cfg.run.run_id, host=host, averager=averager, copy=copy, spec=spec, gate=gate
            ),
            pointer_ttl_s=cfg.checkpoints.pointer_ttl_s,
            gate=gate,
            artifacts=artifacts,
        )
        await service.start()
        coordinator = CoordinatorLink(
            cfg,
            host=host,
            device=local.device,
            progress=p,
            started=self.started,
            credential=gate.own_credential,
        )
        started.push_async_callback(asyncio.to_thread, coordinator.stop)
        checkpointing = Checkpointing(
            cfg, service=service, coordinator=coordinator, averager=averager, trainer=trainer, copy=copy,
            spec=spec, model_config=local.model_config, model_files=local.model_files, progress=p,
            metrics=self.metrics, data=local.data,
        )  # fmt: skip
        catch_up = CatchUp(
            cfg, host=host, averager=averager, copy=copy, trainer=trainer, spec=spec, checkpoints=service,
            gate=gate, progress=p, metrics=self.metrics,
        )  # fmt: skip
        resumed = cfg.checkpoints.resume is not None and await asyncio.to_thread(
            checkpointing.restore, Path(cfg.checkpoints.resume)
        )
        if cfg.network.peers:
            await catch_up.catch_up(keep_local_work=resumed)
        self._spawn(agreement.keep_up())
        status_files = self._start_background(host, averager, local, checkpointing, coordinator, metrics_port)
        self._say_started(host, local)
        evals = await self._prepare_training(host, local)
        loop = TrainingLoop(
            cfg, trainer=trainer, averager=averager, copy=copy, spec=spec, data=local.data,
            evals=evals, peer_id=host.peer_id, controls=self.controls, schedule=self.schedule,
            catch_up=catch_up, checkpointing=checkpointing, coordinator=coordinator,
            recorder=Recorder(p, self.metrics, averager, self.schedule), faults=faults, progress=p,
            metrics=self.metrics, evaluated_at=self._started_monotonic,
        )  # fmt: skip
        await loop.run()
        await self._leave(averager, local, checkpointing, status_files, evals)
        return 0

    async def _start_averager(
        self,
        host: SwarmHost,
        local: LocalRun,
        gate: Gate,
        faults: FaultHooks,
        started: contextlib.AsyncExitStack,
    ) -> Averager:
        cfg, spec, copy = self.config, local.spec, local.copy
        averager = Averager(
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
            on_send=faults.on_send,
            faults=faults.round_faults(),
        )
        started.push_async_callback(averager.shutdown)
        # A round still forming when the node is told to stop gets the join grace, not the join timeout.
        self.controls.on_stop(lambda: averager.hurry(cfg.rounds.join_grace_s))
        await averager.start()
        return averager

    def _serve_metrics(self) -> int | None:
        """Serve /metrics before anything else starts, so that a port in use stops the node at once;
        the port bound (``--metrics-port 0`` picks one), or None without ``--metrics-port``."""
        out = self.config.output
        if out.metrics_port is None:
            return None
        try:
            port = self.metrics.serve(out.metrics_port, out.metrics_host)
        except OSError as e:
            reason = f"port {out.metrics_port} is in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise NodeError(
                f"--metrics-port {out.metrics_port}: cannot serve metrics on {out.metrics_host}:{out.metrics_port}"
                f" ({reason})"
            ) from None
        logger.info("metrics at http://%s:%d/metrics", out.metrics_host, port)
        return port

    def _start_background(
        self,
        host: SwarmHost,
        averager: Averager,
        local: LocalRun,
        checkpointing: Checkpointing,
        coordinator: CoordinatorLink,
        metrics_port: int | None,
    ) -> StatusFiles:
        """Start reporting, and start the tasks that run for the node's lifetime: the coordinator's
        upkeep, pointer refresh, heartbeats, the network watch, the status file."""
        cfg, p = self.config, self.progress
        coordinator.start(metrics_port)
        self._spawn(coordinator.keep_up())
        self._spawn(checkpointing.refresh_pointers())
        self._spawn(Heartbeat(cfg, host, averager, local.copy, p, self.schedule).beat())
        self._spawn(NetworkWatcher(cfg, host, p, self.metrics).watch())
        status_files = StatusFiles(
            cfg, progress=p, host=host, averager=averager, schedule=self.schedule, metrics_port=metrics_port,
            paused=self.controls.paused, started=self.started,
        )  # fmt: skip
        self._spawn(status_files.write_status_forever(local.copy))
        return status_files

    async def _leave(
        self,
        averager: Averager,
        local: LocalRun,
        checkpointing: Checkpointing,
        status_files: StatusFiles,
        evals: list[torch.Tensor],
    ) -> None:
        """Hand the final x' over, save, say goodbye to the swarm, then evaluate and write the summary."""
        cfg, p, copy = self.config, self.progress, local.copy
        # Hand the final x' over as a checkpoint before leaving (members at this round share it).
        await checkpointing.hand_over()
        await asyncio.to_thread(checkpointing.save_resume)
        self._cancel_tasks()  # no heartbeat may outlive the leaving notice
        await averager.announce_leaving()
        p.eval_loss = await asyncio.to_thread(local.trainer.evaluate, copy.values, evals)
        self.metrics.eval_loss.set(p.eval_loss)
        status_files.write_summary(copy, local.device)
        if cfg.output.save_model is not None:
            await asyncio.to_thread(checkpointing.save_model, cfg.output.save_model)
        status_files.write_status(copy, "done")
        logger.info(
            "left after %d steps and %d rounds; eval loss of x' %.3f", p.steps, p.committed, p.eval_loss
        )

    async def _agree(
        self, agreement: RunAgreement, device: torch.device, artifacts: ArtifactStore
    ) -> LocalRun:
        """Agree with the swarm on the run, and load what it trains on ``device``: data, model, x_i and x'.

        A joiner's model comes from the run's model artifact (fetched by the hash the spec names, from
        any member), never from a path of the founder's; the founder publishes its model folder as
        that artifact (``node.artifacts``)."""
        cfg = self.config
        # The run's model and data come from the DHT for joiners; read it before loading anything.
        adopted = await agreement.find()
        run_values = adopted or cfg.run.resolved()

        async def fetch(kind: str, digest: str) -> Path:
            assert adopted is not None
            self.progress.artifact_bytes.setdefault(kind, 0)

            def received(size: int) -> None:
                self.progress.artifact_bytes[kind] += size
                self.metrics.artifact_bytes.labels(kind).inc(size)

            return await fetch_run_artifact(
                agreement.host, kind=kind, digest=digest, run_id=cfg.run.run_id, peers=cfg.network.peers,
                store=artifacts, max_bytes=cfg.checkpoints.max_bytes,
                credential=agreement.gate(adopted).own_credential,  # a closed run's, checked here first
                on_received=received,
            )  # fmt: skip

        fetching: dict[str, asyncio.Task[Path]] = {}

        def fetched(kind: str, digest: str) -> asyncio.Task[Path]:
            """One fetch per artifact, started at the first call: the data comes while the model loads."""
            if kind not in fetching:
                fetching[kind] = asyncio.create_task(fetch(kind, digest))
            return fetching[kind]

        try:
            return await self._load(adopted, run_values, agreement, device, artifacts, fetched)
        finally:
            for task in fetching.values():
                task.cancel()

    async def _load(
        self,
        adopted: RunSpec | None,
        run_values: RunSettings,
        agreement: RunAgreement,
        device: torch.device,
        artifacts: ArtifactStore,
        fetched: Fetch,
    ) -> LocalRun:
        """The run's model and data (a joiner's through ``fetched``), x' and this node's trainer."""
        cfg = self.config
        if adopted is not None and adopted.data_artifact and not is_embedded(adopted):
            fetched("data", adopted.data_artifact)  # in parallel with the model's fetch and loading
        if adopted is not None and adopted.model_artifact:
            source = resolve_model(str(await fetched("model", adopted.model_artifact)))
        else:
            source = resolve_model(run_values.model)
        tokenizer = await asyncio.to_thread(load_tokenizer, source)
        data: RunData
        data_artifact = ""
        max_bytes = cfg.training.max_data_bytes
        if adopted is None:
            data, data_artifact = await founder_data(
                run_values, tokenizer, artifacts, run_id=cfg.run.run_id, max_bytes=max_bytes
            )
        else:
            data = await joiner_data(
                adopted, fetched, artifacts, tokenizer, run_id=cfg.run.run_id, max_bytes=max_bytes
            )
        # The starting node publishes its spec once x' exists (the spec names x's digest).
        if adopted is None:
            model_artifact = await asyncio.to_thread(
                publish_model, source, run_id=cfg.run.run_id, store=artifacts
            )
            spec = spec_for(
                cfg.run, model_hash=source.config_hash, data_hash=data.content_hash, initial_digest="",
                model_artifact=model_artifact, data_artifact=data_artifact,
            )  # fmt: skip
        else:
            spec = adopted
        check_local_sources(cfg.run.run_id, spec, data, source)
        check_fits(source, seq_len=spec.seq_len, tokenizer=tokenizer)  # a joiner's adopted model too
        model = await asyncio.to_thread(build_model, source, seed=spec.seed)
        cap_gpu_memory(device, cfg.training.gpu_memory_gb)
        trainer = LocalTrainer(
            model,
            device=device,
            peak_lr=spec.lr,
            warmup_steps=spec.warmup_steps,
            total_steps=spec.total_steps,
            weight_decay=spec.weight_decay,
            max_grad_norm=spec.max_grad_norm,
            batch_size=spec.batch_size,
            micro_batch=cfg.training.micro_batch,
            joiner_warmup_steps=cfg.training.joiner_warmup_steps if cfg.network.peers else 0,
            precision=cfg.training.precision,
        )
        copy = GlobalCopy(trainer.flat())
        if adopted is None:
            spec = replace(spec, initial_digest=copy.digest.hex(), param_count=copy.values.numel())
            await agreement.publish(spec)
        check_param_count(cfg.run.run_id, spec, copy.values.numel())
        return LocalRun(
            spec=spec, model_config=source.config, data=data, device=device,
            trainer=trainer, copy=copy, model_files=companion_files(source, tokenizer),
        )  # fmt: skip

    def _say_started(self, host: SwarmHost, local: LocalRun) -> None:
        """The start-up lines: how others join (on the run's first node), reachability, what it trains."""
        cfg = self.config
        if not cfg.network.peers:
            shown = [m for m in self.progress.maddrs if "p2p-circuit" not in m]
            print(f"Started run {cfg.run.run_id!r}. Other nodes join with:", flush=True)
            for maddr in shown:
                print(f"  swarm-node join --run-id {cfg.run.run_id} --peer {maddr}", flush=True)
        logger.info("reachability: %s", reachability(self.progress.maddrs, cfg.network.announce_maddrs))
        logger.info(
            "peer %s training run %s: %s (%d parameters) on %s, data %s, codec %s",
            host.peer_name,
            cfg.run.run_id,
            local.spec.model,
            local.copy.values.numel(),
            local.device,
            local.data.description,
            local.spec.codec,
        )
        if self.progress.maddrs:  # what the founder (or any member) shares with volunteers
            shared = sorted(
                self.progress.maddrs, key=lambda m: ("/127.0.0.1/" in m or "/::1/" in m, "/tcp/" not in m)
            )
            logger.info(
                "volunteers join this run (%s) with: swarm-node join --peer %s", cfg.run.run_id, shared[0]
            )

    async def _prepare_training(self, host: SwarmHost, local: LocalRun) -> list[torch.Tensor]:
        """Size the micro-batch on a real batch; the held-out batches every evaluation uses."""
        spec, data = local.spec, local.data
        sample = data.train_batch(spec, peer_id=host.peer_id, round=0, step=0)
        await asyncio.to_thread(local.trainer.auto_micro_batch, sample)
        return data.eval_batches(spec, self.config.training.eval_batches)


async def _run_async(config: NodeConfig) -> int:
    node = Node(config)
    handle_signals(node.controls, node.metrics)
    return await node.run()


def run(config: NodeConfig) -> int:
    """Run one node until it is told to stop or reaches its limits; returns the exit code."""
    limit_malloc_arenas()
    set_up_logging(config)
    try:
        return asyncio.run(_run_async(config))
    except USAGE_ERRORS as e:
        if config.output.verbose:
            traceback.print_exc()
        print(f"swarm-node: error: {e}", file=sys.stderr, flush=True)
        return e.exit_status if isinstance(e, NodeError) else EXIT_USAGE
