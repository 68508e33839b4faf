"""Checkpointing and resume: write and announce x' as a swarm checkpoint, keep this node's own
resume state, and start from either at launch.

A swarm checkpoint (x' and the run's settings, the same bytes on every member at that round) is
written on a worker thread from a snapshot and announced in the background; the resume state
(``node.resume``) is private to this node and written only while the training thread is idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from node.agreement import check_saved_spec
from node.coordinator_link import CoordinatorLink
from node.data import RunData
from node.progress import Progress
from node.resume import ResumeError, load_resume_state, save_resume_state
from node.sections import NodeConfig
from node.trainer import LocalTrainer
from swarm.auth import Gate
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.checkpoint.files import SWARM_FILE, CheckpointFolderError, checkpoint_files, read_checkpoint_folder
from swarm.checkpoint.manifest import Manifest, build_manifest
from swarm.checkpoint.service import CheckpointService, read_pointers
from swarm.checkpoint.wire import pointer_to_pb
from swarm.data.errors import DataError
from swarm.dht.records import RunSpec
from swarm.metrics import NodeMetrics
from swarm.p2p import SwarmHost
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as ckpt_pb

logger = logging.getLogger("swarm.node")


async def status_response(
    run_id: str, *, host: SwarmHost, averager: Averager, copy: GlobalCopy, spec: RunSpec, gate: Gate
) -> ckpt_pb.StatusResponse:
    """What this node tells a light client (``swarm-node status``, the coordinator) about the run.

    The members' rounds are those of their last heartbeat (they may lag by several short rounds);
    this node's own entry says where its x' is now, as the answer's round does."""
    live = await averager.live_members()
    pointers = await read_pointers(host, run_id, gate)
    members = []
    for peer, r in sorted(live.items()):
        mine = peer == host.peer_id
        members.append(
            ckpt_pb.MemberInfo(
                peer_id=peer,
                round=copy.round if mine else r.round,
                global_step=copy.global_step if mine else r.global_step,
                leaving=r.leaving,
            )
        )
    return ckpt_pb.StatusResponse(
        run_id=run_id,
        round=copy.round,
        global_step=copy.global_step,
        members=members,
        checkpoints=[pointer_to_pb(p) for p in pointers],
        model=spec.model,
        codec=spec.codec,
    )


