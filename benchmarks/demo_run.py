"""Benchmark: the main job, `swarm-node demo`, timed end to end, with the quality it reaches.

Runs `swarm-node demo --nodes N` (the README's command) in a fresh folder, then reads the nodes'
summaries: wall time, held-out eval loss of x' per node, rounds, bytes, and whether the x' digests
agree in every round two nodes shared. Writes benchmarks/results/demo_run-<date>.{json,md}.

    python benchmarks/demo_run.py [--nodes 3] [--steps 150]
    python benchmarks/demo_run.py --nodes 2 --devices cuda,cpu --codec cocktail --until-round 30 \
        --no-coordinator --name demo_run_mixed

The second is the mixed CPU/GPU pair of issue 3, on a machine with a GPU: a GPU member and a CPU
member in one swarm, real processes, whose x' must stay bit-identical in every round they share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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
    parser.add_argument("--name", default="demo_run", help="result file name before the date")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-demo-bench-") as tmp:
        started = time.monotonic()
        command = [
            sys.executable,
            "-m",
            "node",
            "demo",
            "--nodes",
            str(args.nodes),
            "--steps",
            str(args.steps),
            "--workdir",
            tmp,
            "--model",
            args.model,
            "--codec",
            args.codec,
            "--round-period",
            str(args.round_period),
        ]
        if args.devices:
            command += ["--devices", args.devices]
        if args.until_round is not None:
            command += ["--until-round", str(args.until_round)]
        if not args.coordinator:
            command.append("--no-coordinator")
        result = subprocess.run(command, capture_output=True, text=True)
        wall_s = time.monotonic() - started
        summaries = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("node*.summary.json"))]
    by_round: dict[int, set[str]] = {}
    reports: dict[int, int] = {}  # round -> nodes that committed it (so: compared digests)
    for s in summaries:
        for entry in s["history"]:
            by_round.setdefault(entry["round"], set()).add(entry["digest"])
            reports[entry["round"]] = reports.get(entry["round"], 0) + 1
    record = {
        "benchmark": "demo_run",
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "command": " ".join(["swarm-node", *(a for a in command[3:] if a not in ("--workdir", tmp))]),
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.name}-{record['date']}"
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    best = min(n["eval_loss"] for n in record["nodes"]) if record["nodes"] else float("nan")
    worst = max(n["eval_loss"] for n in record["nodes"]) if record["nodes"] else float("nan")
    lines = [
        f"# `{record['command']}` ({record['date']})",
        "",
        f"Machine: {record['machine']}. Exit code {record['exit_code']}, wall time {record['wall_s']} s"
        f" (start-up of every process included).",
        "",
        f"Held-out eval loss of x' at exit: {best:.3f} to {worst:.3f} nats/byte across nodes (untrained: 5.545).",
        f"Rounds seen: {record['rounds_seen']}, of them committed by two nodes or more (digests compared):"
        f" {record['rounds_compared']}; rounds whose x' digests disagree between nodes:"
        f" {record['rounds_with_disagreeing_digests'] or 'none'}.",
        "",
        "| node | device | steps | rounds | last round | eval loss | MB sent | aborted shards | repairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, n in enumerate(record["nodes"]):
        lines.append(
            f"| {i} | {n['device']} | {n['final_step']} | {n['rounds_completed']} | {n['round']} | {n['eval_loss']:.3f} |"
            f" {n['bytes_sent'] / 1e6:.1f} | {n['aborted_shards']} | {n['repairs']} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
