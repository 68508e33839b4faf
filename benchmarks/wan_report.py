"""What benchmarks/wan.py writes: its Markdown table (``render``), the repeats' summary, the plot of
eval loss against wall-clock time (``plot``), and the commit the record was made at."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_commit() -> str | None:
    """The checkout's commit (with ``+`` when it has uncommitted changes), for the record."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            check=True, cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def render(record: dict) -> str:
    lines = [
        f"# Training over shaped links: Swarm cocktail, Swarm fp32, hivemind stock ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}"
        + (f"; code at {record['code']}" if record.get("code") else "")
        + (
            f" (the included runs: {record['included']})"
            if record.get("included") and record["included"] != record.get("code")
            else ""
        )
        + f"; {record['peers']} peers, each in its own network"
        f" namespace; fine-tuning model `{record['model']}` from a checkpoint pretrained alone"
        + (
            f" for {record['pretrain_steps']} steps"
            if record["pretrain_steps"] is not None
            else f" (`{record.get('pretrained')}`)"
        )
        + f"; batch {record['batch_size']} x 128 bytes per peer step, peak lr {record['lr']} after"
        f" {record.get('warmup_steps', 50)} warm-up steps; {record['seconds']:.0f} s of training per run; links shaped with tbf at both ends"
        " (no added delay).",
        f"Target eval loss: {record['target_eval_loss']:.3f} ("
        + (
            "given"
            if record.get("target_given")
            else "what Swarm fp32 reaches on the unlimited link within 60% of its run"
        )
        + f"); Swarm's round period starts at {record.get('round_period_s', 2.0)} s; "
        + (
            f"each peer capped at {record['cpu_per_peer']:g} CPU cores."
            if record.get("cpu_per_peer")
            else "no CPU cap per peer."
        )
        if record["target_eval_loss"] is not None
        else "Target eval loss: none (no reference run).",
        "",
        "| link Mbit/s | method | samples/s | steady samples/s | rounds | averaged | median round s | period s | local steps/round | MB sent/peer/round | final eval | time to target s | peer 0's model: time to target s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        final = r["points"][-1]["eval_loss"] if r["points"] else float("nan")
        median = f"{r['median_round_s']:.2f}" if r["median_round_s"] is not None else "-"
        period = r["round_period_s"][0]
        target = r["time_to_target_s"]
        local = r.get("time_to_target_local_s")
        lines.append(
            f"| {r['rate_mbit'] or 'unlimited'} | {r['method']} | {r['samples_per_s']:.1f} |"
            f" {r['steady_samples_per_s']:.1f} | {r['rounds']} | {r.get('averaged', '-')} | {median} |"
            f" {period if period is not None else '-'} | {r['local_steps_per_round']} |"
            f" {r['socket_sent_per_peer_per_round'] / 1e6:.2f} | {final:.3f} |"
            f" {'not reached' if target is None else f'{target:.0f}'} |"
            f" {'-' if not r.get('local_points') else 'not reached' if local is None else f'{local:.0f}'} |"
        )
    if record.get("repeats", 1) > 1:
        lines += ["", *_repeat_summary(record)]
    lines += [
        "",
        "samples/s: sequences the whole swarm trained per second of the run, start-up and joiners'",
        "download of the model included (hivemind: epochs x target batch). steady: from the first to the",
        "last round with all peers (hivemind: first to last epoch). MB sent: TCP payload each peer's",
        "sockets sent per round (hivemind: per epoch). averaged: Swarm: rounds committed by all peers, of all",
        "rounds; hivemind: peer 0's epochs whose gradients were averaged with others, of all its epochs",
        "(the others fell back to its local gradients, so it trained alone; peer 0's own model is the",
        "one evaluated, where Swarm evaluates the shared x'). time to target: of the model each method",
        "publishes (Swarm: x'; hivemind: peer 0's); peer 0's model: Swarm's x_0 = x' plus what peer 0 has",
        "not sent yet, the same kind of model as hivemind's row.",
        "",
        f"Reproduce: `sudo .venv/bin/python benchmarks/wan.py --seconds {record['seconds']:.0f}"
        f" --model {record['model']} --batch-size {record['batch_size']} --lr {record['lr']}"
        f" --warmup-steps {record.get('warmup_steps', 50)} --round-period {record.get('round_period_s', 2.0)}"
        f" --cpu-per-peer {record.get('cpu_per_peer') or 0:g}"
        + (
            f" --pretrain-steps {record['pretrain_steps']}"
            if record["pretrain_steps"] is not None
            else " --pretrained DIR"
        )
        + (f" --target {record['target_eval_loss']}" if record.get("target_given") else "")
        + (f" --repeats {record['repeats']}" if record.get("repeats", 1) > 1 else "")
        + (f" --rates {' '.join(f'{r:g}' for r in record['rates'])}" if "rates" in record else "")
        + (f" --methods {' '.join(record['methods'])}" if "methods" in record else "")
        + "`.",
    ]
    return "\n".join(lines) + "\n"


def _repeat_summary(record: dict) -> list[str]:
    """Per link and method, every repeat's time to target and their median (not reached counts
    as slower than any time)."""

    def times(runs: list[dict], key: str) -> str:
        values = sorted((r.get(key) for r in runs), key=lambda t: float("inf") if t is None else t)
        shown = ", ".join("-" if t is None else f"{t:.0f}" for t in values)
        middle = values[(len(values) - 1) // 2]  # the lower median: an even count never invents a time
        return f"{shown} | {'not reached' if middle is None else f'{middle:.0f}'}"

    lines = [
        "Repeats (the methods took turns on the same link; times in s, sorted; median: the lower middle):",
        "",
        "| link Mbit/s | method | x': times to target | median | peer 0's model: times | median | samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["rate_mbit"], r["method"]) for r in record["results"])
    for rate, method in keys:
        runs = [r for r in record["results"] if (r["rate_mbit"], r["method"]) == (rate, method)]
        speed = ", ".join(f"{r['samples_per_s']:.1f}" for r in runs)
        lines.append(
            f"| {rate or 'unlimited'} | {method} | {times(runs, 'time_to_target_s')} |"
            f" {times(runs, 'time_to_target_local_s')} | {speed} |"
        )
    return lines


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({r["rate_mbit"] or 0 for r in record["results"]}, reverse=True)
    fig, axes = plt.subplots(1, len(rates), figsize=(4 * len(rates), 3.8), sharey=True, squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for r in record["results"]:
            if (r["rate_mbit"] or 0) == rate and r["points"]:
                label = r["method"] + (f" #{r.get('repeat', 0)}" if record.get("repeats", 1) > 1 else "")
                ax.plot([p["t"] for p in r["points"]], [p["eval_loss"] for p in r["points"]], label=label)
        if record["target_eval_loss"] is not None:
            ax.axhline(record["target_eval_loss"], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{rate:.0f} Mbit/s" if rate else "unlimited")
        ax.set_xlabel("wall-clock s")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out eval loss (nats/byte)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
