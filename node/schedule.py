"""The node's round schedule: the period its rounds start on, decided by the policy in
``swarm.averaging.schedule`` from this node's committed rounds and its live peers' heartbeats.

With ``--local-steps`` a round starts when its steps are done, on no period: the node then reports
(``swarm_round_period_seconds``, the summary JSON) the time it measured between its last two rounds
instead (``RoundSchedule.reported_period_s``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from node.sections import TrainingConfig
from swarm.averaging.outcome import RoundOutcome, Status
from swarm.averaging.schedule import round_time_to_hide, smoothed_round_time, swarm_period, wanted_period
from swarm.metrics import NodeMetrics

logger = logging.getLogger("swarm.node")


class RoundSchedule:
    """Owns the round period. Rounds start at multiples of it, the same instants on every member."""

    def __init__(
        self, training: TrainingConfig, metrics: NodeMetrics, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.training = training
        self.metrics = metrics
        self._clock = clock
        self._last_round_end: float | None = None
        self.between_rounds_s: float | None = None
        """With ``local_steps``: the seconds between the ends of this node's last two rounds."""
        self.period_s = training.round_period_s
        """The period rounds start on now: the longest any live member wants."""
        self.wanted_s = 0.0
        """The period this node's own rounds need (0 until measured); its heartbeat publishes it."""
        self.round_time_s: float | None = None
        """Moving average of the seconds of its committed rounds that a period must hide."""
        self.last_members: frozenset[bytes] = frozenset()
        """The group of the last committed round (whether the next one's matchmaking waited for joiners)."""
        metrics.round_period.set(self.reported_period_s)

    @property
    def reported_period_s(self) -> float:
        """The round period as the node reports it (``swarm_round_period_seconds``, the summary and
        its history): the period rounds start on, or with ``local_steps`` (no period) the measured
        seconds between this node's last two rounds, 0 until it has two."""
        if self.on_steps:
            return self.between_rounds_s or 0.0
        return self.period_s

    @property
    def on_steps(self) -> bool:
        """Whether rounds start after ``local_steps`` steps (deterministic mode), not on the period."""
        return self.training.local_steps is not None

    @property
    def adaptive(self) -> bool:
        """Whether the period follows what the swarm's members need (else it stays at the base)."""
        return self.training.adaptive_rounds

    def next_boundary(self, now: float) -> float:
        """The next instant after ``now`` (wall clock) at which a round starts."""
        return (int(now / self.period_s) + 1) * self.period_s

    def after_round(self, outcome: RoundOutcome) -> None:
        """A round ended: a committed one measures how long this node's rounds take."""
        if self.on_steps:
            now = self._clock()
            if self._last_round_end is not None:
                self.between_rounds_s = now - self._last_round_end
                self.metrics.round_period.set(self.reported_period_s)
            self._last_round_end = now
        if outcome.status is not Status.COMMITTED:
            return
        training = self.training
        if training.adaptive_rounds and training.local_steps is None:
            hide = round_time_to_hide(outcome, self.last_members)
            self.round_time_s = smoothed_round_time(self.round_time_s, hide)
            self.wanted_s = wanted_period(
                training.round_period_s, self.round_time_s, overlap=training.overlap
            )
            self._adopt([])
        self.last_members = frozenset(outcome.members)

    def after_heartbeat(self, live_wanted_s: list[float]) -> None:
        """The live members' wanted periods, as their heartbeats say."""
        self._adopt(live_wanted_s)

    def _adopt(self, live_wanted_s: list[float]) -> None:
        period = swarm_period(self.training.round_period_s, self.wanted_s, live_wanted_s)
        if period != self.period_s:
            logger.info("round period %.1f s -> %.1f s (what the slowest link needs)", self.period_s, period)
            self.period_s = period
            self.metrics.round_period.set(self.reported_period_s)
