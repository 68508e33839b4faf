"""The round schedule reports what is true: the period rounds start on, or with --local-steps (no
period) the time measured between rounds, the same value in the metric and the summary JSON
(``reported_period_s``). Before, a node in local-steps mode reported the unused base period (5 s)
while its rounds came every 0.6 s."""

from __future__ import annotations

import pytest

from node.schedule import RoundSchedule
from node.sections import TrainingConfig
from swarm.averaging.outcome import RoundOutcome, Status
from swarm.metrics import NodeMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def period_metric(metrics: NodeMetrics) -> float | None:
    return metrics.registry.get_sample_value("swarm_round_period_seconds")


def test_local_steps_mode_reports_the_time_between_rounds() -> None:
    metrics, clock = NodeMetrics(), Clock()
    schedule = RoundSchedule(TrainingConfig(local_steps=2, round_period_s=5.0), metrics, clock=clock)
    assert period_metric(metrics) == schedule.reported_period_s == 0.0  # nothing measured, no period
    schedule.after_round(RoundOutcome(status=Status.COMMITTED, round=1))
    assert period_metric(metrics) == schedule.reported_period_s == 0.0
    for gap_s, status in ((0.6, Status.COMMITTED), (0.7, Status.NO_GROUP), (0.5, Status.COMMITTED)):
        clock.now += gap_s
        schedule.after_round(RoundOutcome(status=status, round=2))
        assert period_metric(metrics) == pytest.approx(gap_s)
        assert schedule.between_rounds_s == pytest.approx(gap_s)
        assert schedule.reported_period_s == period_metric(metrics)  # the summary's value too
    schedule.after_heartbeat([7.5])  # members' wanted periods do not pace rounds on steps
    assert period_metric(metrics) == schedule.reported_period_s == pytest.approx(0.5)


def test_period_mode_reports_the_period() -> None:
    metrics, clock = NodeMetrics(), Clock()
    schedule = RoundSchedule(TrainingConfig(round_period_s=5.0), metrics, clock=clock)
    assert period_metric(metrics) == schedule.reported_period_s == 5.0
    clock.now += 0.6
    schedule.after_round(RoundOutcome(status=Status.COMMITTED, round=1))
    schedule.after_heartbeat([7.5])
    assert period_metric(metrics) == schedule.period_s == schedule.reported_period_s == 7.5
    assert schedule.between_rounds_s is None
