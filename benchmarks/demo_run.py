"""Benchmark: the main job, `swarm-node demo`, timed end to end, with the quality it reaches.

Runs `swarm-node demo --nodes N` (the README's command) in a fresh folder, then reads the nodes'
summaries: wall time, held-out eval loss of x' per node, rounds, bytes, and whether the x' digests
agree in every round two nodes shared. Writes benchmarks/results/demo_run-<date>.{json,md}.

    python benchmarks/demo_run.py [--nodes 3] [--steps 150]
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
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wall_s = time.monotonic() - started
        summaries = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("node*.summary.json"))]
    by_round: dict[int, set[str]] = {}
    for s in summaries:
        for entry in s["history"]:
            by_round.setdefault(entry["round"], set()).add(entry["digest"])
    record = {
        "benchmark": "demo_run",
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "command": f"swarm-node demo --nodes {args.nodes} --steps {args.steps}",
        "exit_code": result.returncode,
        "wall_s": round(wall_s, 1),
        "nodes": [
            {
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
        "rounds_with_disagreeing_digests": sorted(r for r, d in by_round.items() if len(d) > 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"demo_run-{record['date']}"
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
        f"Rounds seen: {record['rounds_seen']}; rounds whose x' digests disagree between nodes:"
        f" {record['rounds_with_disagreeing_digests'] or 'none'}.",
        "",
        "| node | steps | rounds | last round | eval loss | MB sent | aborted shards | repairs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, n in enumerate(record["nodes"]):
        lines.append(
            f"| {i} | {n['final_step']} | {n['rounds_completed']} | {n['round']} | {n['eval_loss']:.3f} |"
            f" {n['bytes_sent'] / 1e6:.1f} | {n['aborted_shards']} | {n['repairs']} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
