"""The training and averaging loop: local steps on a worker thread, a round at every boundary.

With overlap, round r communicates while round r+1 trains; staleness is one round at most (round
r's outcome is applied before round r+1 is sent). Outcomes are applied and x_i is read only while
the training thread is idle.
"""

from __future__ import annotations

import asyncio
import logging
import time

import torch

from node.catch_up import CatchUp
from node.checkpointing import Checkpointing
from node.coordinator_link import CoordinatorLink
from node.data import RunData
from node.faults import FaultHooks
from node.process import Controls
from node.progress import Progress, Recorder
from node.schedule import RoundSchedule
from node.sections import NodeConfig
from node.trainer import LocalTrainer
from swarm.averaging.outcome import Contribution, RoundOutcome, Status
from swarm.averaging.round import Averager
from swarm.averaging.shards import gather
from swarm.averaging.state import GlobalCopy
from swarm.dht.records import RunSpec
from swarm.metrics import NodeMetrics
from swarm.p2p import PEER_ERRORS

logger = logging.getLogger("swarm.node")

PAUSE_POLL_S = 0.2
"""A paused training thread looks this often whether it should stop, resume or start a round."""


class TrainingLoop:
    """Trains x_i and averages x' with the swarm until a limit is reached or the node is stopped."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        trainer: LocalTrainer,
        averager: Averager,
        copy: GlobalCopy,
        spec: RunSpec,
        data: RunData,
        evals: list[torch.Tensor],
        peer_id: bytes,
        controls: Controls,
        schedule: RoundSchedule,
        catch_up: CatchUp,
        checkpointing: Checkpointing,
        coordinator: CoordinatorLink,
        recorder: Recorder,
        faults: FaultHooks,
        progress: Progress,
        metrics: NodeMetrics,
        evaluated_at: float,
    ) -> None:
        """``evaluated_at``: ``time.monotonic()`` of the last evaluation; the node's start before the
        first (``eval_every_s`` counts from there)."""
        self.config = config
        self.trainer = trainer
        self.averager = averager
        self.copy = copy
        self.spec = spec
        self.data = data
        self.evals = evals
        self.peer_id = peer_id
        self.controls = controls
        self.schedule = schedule
        self.catch_up = catch_up
        self.checkpointing = checkpointing
        self.coordinator = coordinator
        self.recorder = recorder
        self.faults = faults
        self.progress = progress
        self.metrics = metrics
        self._last_eval_t = evaluated_at

    async def run(self) -> None:
        """Train, and average every round; with overlap, round r communicates while round r+1 trains."""
        training, averager, copy = self.config.training, self.averager, self.copy
        p = self.progress
        pending: tuple[asyncio.Task[RoundOutcome], Contribution] | None = None
        p.loop_cpu_mark_s = time.thread_time()
        idle_since: float | None = None
        stop = self.controls.stop
        await self._see_live_members()
        try:
            while not stop.is_set():
                if idle_since is not None:
                    # Training waited: for the last round's exchange, to apply it, to prepare the next.
                    idle = time.monotonic() - idle_since
                    p.training_idle_s += idle
                    self.metrics.training_idle.inc(idle)
                await asyncio.to_thread(self.train_until_round)
                idle_since = time.monotonic()
                if pending is not None:
                    await self._finish_round(await pending[0], pending[1])
                    pending = None
                out_of_steps = training.max_steps is not None and p.steps >= training.max_steps
                enough_rounds = (training.max_rounds is not None and p.committed >= training.max_rounds) or (
                    training.until_round is not None and copy.round >= training.until_round
                )
                if stop.is_set() or enough_rounds or (out_of_steps and p.steps_since_round == 0):
                    break
                contribution = self._contribution()
                task = asyncio.create_task(averager.run_round(contribution))
                if training.overlap:
                    pending = (task, contribution)
                else:
                    await self._finish_round(await task, contribution)
        finally:
            # A stop while a round communicates: finish it (bounded by its deadlines), lose nothing;
            # a round still forming gets the join grace, not the whole join timeout.
            if pending is not None:
                averager.hurry(self.config.rounds.join_grace_s)
                outcome = await pending[0]
                await self._finish_round(outcome, pending[1])
            await averager.settled()

    async def _see_live_members(self) -> None:
        """Before the first round: the data shards are assigned among the run's live members."""
        try:
            members = await self.averager.live_members()
        except PEER_ERRORS as e:
            logger.debug("no member list for the data assignment yet: %s", e)
            return
        self.data.see_members(members)

    def train_until_round(self) -> None:
        """Local steps until the next round boundary (or ``local_steps`` of them); on a worker thread."""
        training, trainer, copy, spec = self.config.training, self.trainer, self.copy, self.spec
        stop_thread, paused = self.controls.stop_thread, self.controls.paused
        p = self.progress
        boundary = self.schedule.next_boundary(time.time())
        while not stop_thread.is_set():
            if paused.is_set():
                # Paused: no steps; the next round still starts on time, so the swarm never waits on us.
                if time.time() >= boundary:
                    return
                stop_thread.wait(min(PAUSE_POLL_S, max(0.0, boundary - time.time())))
                continue
            if training.local_steps is not None:
                if p.steps_since_round >= training.local_steps:
                    return
            elif time.time() >= boundary and p.steps_since_round > 0:
                return
            if training.max_steps is not None and p.steps >= training.max_steps:
                return
            batch = self.data.train_batch(spec, peer_id=self.peer_id, round=copy.round, step=trainer.steps)
            loss = trainer.step(batch, global_step=copy.global_step + p.steps_in_flight + p.steps_since_round)
            p.steps, p.samples, p.last_loss = trainer.steps, trainer.samples, loss
            p.steps_since_round += 1
            p.samples_since_round += batch.shape[0]
            self.metrics.step.set(p.steps)
            self.metrics.loss.set(loss)
            self.metrics.samples.inc(batch.shape[0])

    def _contribution(self) -> Contribution:
        """x_i - x' on the next round's supports, computed on the model's device: a GPU member
        moves x' on the supports to the device (a tenth of x' at the defaults) and encodes there."""
        trainer, copy, p = self.trainer, self.copy, self.progress
        round_id = copy.round + 1
        if not trainer.all_finite():
            # Local training diverged: drop this node's unsent work rather than poison the round.
            logger.error("local model holds NaN/Inf after %d steps: resetting it to the global copy", p.steps)
            trainer.reset_to(copy.values)
        spans = self.averager.supports(round_id)
        delta = trainer.gather(spans).sub_(gather(copy.values, spans).to(trainer.device))
        self.faults.begin_round(round_id, trainer, copy)
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

    async def _finish_round(self, outcome: RoundOutcome, contribution: Contribution) -> None:
        trainer, copy, averager, p = self.trainer, self.copy, self.averager, self.progress
        p.steps_in_flight = 0
        await averager.settled()  # the last round's digest (hashed while this one trained)
        trainer.apply_folds(outcome.folds)
        if outcome.status is Status.COMMITTED:
            dumping = self.faults.dumping
            before = copy.values.clone() if dumping else None
            local_before = trainer.flat() if dumping else None
            trainer.apply_round(outcome.updates, copy)
            if before is not None and local_before is not None:
                self.faults.dump(outcome, contribution, before, local_before, trainer.flat(), copy)
            self.faults.after_commit(copy)
            copy.round = outcome.round
            self.data.see_members(outcome.members)  # whose data shards are whose, from now on
            copy.global_step += outcome.global_step_increment
            copy.swarm_samples += outcome.samples
            self.metrics.local_steps_per_round.set(contribution.local_steps)
            p.local_steps_last_round = contribution.local_steps
        else:
            repaired = outcome.status is Status.REPAIR and await self.catch_up.repair(outcome)
            # A member that lacked some results of a round the others committed with its parts takes
            # that round from a peer: its work is in x' and in the round's counters. Otherwise the
            # work stays in x_i - x' and goes with the next round: so do its counters.
            if not (repaired and self.peer_id in outcome.members):
                p.steps_since_round += contribution.local_steps
                p.samples_since_round += contribution.samples
        if outcome.status in (Status.COMMITTED, Status.REPAIR):
            # x' is hashed (and the round journaled) on a worker thread while the next round trains.
            hashing = averager.applied(outcome if outcome.status is Status.COMMITTED else None)
        else:
            hashing = None
        self.schedule.after_round(outcome)
        self.recorder.record(outcome, contribution, copy, hashing)
        every = self.config.checkpoints.every_rounds
        if outcome.status is Status.COMMITTED and every and copy.round % every == 0:
            self.checkpointing.start_publish()
            await asyncio.to_thread(self.checkpointing.save_resume)
        if outcome.status is Status.COMMITTED and self._evaluation_due(p.committed):
            self._last_eval_t = time.monotonic()
            p.eval_loss = await asyncio.to_thread(trainer.evaluate, copy.values, self.evals)
            self.metrics.eval_loss.set(p.eval_loss)
            p.history[-1]["eval_loss"] = p.eval_loss
            if self.config.training.eval_local:
                p.history[-1]["local_eval_loss"] = await asyncio.to_thread(trainer.evaluate, None, self.evals)
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
        self.coordinator.report(outcome, contribution, copy)

    def _evaluation_due(self, committed_rounds: int) -> bool:
        training = self.config.training
        if committed_rounds % training.eval_every_rounds == 0:
            return True
        return (
            training.eval_every_s is not None
            and time.monotonic() - self._last_eval_t >= training.eval_every_s
        )
