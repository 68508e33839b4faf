"""Test hooks of a node, from ``SWARM_FAULT`` and ``SWARM_DUMP_DIR`` only (``FaultConfig``): kill
this process mid-round, perturb x', drop an owner's results, send hostile parts, and dump each
committed round's numbers for tests that check the algebra. Production runs set none of them."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import torch

from node.sections import FaultConfig
from node.trainer import LocalTrainer
from swarm.averaging.faults import Faults, Misbehaviour
from swarm.averaging.outcome import Contribution, RoundOutcome
from swarm.averaging.state import GlobalCopy
from swarm.peer_names import peer_name

logger = logging.getLogger("swarm.node")

DIVERGENCE = 1e-3
"""What ``diverge:R`` adds to x's first entry: a digest that differs, far below any training signal."""


class FaultHooks:
    """The hooks ``FaultConfig`` asks for, called by the node at the points each one names."""

    def __init__(self, fault: FaultConfig, *, peer: str) -> None:
        self.fault = fault
        self.peer = peer
        """This node's peer id (base58), which names its dump files."""
        self._round_in_progress = 0
        self._results_sent = 0
        self._delta: torch.Tensor | None = None
        """x_i - x' (dense) of the round in progress, kept for the dump."""

    def round_faults(self) -> Faults:
        """The averager's own hooks, given to it when it is built: lose one owner's results, send
        hostile parts."""
        fault, faults = self.fault, Faults()
        if fault.lose_results_round is not None:
            faults.lose_results_round = fault.lose_results_round
            logger.warning(
                "test hook: this node drops one owner's results in round %d", fault.lose_results_round
            )
        if fault.misbehave is not None:
            faults.misbehave = Misbehaviour(fault.misbehave, factor=fault.misbehave_factor)
            logger.warning("test hook: this node sends hostile parts (%s)", fault.misbehave)
        return faults

    @property
    def dumping(self) -> bool:
        return self.fault.dump_dir is not None

    def begin_round(self, round_id: int, trainer: LocalTrainer, copy: GlobalCopy) -> None:
        """This node sends its contribution to round ``round_id`` now."""
        self._round_in_progress, self._results_sent = round_id, 0
        if self.dumping:
            self._delta = trainer.flat().sub_(copy.values)

    def on_send(self, kind: str) -> None:
        """Failure injection for tests: SIGKILL ourselves after K results sent in round R."""
        fault = self.fault
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

    def after_commit(self, copy: GlobalCopy) -> None:
        """x' now holds the round just committed (its id not yet counted): ``diverge:R`` perturbs it."""
        if self.fault.diverge_round == copy.round:
            logger.warning("fault injection: perturbing x' after round %d", copy.round)
            copy.apply_shard(0, torch.full((1,), DIVERGENCE))

    def dump(
        self,
        outcome: RoundOutcome,
        contribution: Contribution,
        before: torch.Tensor,
        local_before: torch.Tensor,
        local_after: torch.Tensor,
        copy: GlobalCopy,
    ) -> None:
        """Numerical record of one committed round, for tests that check the algebra (with SWARM_DUMP_DIR)."""
        if self.fault.dump_dir is None:
            return
        folder = Path(self.fault.dump_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "round": outcome.round,
            "peer": self.peer,
            "members": [peer_name(m) for m in outcome.members],
            "delta": self._delta,
            "local_steps": contribution.local_steps,
            "before": before,
            "after": copy.values.clone(),
            "residual_before": local_before - before,
            "residual_after": local_after - copy.values,
            "folds": outcome.folds,
            "updates": [(u.shard, u.start, u.dense(u.aggregate), u.dense(u.own)) for u in outcome.updates],
            "aborted": outcome.aborted_shards,
        }
        torch.save(record, folder / f"{self.peer}-round{outcome.round}.pt")
