"""Benchmark: bytes per node per round, cocktail codec vs fp32, for groups of 2, 4 and 8 nodes.

Every node runs ``swarm-node join`` in its own network namespace (benchmarks/netlab.py), in
deterministic mode (one local step per round, the whole group in every round). Once every node has
caught up (round >= WARM), the benchmark snapshots each node's counters, lets ``--rounds`` more
rounds pass, and snapshots again. Three layers are reported per node per round:

- socket: TCP payload bytes (``ss`` bytes_acked and bytes_received over the node's sockets);
- link: bytes on the node's veth (IP packets, headers and ACKs included);
- stream: what the averager itself counted (frames on rendezvous and shard streams, summary JSON).

Socket and link windows include everything the node does meanwhile (DHT heartbeats, pings).

    sudo python benchmarks/traffic.py [--model small] [--groups 2 4 8] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from netlab import NetLab, socket_delta
from report import first_maddr, machine, save, today

WARM = 3
"""Rounds before the window opens: the joiners' one-time download of x' stays outside it."""


def _status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_rounds(statuses: list[Path], target: int, processes: list, timeout_s: float) -> int:
    """Poll until every node's x' is at round ``target``; returns the lowest round seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rounds = [(_status(p) or {}).get("round", -1) for p in statuses]
        if min(rounds) >= target:
            return min(rounds)
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a node exited early")
        time.sleep(0.05)
    raise TimeoutError(f"nodes did not reach round {target} in {timeout_s} s")


def run_setting(nodes: int, codec: str, model: str, rounds: int, workdir: Path) -> dict:
    run_id = f"traffic-{nodes}-{codec}"
    total_rounds = WARM + rounds + 3
    with NetLab(nodes, tag="swtr") as lab:
        statuses = [workdir / f"{run_id}-{i}.status.json" for i in range(nodes)]
        summaries = [workdir / f"{run_id}-{i}.summary.json" for i in range(nodes)]
        processes = []
        for i in range(nodes):
            command = [
                sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", run_id,
                "--host-maddr", f"/ip4/{lab.address(i)}/tcp/0",
                "--threads", "1", "--local-steps", "1", "--min-group", str(nodes), "--join-grace", "120",
                "--join-timeout", "180", "--max-rounds", str(total_rounds), "--eval-every", "100000",
                "--status-file", str(statuses[i]), "--summary-json", str(summaries[i]),
            ]  # fmt: skip
            if i == 0:
                command += ["--model", model, "--codec", codec, "--batch-size", "2", "--seq-len", "64"]
            else:
                command += ["--peer", first_maddr(statuses[0], processes[0])]
            processes.append(lab.run(i, command, log=workdir / f"{run_id}-{i}.log"))
        _wait_rounds(statuses, WARM, processes, timeout_s=600)
        start_round = min(_status(p)["round"] for p in statuses)  # type: ignore[index]
        link0 = [lab.link_bytes(i) for i in range(nodes)]
        sock0 = [lab.socket_bytes(i) for i in range(nodes)]
        _wait_rounds(statuses, start_round + rounds, processes, timeout_s=1200)
        link1 = [lab.link_bytes(i) for i in range(nodes)]
        sock1 = [lab.socket_bytes(i) for i in range(nodes)]
        end_round = min(_status(p)["round"] for p in statuses)  # type: ignore[index]
        for process in processes:
            process.wait(timeout=600)
    window = end_round - start_round
    sock = [socket_delta(a, b) for a, b in zip(sock0, sock1, strict=True)]
    data = [json.loads(p.read_text()) for p in summaries]
    stream_sent = [
        statistics.mean(h["bytes_sent"] for h in d["history"] if start_round < h["round"] <= end_round)
        for d in data
    ]
    ratios = [h["compression_ratio"] for d in data for h in d["history"] if h["round"] > start_round]
    return {
        "nodes": nodes,
        "codec": codec,
        "window_rounds": window,
        "socket_sent_per_round": statistics.mean(s for s, _ in sock) / window,
        "socket_received_per_round": statistics.mean(r for _, r in sock) / window,
        "link_sent_per_round": statistics.mean(b[0] - a[0] for a, b in zip(link0, link1, strict=True))
        / window,
        "stream_sent_per_round": statistics.mean(stream_sent),
        "stream_compression_ratio": statistics.median(ratios),
        "digests_agree": all(
            len({h["digest"] for h in (d["history"][i] for d in data)}) == 1
            for i in range(min(len(d["history"]) for d in data))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="small")
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-traffic-") as tmp:
        for nodes in args.groups:
            for codec in ("fp32", "cocktail"):
                result = run_setting(nodes, codec, args.model, args.rounds, Path(tmp))
                print(json.dumps(result), flush=True)
                results.append(result)
    import torch

    from swarm.models import build_model, resolve_model

    parameters = sum(p.numel() for p in build_model(resolve_model(args.model), seed=0).parameters())
    record = {
        "benchmark": "traffic",
        "date": today(),
        "machine": machine(),
        "torch": torch.__version__,
        "model": args.model,
        "parameters": parameters,
        "rounds": args.rounds,
        "results": results,
    }
    save(args.out, f"traffic-{record['date']}", record, render(record))
    print(render(record))


def render(record: dict) -> str:
    by = {(r["nodes"], r["codec"]): r for r in record["results"]}
    lines = [
        f"# Bytes per node per round: cocktail vs fp32 ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}; model `{record['model']}`"
        f" ({record['parameters']:,} parameters); each node in its own network namespace (unshaped veth);"
        f" one local step per round; a window of about {record['rounds']} rounds after every node caught up.",
        "",
        "| nodes | codec | socket kB sent | socket kB received | link kB sent | stream kB sent | fp32/cocktail (socket sent) | digests agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        fp32 = by.get((r["nodes"], "fp32"))
        ratio = (
            f"1/{fp32['socket_sent_per_round'] / r['socket_sent_per_round']:.0f}"
            if fp32 and r["codec"] == "cocktail"
            else ""
        )
        lines.append(
            f"| {r['nodes']} | {r['codec']} | {r['socket_sent_per_round'] / 1e3:,.1f} |"
            f" {r['socket_received_per_round'] / 1e3:,.1f} | {r['link_sent_per_round'] / 1e3:,.1f} |"
            f" {r['stream_sent_per_round'] / 1e3:,.1f} | {ratio} | {r['digests_agree']} |"
        )
    lines += [
        "",
        "socket: TCP payload bytes the node's sockets sent (acked) and received, per round, everything",
        "included (rounds, DHT, pings); link: bytes on its veth; stream: the averager's own count.",
        "Target (issue 3): cocktail at most 1/117 of fp32 per node per round; the design estimates 1/175.",
        "",
        f"Reproduce: `sudo .venv/bin/python benchmarks/traffic.py --model {record['model']} --rounds {record['rounds']}`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
