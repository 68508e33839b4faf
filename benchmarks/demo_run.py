"""Benchmark: the main job, `swarm-node demo`, timed end to end, with the quality it reaches.

Runs `swarm-node demo --nodes N` (the README's command) in a fresh folder, then reads the nodes'
summaries: wall time, held-out eval loss of x' per node, rounds, bytes, and whether the x' digests
agree in every round two nodes shared. Writes benchmarks/results/<name>-<date>.{json,md}.

    python benchmarks/demo_run.py [--nodes 3] [--steps 150] [--repeats 1] [--no-overlap]
    python benchmarks/demo_run.py --nodes 2 --devices cuda,cpu --codec cocktail --until-round 30 \
        --no-coordinator --name demo_run_mixed

The second is the mixed CPU/GPU pair of issue 3, on a machine with a GPU: a GPU member and a CPU
member in one swarm, real processes, whose x' must stay bit-identical in every round they share.
With --repeats, the demo runs that many times in a row (each in a fresh folder, with fresh peer ids
and so another data order): the spread of one setting, to compare two (e.g. --overlap against
--no-overlap) by more than one run each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import machine, save, today


def _command(args: argparse.Namespace, workdir: str) -> list[str]:
    command = [sys.executable, "-m", "node", "demo", "--nodes", str(args.nodes), "--steps", str(args.steps),
               "--workdir", workdir, "--model", args.model, "--codec", args.codec,
               "--round-period", str(args.round_period)]  # fmt: skip
    if args.devices:
        command += ["--devices", args.devices]
    if args.until_round is not None:
        command += ["--until-round", str(args.until_round)]
    if not args.coordinator:
        command.append("--no-coordinator")
    if not args.overlap:
        command.append("--no-overlap")
    return command


def _run_once(args: argparse.Namespace) -> tuple[dict[str, Any], subprocess.CompletedProcess[str], str]:
    """One demo in a fresh folder: its record, the finished process, and the command as a user types it."""
    with tempfile.TemporaryDirectory(prefix="swarm-demo-bench-") as tmp:
        started = time.monotonic()
        command = _command(args, tmp)
        result = subprocess.run(command, capture_output=True, text=True)
        wall_s = time.monotonic() - started
        summaries = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("node*.summary.json"))]
    shown = " ".join(["swarm-node", *(a for a in command[3:] if a not in ("--workdir", tmp))])
    by_round: dict[int, set[str]] = {}
    reports: dict[int, int] = {}  # round -> nodes that committed it (so: compared digests)
    for s in summaries:
        for entry in s["history"]:
            by_round.setdefault(entry["round"], set()).add(entry["digest"])
            reports[entry["round"]] = reports.get(entry["round"], 0) + 1
    run = {
        "exit_code": result.returncode,
        "wall_s": round(wall_s, 1),
        "nodes": [
            {
                "device": s["device"],
                "final_step": s["final_step"],
                "rounds_completed": s["rounds_completed"],
                "round": s["round"],
                "eval_loss": s["eval_loss"],
                "bytes_sent": s["bytes_sent"],
                "aborted_shards": s["aborted_shards"],
                "repairs": s["repairs"],
            }
            for s in summaries
        ],
        "rounds_seen": len(by_round),
        "rounds_compared": sum(1 for n in reports.values() if n > 1),
        "rounds_with_disagreeing_digests": sorted(r for r, d in by_round.items() if len(d) > 1),
    }
    return run, result, shown


def _eval_range(run: dict[str, Any]) -> tuple[float, float]:
    losses = [n["eval_loss"] for n in run["nodes"]]
    return (min(losses), max(losses)) if losses else (float("nan"), float("nan"))


def _report(record: dict[str, Any]) -> list[str]:
    runs = record["runs"]
    lines = [
        f"# `{record['command']}` ({record['date']})",
        "",
        f"Machine: {record['machine']}. {len(runs)} run(s) in a row, each in a fresh folder; wall time counts"
        " the start-up of every process.",
        "",
    ]
    if len(runs) > 1:
        best = [_eval_range(r)[0] for r in runs]
        lines += [
            f"Best node's held-out eval loss of x' per run: mean {statistics.mean(best):.3f},"
            f" spread {min(best):.3f} to {max(best):.3f}; wall time mean"
            f" {statistics.mean(r['wall_s'] for r in runs):.1f} s; exit codes {[r['exit_code'] for r in runs]}.",
            "",
            "| run | exit | wall s | eval loss of x' (nodes) | rounds compared | digests disagree in |",
            "|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(runs):
            low, high = _eval_range(r)
            lines.append(
                f"| {i} | {r['exit_code']} | {r['wall_s']} | {low:.3f} to {high:.3f} | {r['rounds_compared']} |"
                f" {r['rounds_with_disagreeing_digests'] or 'none'} |"
            )
        lines.append("")
    for i, r in enumerate(runs):
        low, high = _eval_range(r)
        lines += [
            *([f"## Run {i}", ""] if len(runs) > 1 else []),
            f"Exit code {r['exit_code']}, wall time {r['wall_s']} s.",
            "",
            f"Held-out eval loss of x' at exit: {low:.3f} to {high:.3f} nats/byte across nodes (untrained: 5.545).",
            f"Rounds seen: {r['rounds_seen']}, of them committed by two nodes or more (digests compared):"
            f" {r['rounds_compared']}; rounds whose x' digests disagree between nodes:"
            f" {r['rounds_with_disagreeing_digests'] or 'none'}.",
            "",
            "| node | device | steps | rounds | last round | eval loss | MB sent | aborted shards | repairs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for j, n in enumerate(r["nodes"]):
            lines.append(
                f"| {j} | {n['device']} | {n['final_step']} | {n['rounds_completed']} | {n['round']} |"
                f" {n['eval_loss']:.3f} | {n['bytes_sent'] / 1e6:.1f} | {n['aborted_shards']} | {n['repairs']} |"
            )
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--codec", default="fp32")
    parser.add_argument("--devices", default="", help="each node's --device in turn, e.g. cuda,cpu")
    parser.add_argument("--round-period", type=float, default=4.0)
    parser.add_argument("--until-round", type=int, default=None, help="stop at this round instead of --steps")
    parser.add_argument("--coordinator", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--repeats", type=int, default=1, help="run the demo this many times in a row")
    parser.add_argument("--name", default="demo_run", help="result file name before the date")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    runs, failed, shown = [], None, ""
    for i in range(args.repeats):
        run, result, shown = _run_once(args)
        runs.append(run)
        low, _ = _eval_range(run)
        print(
            f"run {i + 1}/{args.repeats}: exit {run['exit_code']}, {run['wall_s']} s, eval {low:.3f}",
            flush=True,
        )
        if result.returncode != 0 and failed is None:
            failed = result
    record = {
        "benchmark": "demo_run",
        "date": today(),
        "machine": machine(),
        "command": shown,
        "repeats": args.repeats,
        "runs": runs,
    }
    markdown = "\n".join(_report(record))
    save(args.out, f"{args.name}-{record['date']}", record, markdown)
    print(markdown)
    if failed is not None:
        print(failed.stdout[-3000:], failed.stderr[-3000:], file=sys.stderr)
        raise SystemExit(failed.returncode)


if __name__ == "__main__":
    main()
