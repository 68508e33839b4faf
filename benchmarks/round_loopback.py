"""Benchmark: time, bytes and CPU of one averaging round, 2 and 4 real nodes on loopback, per codec.

Each setting starts N ``swarm-node join`` processes (one torch thread each) in deterministic mode
(one local step per round, the whole group required), lets them run R rounds, and reads their
summaries: bytes each node wrote per round (length prefixes included, at the stream layer), the
median round time (rendezvous to commit), the median transfer time (roster to last result), and the
median CPU time of each node's event loop thread per round (``loop_cpu_s``: its contribution, the
codec, the owners' reductions, applying the round and the protocol, plus the worker thread's hash
of x'; training has its own thread).
That CPU is what a round takes from a CPU node's training. Also the median time each node's training
stood still per round (``training_idle_s``: waiting for a round, applying it, preparing the next).

    python benchmarks/round_loopback.py [--model small] [--rounds 8] [--codecs fp32 fp16 cocktail]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.processes
from report import machine, save, today

from tests.processes import kill_groups, start_logged


def run_setting(nodes: int, codec: str, model: str, rounds: int, workdir: Path) -> dict:
    processes, summaries = [], []
    run_id = f"bench-{nodes}-{codec}-{os.getpid()}"
    base = [
        sys.executable,
        "-m",
        "node",
        "join",
        "--ephemeral",
        "--run-id",
        run_id,
        "--host-maddr",
        "/ip4/127.0.0.1/tcp/0",
        "--threads",
        "1",
        "--local-steps",
        "1",
        "--min-group",
        str(nodes),
        "--join-grace",
        "60",
        "--max-rounds",
        str(rounds),
        "--eval-every",
        "100000",
        "--batch-size",
        "4",
        "--seq-len",
        "64",
    ]
    try:
        for index in range(nodes):
            status = workdir / f"{run_id}-{index}.status.json"
            summary = workdir / f"{run_id}-{index}.summary.json"
            summaries.append(summary)
            command = [*base, "--status-file", str(status), "--summary-json", str(summary)]
            if index == 0:
                command += ["--model", model, "--codec", codec]
            else:
                first = workdir / f"{run_id}-0.status.json"
                deadline = time.monotonic() + 180
                while not first.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                command += ["--peer", json.loads(first.read_text())["maddrs"][0]]
            processes.append(start_logged(command, workdir / f"{run_id}-{index}.log"))
        for process in processes:
            if process.wait(timeout=900) != 0:
                raise RuntimeError(f"a node failed; see logs in {workdir}")
    finally:
        kill_groups(processes)
    data = [json.loads(path.read_text()) for path in summaries]
    full = [[h for h in d["history"] if h["group_size"] == nodes] for d in data]
    durations = [h["duration_s"] for history in full for h in history[1:]]
    transfers = [h["transfer_s"] for history in full for h in history[1:]]
    loop_cpu = [h["loop_cpu_s"] for history in full for h in history[2:] if "loop_cpu_s" in h]
    bytes_per_round = [d["bytes_sent"] / max(1, len(h)) for d, h in zip(data, full, strict=True)]
    idle = [d["training_idle_s"] / max(1, d["rounds_completed"]) for d in data if "training_idle_s" in d]
    return {
        "nodes": nodes,
        "codec": codec,
        "rounds_with_full_group": min(len(h) for h in full),
        "median_round_s": statistics.median(durations),
        "median_transfer_s": statistics.median(transfers),
        "median_loop_cpu_s": statistics.median(loop_cpu) if loop_cpu else None,
        "median_training_idle_s": statistics.median(idle) if idle else None,
        "sent_bytes_per_node_per_round": statistics.median(bytes_per_round),
        "digests_agree": all(
            len({d["history"][i]["digest"] for d in data}) == 1
            for i in range(min(len(d["history"]) for d in data))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="small")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--codecs", nargs="+", default=["fp32", "fp16", "cocktail"])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--name", default="round_loopback", help="result file name before the date")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        for nodes in args.nodes:
            for codec in args.codecs:
                result = run_setting(nodes, codec, args.model, args.rounds, Path(tmp))
                print(json.dumps(result), flush=True)
                results.append(result)
    import torch

    from swarm.models import build_model, resolve_model

    parameters = sum(p.numel() for p in build_model(resolve_model(args.model), seed=0).parameters())
    record = {
        "benchmark": "round_loopback",
        "date": today(),
        "machine": machine(),
        "torch": torch.__version__,
        "model": args.model,
        "parameters": parameters,
        "fp32_bytes_of_model": 4 * parameters,
        "rounds": args.rounds,
        "codecs": args.codecs,
        "nodes": args.nodes,
        "results": results,
    }
    save(args.out, f"{args.name}-{record['date']}", record, render(record))
    print(render(record))


def render(record: dict) -> str:
    """The Markdown report of one run (also used to re-render a saved JSON file)."""
    parameters = record["parameters"]
    lines = [
        f"# Round time, bytes and CPU on loopback ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}; model `{record['model']}` ({parameters:,}"
        f" parameters, {4 * parameters / 1e6:.1f} MB in fp32); {record['rounds']} rounds per setting, one local"
        " step per round, one torch thread per node; bytes are what each node wrote to its streams per round.",
        "",
        "| nodes | codec | median round s | median transfer s | loop CPU s per round | training idle s per round"
        " | MB sent per node per round | predicted MB | x' digests agree |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        width = {"fp32": 4, "fp16": 2}.get(r["codec"])
        predicted = f"{2 * (r['nodes'] - 1) / r['nodes'] * width * parameters / 1e6:.2f}" if width else "-"
        cpu, idle = r.get("median_loop_cpu_s"), r.get("median_training_idle_s")
        lines.append(
            f"| {r['nodes']} | {r['codec']} | {r['median_round_s']:.2f} | {r['median_transfer_s']:.2f} |"
            f" {'-' if cpu is None else f'{cpu:.3f}'} | {'-' if idle is None else f'{idle:.3f}'} |"
            f" {r['sent_bytes_per_node_per_round'] / 1e6:.2f} |"
            f" {predicted} | {r['digests_agree']} |"
        )
    lines += [
        "",
        "Predicted (exact codecs): parts to the owners plus results back, 2 x (N-1)/N copies of the vector",
        "per node per round. The measured figures add frame headers and, for joiners, their one-time download",
        "of x' spread over the rounds. Round time includes the conductor's 0.5 s gather window and a DHT read;",
        "the transfer is the time from the roster to the last result. Loop CPU: the median over nodes and",
        "rounds (the first two skipped) of the CPU time of a node's event loop thread per round (and of the",
        "worker thread that hashes x'). Training idle: the median over nodes of the wall time a node's training",
        "thread stood still between rounds (waiting for a round, applying it, preparing the next), per round.",
        "",
        f"Reproduce: `python benchmarks/round_loopback.py --model {record['model']} --rounds {record['rounds']}"
        f" --codecs {' '.join(record.get('codecs', ['fp32', 'fp16']))}"
        f" --nodes {' '.join(str(n) for n in record.get('nodes', [2, 4]))}`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
