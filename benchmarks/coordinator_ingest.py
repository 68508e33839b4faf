"""Benchmark: how many round reports the coordinator records per second, and its memory after an hour.

A real ``swarm-coordinator serve`` process (SQLite file in a temporary folder) and 100 simulated
nodes in client processes (grpc.aio, 50 nodes per process), each node with its own Ed25519 key,
signing every call as a node does (``coordinator.writes``: the coordinator verifies each signature)
and sending one report per call with a fresh round id, the way nodes report every round. All 100
come from 127.0.0.1, so the coordinator runs with its per-address and per-run rate limits raised
(their default, 50 and 2,000 writes/s, would refuse this load from one address by design):

1. paced: every node reports once per second for ``--paced-s`` seconds (the load of 100 real nodes
   with 1 s rounds): achieved rate and call latency;
2. saturation: every node reports as fast as its answers come back, for ``--saturate-s`` seconds:
   the sustained ingestion rate (target: at least 1,000 reports/s on 2 cores);
3. an hour's worth: 100 nodes x 3,600 reports (batches of 60, the way a node delivers what it kept
   while the coordinator was away), then the coordinator's resident memory (target: under 300 MB)
   and the database's size. Raw reports are kept one hour (``Retention``), then folded per minute,
   so this is the most raw data the coordinator ever holds at this load.

    python benchmarks/coordinator_ingest.py [--paced-s 30] [--saturate-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import machine, save, today

NODES = 100
PROCESSES = 2


def node_key(index: int):
    """Simulated node ``index``'s key (fixed, so that reruns pair)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(index.to_bytes(32, "big"))


def name_of(key) -> str:
    from swarm.identity import peer_id_of, public_key_protobuf
    from swarm.peer_names import peer_name

    return peer_name(peer_id_of(public_key_protobuf(key.public_key())))


def bench_run() -> str:
    """The run: "bench", created by node 0."""
    from swarm.dht.records import pinned_run_id
    from swarm.identity import peer_id_of, public_key_protobuf

    return pinned_run_id("bench", peer_id_of(public_key_protobuf(node_key(0).public_key())))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(
    address: str, first: int, count: int, mode: str, seconds: float, batch: int, per_node: int, out: mp.Queue
) -> None:
    import grpc

    from coordinator.writes import REPORTS, sign_write
    from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb
    from swarm.proto.swarm.coordinator.v1 import coordinator_pb2_grpc as pb_grpc

    run = bench_run()

    def signed(key, request) -> pb.SignedWrite:
        write = sign_write(key, run_id=run, family=REPORTS, body=request.SerializeToString())
        return pb.SignedWrite(
            run_id=write.run_id, peer_id=write.peer_id, header=write.header, signature=write.signature
        )

    async def node(stub, index: int, stop_at: float, latencies: list[float]) -> int:
        sent, rnd = 0, 0
        key = node_key(index)
        base = pb.ReportMetricsRequest(
            run_id=run,
            peer_id=name_of(key),
            device="cuda:0 simulated",
            metrics_url=f"10.0.{index // 250}.{index % 250}:9100",
        )
        next_t = time.monotonic()
        while time.monotonic() < stop_at:
            request = pb.ReportMetricsRequest()
            request.CopyFrom(base)
            now = time.time()
            for _ in range(batch):
                rnd += 1
                request.reports.append(
                    pb.RoundReport(
                        round=rnd,
                        global_step=rnd * 4,
                        loss=2.0,
                        samples=64,
                        samples_per_s=100.0,
                        sent_bytes=300_000,
                        received_bytes=300_000,
                        compression_ratio=160.0,
                        group_size=NODES,
                        time=now - 3500 + rnd % 3500 if mode == "hour" else now,
                        eval_loss=float("nan"),
                        status="committed",
                    )
                )
            started = time.monotonic()
            await stub.ReportMetrics(signed(key, request), timeout=30)
            latencies.append(time.monotonic() - started)
            sent += batch
            if mode == "paced":
                next_t += 1.0
                await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            if mode == "hour" and sent >= per_node:
                break
        return sent

    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.CoordinatorStub(channel)
            await channel.channel_ready()
            latencies: list[float] = []
            stop_at = time.monotonic() + seconds
            started = time.monotonic()
            counts = await asyncio.gather(*(node(stub, first + i, stop_at, latencies) for i in range(count)))
            out.put({"reports": sum(counts), "seconds": time.monotonic() - started, "latencies": latencies})

    asyncio.run(main())


