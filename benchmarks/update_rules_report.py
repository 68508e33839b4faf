"""The figures of ``update_rules.py``: progress against the fast member alone, the table, the plot.

Progress is measured on wall time, never on rounds. For a rule whose x' has eval loss L at wall
time t, the fast member alone reached L at t_ref(L) (the first time its best loss so far is at or
below L, linear between evaluations): the rule's progress is t_ref(L) / t, 1.0 when it is exactly
as fast as the fast member alone. It is given at the end of the run and as the median over the
run's second half. The time to a target is the same ratio for two fixed losses: those the fast member
alone reached at half the run's length and at its end (t_ref(target) / t_rule(target)).
"""

from __future__ import annotations

import statistics
from pathlib import Path

Points = list[tuple[float, float]]
"""(wall time in rounds, eval loss of x')."""


def time_to(points: Points, loss: float) -> float | None:
    """The first wall time the best loss so far reaches ``loss``; None if it never does."""
    best_before = float("inf")
    previous: tuple[float, float] | None = None
    for t, value in points:
        best = min(best_before, value)
        if best <= loss:
            if previous is None or previous[1] <= loss:
                return t
            t0, l0 = previous
            return t0 + (t - t0) * (l0 - loss) / (l0 - best)
        best_before, previous = best, (t, best)
    return None


def progress_at(points: Points, reference: Points, index: int) -> float | None:
    """t_ref(L) / t for the rule's evaluation ``index``; None where the reference never got that low."""
    t, loss = points[index]
    t_ref = time_to(reference, loss)
    return None if t_ref is None else t_ref / t


def summarise(result: dict, rounds: int) -> None:
    """Add each run's progress figures (and the scenario's targets) to ``result`` in place."""
    reference = [tuple(p) for p in result["reference"]["points"]]
    best_at = {t: min(loss for s, loss in reference if s <= t) for t, _ in reference}
    targets = [best_at[float(rounds // 2)], best_at[float(rounds)]]
    result["targets"] = [round(target, 4) for target in targets]
    for run in [result["reference"], *result["runs"]]:
        points = [tuple(p) for p in run["points"]]
        end = progress_at(points, reference, len(points) - 1)
        halves = [progress_at(points, reference, i) for i in range(len(points)) if points[i][0] >= rounds / 2]
        known = [p for p in halves if p is not None]
        run["progress_end"] = None if end is None else round(end, 3)
        run["progress_median"] = round(statistics.median(known), 3) if len(known) == len(halves) else None
        run["target_ratios"] = []
        for target in targets:
            t_rule, t_ref = time_to(points, target), time_to(reference, target)
            run["target_ratios"].append(None if t_rule is None or t_ref is None else round(t_ref / t_rule, 3))


def _figure(value: float | None, beyond: str) -> str:
    return beyond if value is None else f"{value:.2f}x"


def render(record: dict) -> str:
    model, o, c = record["model"], record["optimiser"], record["cocktail"]
    rounds = record["rounds"]
    lines = [
        f"# Update rules for unequal members ({record['date']})",
        "",
        f"Machine: {record['machine']} (2 cores shared with other work, no GPU); torch {record['torch']},"
        f" {record['threads']} thread. Whole run {record['wall_s']:.0f} s. Seed {record['seed']}.",
        "",
        f"Single-process simulation of the update rules (`benchmarks/update_rules.py`): a byte-level"
        f" MLP language model ({model['parameters']} parameters, {model['context']} bytes of context) on the"
        f" embedded stdlib corpus, {model['batch_windows']} windows per local step, torch AdamW (peak lr"
        f" {o['peak_lr']:g}, {o['warmup_steps']} warm-up and {o['total_steps']} total global steps, weight"
        f" decay {o['weight_decay']:g}, each member's own ramp over {o['joiner_warmup']} steps). A round is one"
        f" unit of wall time; {rounds} rounds per rule, the fast member alone {record['reference_rounds']}."
        f" Codecs: fp32, and cocktail (p={c['sparsity']:g}, r={c['topk']:g}, q={c['bits']}) with the members'"
        f" residuals and the owners' error feedback, the first {record['warmup_rounds']} rounds exact;"
        f" {record['num_shards']} shard(s).",
        "",
        "Progress: how long the fast member alone took to reach the eval loss of a rule's x', over the"
        " rule's wall time (1.00x: as fast as the fast member alone). At the end of the run, and the median"
        " over its second half. Targets: the eval loss the fast member alone had at half the run and at"
        " its end; the ratio is its time to the target over the rule's (`not reached` within the run).",
    ]
    for scenario in record["scenarios"]:
        half, end = scenario["targets"]
        lines += [
            "",
            f"## {scenario['name']}: {scenario['description']}",
            "",
            f"| rule | codec | eval loss at t={rounds} | progress at end | progress (median, 2nd half)"
            f" | to {half:.3f} | to {end:.3f} | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        beyond = f"> {record['reference_rounds'] / rounds:.0f}x"
        for run in [scenario["reference"], *scenario["runs"]]:
            loss = dict(run["points"]).get(float(rounds))
            ratios = [_figure(r, "not reached") for r in run["target_ratios"]]
            lines.append(
                f"| {run['rule']} | {run['codec']} | {loss:.3f} | {_figure(run['progress_end'], beyond)}"
                f" | {_figure(run['progress_median'], beyond)} | {ratios[0]} | {ratios[1]} | {run['seconds']:.0f} |"
            )
    lines += ["", f"Reproduce: `python benchmarks/update_rules.py {' '.join(record['argv'])}`."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    """Eval loss of x' against wall time, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = record["scenarios"]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
    colours = {"uniform": "tab:red", "fednova": "tab:orange", "fednova-max": "tab:green", "drop-slow": "tab:blue",
               "fednova-max*1.5": "tab:olive", "fednova-work": "tab:brown", "fednova-max*2": "tab:purple",
               "drop-slow*2": "tab:cyan"}  # fmt: skip
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        ref = [p for p in scenario["reference"]["points"] if p[0] <= record["rounds"]]
        ax.plot(*zip(*ref, strict=True), color="black", linewidth=2, label="fast alone")
        for run in scenario["runs"]:
            style = "-" if run["codec"] == "fp32" else "--"
            ax.plot(*zip(*run["points"], strict=True), style, color=colours.get(run["rule"]),
                    label=f"{run['rule']}, {run['codec']}")  # fmt: skip
        ax.set_title(scenario["name"])
        ax.set_xlabel("wall time (rounds)")
        ax.set_ylabel("held-out eval loss of x' (nats/byte)")
        lowest = min(loss for run in [scenario["reference"], *scenario["runs"]] for _, loss in run["points"])
        ax.set_ylim(lowest - 0.1, 4.0)  # a run that diverged leaves the panel
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