class Checkpointing:
    """Publishes x' as checkpoints (and refreshes their pointers), saves and restores resume state."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        service: CheckpointService,
        coordinator: CoordinatorLink,
        averager: Averager,
        trainer: LocalTrainer,
        copy: GlobalCopy,
        spec: RunSpec,
        model_config: Any,
        progress: Progress,
        metrics: NodeMetrics,
        model_files: Mapping[str, bytes] | None = None,
        data: RunData | None = None,
    ) -> None:
        self.config = config
        self.run_id = config.run.run_id
        self.service = service
        self.coordinator = coordinator
        self.averager = averager
        self.trainer = trainer
        self.copy = copy
        self.spec = spec
        self.model_config = model_config
        self.model_files = dict(model_files or {})
        """The run's tokenizer and generation files, written beside every checkpoint's weights."""
        self.progress = progress
        self.metrics = metrics
        self.data = data
        """What this node trains on: its position in the data goes into the resume state."""
        self._publishing: asyncio.Task | None = None
        """The checkpoint being written and announced, if one is (at most one at a time)."""

    # --- swarm checkpoints ----------------------------------------------------------------------

    def start_publish(self) -> None:
        """Write and announce x' as a checkpoint in the background, from a snapshot taken now."""
        copy = self.copy
        if self._publishing is not None and not self._publishing.done():
            logger.warning("round %d: the previous checkpoint is still being written; skipping", copy.round)
            return
        self._publishing = asyncio.create_task(
            self._publish(
                self.trainer.model, copy.values.clone(), round=copy.round, global_step=copy.global_step,
                samples=copy.swarm_samples,
            )
        )  # fmt: skip

    async def published(self) -> None:
        """Wait for the checkpoint being written, if any."""
        if self._publishing is not None:
            await self._publishing

    async def hand_over(self) -> None:
        """Before leaving: x' as a checkpoint, unless one of this round is held already (members at
        this round share it)."""
        await self.published()
        held = self.service.store.manifests()
        if self.copy.round > 0 and not any(m.round == self.copy.round for m in held):
            self.start_publish()
            await self.published()

    async def _publish(
        self, model: torch.nn.Module, values: torch.Tensor, *, round: int, global_step: int, samples: int
    ) -> None:
        service, run_id = self.service, self.run_id

        def write() -> Manifest:
            files = checkpoint_files(
                model=model, values=values, model_config=self.model_config, spec=self.spec,
                run_id=run_id, round=round, global_step=global_step, swarm_samples=samples,
                model_files=self.model_files,
            )  # fmt: skip
            manifest = build_manifest(files, run_id=run_id, round=round, global_step=global_step)
            service.store.add(manifest, files)
            return manifest

        try:
            manifest = await asyncio.to_thread(write)
            await service.publish(manifest)
            if self.coordinator.reporter is not None:
                self.coordinator.announce_checkpoint(manifest, addrs=await service.serving_addrs())
            self.progress.checkpoints.append({"round": round, "manifest": manifest.hash})
            self.metrics.checkpoint_round.set(round)
            logger.info(
                "checkpoint of round %d: manifest %s, %.1f MB, served from %s",
                round, manifest.hash[:12], manifest.total_bytes / 1e6, service.store.folder(manifest.hash),
            )  # fmt: skip
        # The boundary of a background task nobody awaits until the next checkpoint: a checkpoint
        # that could not be written (disk full, the DHT) is logged whole, and training goes on.
        except Exception:
            logger.exception("could not write or announce the checkpoint of round %d", round)

    async def refresh_pointers(self) -> None:
        while True:
            try:
                await self.service.republish()
            # The boundary of a background task: whatever the DHT's process raised, refresh again later.
            except Exception as e:
                logger.warning("could not refresh checkpoint pointers: %s", e)
            await asyncio.sleep(self.config.checkpoints.pointer_ttl_s / 4)

    # --- resume -------------------------------------------------------------------------------

    def restore(self, folder: Path) -> bool:
        """Start from ``folder`` (--resume): this node's resume state, or a pulled swarm checkpoint.
        Whether there was one to start from. Blocks (loads from disk)."""
        trainer, copy = self.trainer, self.copy
        state = load_resume_state(folder, run_id=self.run_id, num_elements=copy.values.numel())
        if state is None and (folder / SWARM_FILE).is_file():
            return self._start_from_checkpoint(folder)
        if state is None:
            logger.info("resume folder %s holds no state yet: starting fresh, saving there", folder)
            return False
        check_saved_spec(state["spec"], self.spec, folder)
        trainer.load_flat(state["local"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.steps, trainer.samples = state["steps"], state["samples"]
        copy.replace(
            state["global"], round=state["round"], global_step=state["global_step"],
            swarm_samples=state["swarm_samples"],
        )  # fmt: skip
        self.averager.restore_owner_errors(state["owner_error"])
        torch.set_rng_state(state["rng"])
        p = self.progress
        p.steps, p.samples = trainer.steps, trainer.samples
        p.steps_since_round, p.samples_since_round = state["steps_since_round"], state["samples_since_round"]
        if self.data is not None:
            try:
                self.data.restore_position(state.get("data_position", ""))
            except DataError as e:
                raise ResumeError(f"{folder}: {e}") from None
        logger.info(
            "resumed from %s: round %d, %d local steps, %d not yet averaged in",
            folder, copy.round, trainer.steps, p.steps_since_round,
        )  # fmt: skip
        return True

    def _start_from_checkpoint(self, folder: Path) -> bool:
        """A swarm checkpoint folder (``swarm-node pull``) given to --resume: start from its x'."""
        copy = self.copy
        try:
            values, info = read_checkpoint_folder(folder, self.trainer.model)
        except CheckpointFolderError as e:
            raise ResumeError(str(e)) from None
        if info.get("run_id") != self.run_id:
            raise ResumeError(f"{folder} is a checkpoint of run {info.get('run_id')!r}, not {self.run_id!r}")
        check_saved_spec(info["spec"], self.spec, folder)
        copy.replace(
            values, round=info["round"], global_step=info["global_step"], swarm_samples=info["swarm_samples"]
        )
        self.trainer.load_flat(values)
        logger.info("starting from the swarm checkpoint in %s: round %d, global step %d", folder, copy.round,
                    copy.global_step)  # fmt: skip
        return True

    def save_resume(self) -> None:
        """Write this node's resume state; only while the training thread is idle."""
        folder = self.config.checkpoints.resume
        if folder is None:
            return
        trainer, p = self.trainer, self.progress
        save_resume_state(
            Path(folder), run_id=self.run_id, spec=self.spec, local=trainer.flat(),
            optimizer=trainer.optimizer.state_dict(), copy=self.copy, steps=trainer.steps, samples=trainer.samples,
            owner_error=self.averager.owner_errors(),
            counters={"steps_since_round": p.steps_since_round, "samples_since_round": p.samples_since_round},
            data_position=self.data.saved_position() if self.data is not None else "",
        )  # fmt: skip

    def save_model(self, path: str) -> None:
        """Write x' as a model folder that ``--model`` (and ``transformers``) loads, for fine-tuning."""
        self.trainer.load_flat(self.copy.values)
        self.trainer.model.save_pretrained(path)  # type: ignore[operator]
        for name, data in self.model_files.items():  # the tokenizer: a folder AutoTokenizer loads
            (Path(path) / name).write_bytes(data)
        logger.info("saved x' of round %d to %s", self.copy.round, path)