def drive(address: str, mode: str, seconds: float, batch: int = 1, per_node: int = 3600) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    per = NODES // PROCESSES
    workers = [
        ctx.Process(target=client, args=(address, i * per, per, mode, seconds, batch, per_node, out))
        for i in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=seconds + 3600) for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for r in results for x in r["latencies"])
    reports = sum(r["reports"] for r in results)
    wall = max(r["seconds"] for r in results)
    return {
        "mode": mode,
        "reports": reports,
        "seconds": wall,
        "reports_per_s": reports / wall,
        "calls": len(latencies),
        "latency_p50_ms": 1e3 * statistics.median(latencies),
        "latency_p99_ms": 1e3 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paced-s", type=float, default=30)
    parser.add_argument("--saturate-s", type=float, default=30)
    parser.add_argument("--hour-reports", type=int, default=3600, help="reports per node in the hour phase")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-ingest-") as tmp:
        status = Path(tmp) / "status.json"
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "serve", "--db", f"{tmp}/coordinator.db", "--host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--status-file", str(status), "--log-level", "WARNING",
             "--run", bench_run(), "--rate-per-address", "1e6", "--rate-per-run", "1e6"],
        )  # fmt: skip
        try:
            while not status.exists():
                time.sleep(0.1)
            address = f"127.0.0.1:{json.loads(status.read_text())['grpc_port']}"
            phases = []
            for mode, seconds, batch in (
                ("paced", args.paced_s, 1),
                ("saturate", args.saturate_s, 1),
                ("hour", 14400.0, 60),
            ):
                cpu0 = cpu_s(coordinator.pid)
                phase = drive(address, mode, seconds, batch, args.hour_reports)
                phase["coordinator_cpu_s"] = cpu_s(coordinator.pid) - cpu0
                phase["coordinator_rss_mb"] = rss_mb(coordinator.pid)
                phases.append(phase)
                print(json.dumps(phase), flush=True)
            db = sum(p.stat().st_size for p in Path(tmp).glob("coordinator.db*"))
        finally:
            coordinator.terminate()
            coordinator.wait(timeout=60)
    import os

    record = {
        "benchmark": "coordinator_ingest",
        "date": today(),
        "machine": machine(),
        "cores": os.cpu_count(),
        "nodes": NODES,
        "client_processes": PROCESSES,
        "phases": phases,
        "database_bytes": db,
    }
    save(args.out, f"coordinator-ingest-{record['date']}", record, render(record))
    print(render(record))


def render(record: dict) -> str:
    lines = [
        f"# Coordinator ingestion ({record['date']})",
        "",
        f"Machine: {record['machine']} ({record['cores']} cores, shared by the coordinator and the"
        f" {record['client_processes']} client processes simulating {record['nodes']} nodes). Every call"
        " is signed by its node's Ed25519 key and verified by the coordinator.",
        "",
        "| phase | reports | seconds | reports/s | calls | p50 ms | p99 ms | coordinator CPU s | coordinator RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in record["phases"]:
        lines.append(
            f"| {p['mode']} | {p['reports']} | {p['seconds']:.1f} | {p['reports_per_s']:.0f} | {p['calls']} |"
            f" {p['latency_p50_ms']:.1f} | {p['latency_p99_ms']:.1f} | {p['coordinator_cpu_s']:.1f} |"
            f" {p['coordinator_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "paced: every node one report per second. saturate: every node as fast as answers come back"
        " (one report per call). hour: 100 nodes x 3,600 reports in batches of 60; RSS after it is the"
        " memory with a full hour of raw reports, the most the retention policy keeps at this load.",
        f"Database after all phases: {record['database_bytes'] / 1e6:.1f} MB.",
        "Targets: at least 1,000 reports/s sustained; under 300 MB resident.",
        "",
        "Reproduce: `python benchmarks/coordinator_ingest.py`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
