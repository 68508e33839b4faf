"""Byzantine benchmark: 8 members of which one sends hostile parts, with and without robust
aggregation, against a clean run on the same task.

8 node processes on loopback train the default task (model ``tiny``) in deterministic mode: one
local step per round, ``--rounds`` committed rounds, the fp32 codec (the aggregation rule is what
is measured, not compression). The hostile member (node 7) runs with
``SWARM_FAULT=misbehave:<attack>,factor:<F>``: ``scale`` sends its part times F, ``random`` sends
Gaussian noise with F times its part's norm. Outlier exclusion is switched off
(``--outlier-factor 0``), so only the aggregation rule (``--aggregation mean`` or
``centered-clip``) stands between the attack and x'. Reported: held-out eval loss of x' (node 0)
at the end and along the run. Writes results/byzantine-<date>.{json,md,png}.

    python benchmarks/byzantine.py [--rounds 80] [--attacks scale random]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import first_maddr, machine, require_plotting, save, today

NODES = 8
HOSTILE = NODES - 1


def run_swarm(
    name: str, aggregation: str, attack: str | None, args: argparse.Namespace, workdir: Path
) -> dict:
    summaries = [workdir / f"{name}-{i}.summary.json" for i in range(NODES)]
    status0 = workdir / f"{name}-0.status.json"
    common = [
        sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", name, "--host-maddr", "/ip4/127.0.0.1/tcp/0",
        "--threads", "1", "--local-steps", "1", "--min-group", str(NODES), "--join-grace", "120",
        "--join-timeout", "240", "--until-round", str(args.rounds), "--eval-every", str(args.eval_every),
        "--aggregation", aggregation, "--outlier-factor", "0",
    ]  # fmt: skip
    processes: list[subprocess.Popen] = []
    try:
        for i in range(NODES):
            command = [*common, "--summary-json", str(summaries[i])]
            env = dict(os.environ)
            if i == 0:
                command += ["--status-file", str(status0), "--codec", "fp32", "--seed", str(args.seed)]
            else:
                command += ["--peer", first_maddr(status0, processes[0], timeout_s=300)]
            if i == HOSTILE and attack is not None:
                env["SWARM_FAULT"] = f"misbehave:{attack},factor:{args.factor[attack]}"
            with open(workdir / f"{name}-{i}.log", "w") as log:
                processes.append(
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                    )
                )
        # An attack that wrecks x' may stop honest nodes (their loss turns NaN): recorded, not raised.
        failed = [i for i, process in enumerate(processes) if process.wait(timeout=3600) != 0]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    if 0 in failed and not summaries[0].exists():
        raise RuntimeError(f"{name}: node 0 failed without a summary; see {workdir}/{name}-0.log")
    data = [json.loads(p.read_text()) for p in summaries if p.exists()]
    history = data[0]["history"]
    honest = [json.loads(summaries[i].read_text()) for i in range(HOSTILE) if summaries[i].exists()]
    rounds = min(len(s["history"]) for s in honest)
    identical = all(len({s["history"][i]["digest"] for s in honest}) == 1 for i in range(rounds))
    return {
        "failed_nodes": failed,
        "name": name,
        "aggregation": aggregation,
        "attack": attack,
        "factor": args.factor.get(attack) if attack else None,
        "final_eval_loss": data[0]["eval_loss"],
        "points": [(h["round"], h["eval_loss"]) for h in history if h.get("eval_loss") is not None],
        "honest_identical_x": identical,
        "rounds": len(history),
        "wall_s": max(s["duration_s"] for s in data),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--attacks", nargs="+", default=["scale", "random"], choices=["scale", "random"])
    parser.add_argument("--scale-factor", type=float, default=100.0, help="the scale attack's factor")
    parser.add_argument("--random-factor", type=float, default=10.0, help="the random attack's norm factor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    require_plotting()
    args.factor = {"scale": args.scale_factor, "random": args.random_factor}
    runs = [("clean", None)] + [(attack, attack) for attack in args.attacks]
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-byz-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for label, attack in runs:
            for aggregation in ("mean", "centered-clip"):
                name = f"byz-{label}-{aggregation}"
                result = run_swarm(name, aggregation, attack, args, workdir)
                print(json.dumps({k: v for k, v in result.items() if k != "points"}), flush=True)
                results.append(result)
    import torch

    record = {
        "benchmark": "byzantine",
        "date": today(),
        "machine": machine(),
        "torch": torch.__version__,
        "nodes": NODES,
        "rounds": args.rounds,
        "seed": args.seed,
        "results": results,
    }
    stem = f"byzantine-{record['date']}"
    folder = save(args.out, stem, record, render(record))
    plot(record, folder / f"{stem}.png")
    print(render(record))


def render(record: dict) -> str:
    clean = {r["aggregation"]: r["final_eval_loss"] for r in record["results"] if r["attack"] is None}
    lines = [
        f"# Byzantine benchmark ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}. {record['nodes']} nodes on loopback, model `tiny`,"
        f" fp32 codec, {record['rounds']} rounds of one local step, seed {record['seed']}; node {HOSTILE} hostile"
        " in the attack runs; outlier exclusion off (only the aggregation rule defends).",
        "",
        "| run | aggregation | attack | final eval loss | vs clean (mean) | honest x' identical |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        attack = "none" if r["attack"] is None else f"{r['attack']} x{r['factor']:g}"
        loss = r["final_eval_loss"]
        versus = (
            f"{100 * (loss / clean['mean'] - 1):+.1f}%" if clean.get("mean") and loss is not None else "-"
        )
        lines.append(
            f"| {r['name']} | {r['aggregation']} | {attack} | {'-' if loss is None else f'{loss:.3f}'} | {versus} | {r['honest_identical_x']} |"
            + (f" nodes {r['failed_nodes']} failed" if r["failed_nodes"] else "")
        )
    lines += [
        "",
        "scale: the hostile member sends its part times the factor; random: Gaussian noise with the factor",
        "times its part's norm. Target: with robust aggregation, final eval loss within 5% of the clean run.",
        "",
        f"Reproduce: `python benchmarks/byzantine.py --rounds {record['rounds']} --seed {record['seed']}`.",
    ]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in record["results"]:
        if r["points"]:
            style = "-" if r["aggregation"] == "mean" else "--"
            ax.plot(
                *zip(*r["points"], strict=True), style, label=f"{r['attack'] or 'clean'}, {r['aggregation']}"
            )
    ax.set_xlabel("round")
    ax.set_ylabel("held-out eval loss (nats/byte)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
