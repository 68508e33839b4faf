"""Benchmark: today's flat group in the protocol simulator (swarm.sim), N virtual members in virtual time.

Every member runs the real ``Averager`` (rendezvous, conductor, owners, transactional commit) over
an in-memory host with modelled links, a modelled DHT and a virtual clock; x' is a small real
vector, and bytes and codec CPU time are charged as for ``--model-params`` (issue 31, item 5).

Scenarios (``--scenario``):
- ``mix``: links drawn from 20 Mbit/s to 1 Gbit/s (tiers below), ``--relayed`` of members behind
  NAT (every stream to or from them through a relay, reset past its data limit);
- ``churn``: ``mix``, and each round ``--churn`` of the members are killed mid-round and as many
  fresh ones join (x' through the real state protocol);
- ``conductor``: ``mix``, and the conductor is killed in each phase in turn (when the first join
  reaches it, once it sends its first roster, when the first part flies, when the first receipt
  reaches it, once it sends its first commit), a fresh member joining in its place;
- ``calibrate``: the measured 2/4/8-node traffic (benchmarks/results/traffic-2026-11-28.json,
  model ``small``, 8,073,280 parameters, fp32 and cocktail, unshaped links) and the 4-peer WAN runs
  (wan-2026-11-29.json, symmetric links of 100/50/20 Mbit/s), simulated with the same sizes.

    python benchmarks/swarm_sim.py --members 16 50 --scenario mix --rounds 5
    python benchmarks/swarm_sim.py --scenario calibrate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from report import machine, save

from swarm.compression.registry import make_codec
from swarm.sim.codec import CodecCost, measure
from swarm.sim.inline import inline_hashing
from swarm.sim.loop import run_virtual
from swarm.sim.network import MBIT, LinkSpec
from swarm.sim.simulation import RoundReport, SimSettings, Simulation

DATE = "2026-12-08"
MACHINE_NOTE = "2 CPU cores shared with other work, no GPU"
TIERS_MBIT = (20, 50, 100, 300, 1000)
"""Download rates of the link mix, drawn with equal odds; uploads are a fifth of it below 300
Mbit/s (asymmetric residential lines), symmetric above (fibre, data centres)."""
SMALL_PARAMS = 8_073_280
"""Model ``small``: the size of the measured traffic and WAN runs."""
PHASES = ("join", "roster", "part", "receipt", "commit")


def link_mix(count: int, relayed: float, rng: random.Random) -> list[LinkSpec]:
    links = []
    for _ in range(count):
        down = rng.choice(TIERS_MBIT)
        up = down if down >= 300 else down / 5
        links.append(
            LinkSpec(
                up_bps=up * MBIT,
                down_bps=down * MBIT,
                latency_s=rng.uniform(0.005, 0.04),
                relayed=rng.random() < relayed,
            )
        )
    return links


def uniform(count: int, mbit: float | None) -> list[LinkSpec]:
    rate = (mbit or 10_000) * MBIT  # unshaped: a 10 Gbit/s veth, 0.1 ms away
    return [LinkSpec(up_bps=rate, down_bps=rate, latency_s=0.0001 if mbit is None else 0.001)] * count


def codec_cost(codec: str, model_params: int, real: int, shards: int) -> CodecCost:
    return measure(
        make_codec(codec), real_shard=real // shards, model_shard=model_params // shards, repeats=3
    )


def conductor_trigger(phase: str):
    """Kills the conductor at ``phase`` (see the module docstring); it learns who conducts from the
    first join or roster it sees."""
    seen: dict[str, bytes] = {}

    def trigger(src: bytes, dst: bytes, kind: str) -> bytes | None:
        if kind == "join":
            seen.setdefault("conductor", dst)
        elif kind == "roster":
            seen.setdefault("conductor", src)
        conductor = seen.get("conductor")
        if kind == phase:
            if phase in ("join", "receipt"):
                return dst
            if phase in ("roster", "commit"):
                return src
            return conductor
        return None

    return trigger


async def simulate(
    settings: SimSettings, rounds: int, *, churn: float = 0.0, phases: tuple[str, ...] = ()
) -> list[RoundReport]:
    sim = Simulation(settings)
    rng = random.Random(settings.seed + 1)
    reports: list[RoundReport] = []
    try:
        for link in settings.links:
            await sim.add_member(link)
        await asyncio.sleep(1.0)  # every first heartbeat is in
        for index in range(rounds):
            joins = 0
            if phases:
                sim.kill_when(conductor_trigger(phases[index % len(phases)]))
            victims = rng.sample(sorted(sim.members), round(churn * len(sim.members))) if churn else []
            for victim in victims:  # killed mid-round, at a random instant of its reduce
                sim.kill_when(lambda src, dst, kind, v=victim: v if kind == "part" and src == v else None)
            report = await sim.run_round(index)
            sim.kill_on.clear()
            for _ in report.killed:
                await sim.add_member(rng.choice(settings.links), joiner=True)
                joins += 1
            report.joins = joins
            reports.append(report)
            logging.getLogger("swarm_sim").info("%s", report)
    finally:
        await sim.shutdown()
    return reports


def run(settings: SimSettings, rounds: int, **faults) -> tuple[list[RoundReport], float]:
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    with inline_hashing():
        reports = run_virtual(simulate(settings, rounds, **faults))
    return reports, time.perf_counter() - started


def summary(reports: list[RoundReport], shards: int, skip: int = 1) -> dict:
    """Means over rounds after the first ``skip`` (the first round's transfer deadline is the floor)."""
    window = reports[skip:] or reports
    n = len(window)
    committed = [r for r in reports if r.statuses.get("COMMITTED")]
    return {
        "rounds": len(reports),
        "rounds_committed": len(committed),
        # Committed rounds that applied at least one shard (the others moved x' by nothing).
        "rounds_applying_shards": sum(1 for r in committed if r.aborted_shards < shards),
        "bytes_sent_per_member_round": sum(r.bytes_sent_mean for r in window) / n,
        "bytes_received_per_member_round": sum(r.bytes_received_mean for r in window) / n,
        "busiest_owner_bytes": max(r.busiest_owner_bytes for r in window),
        "conductor_bytes": max(r.conductor_bytes for r in window),
        "dht_bytes_per_replica_round": sum(r.dht_replica_bytes for r in window) / n,
        "largest_dht_value_bytes": max(r.dht_largest_value_bytes for r in reports),
        "round_s_median": sorted(r.round_s for r in window)[n // 2],
        "round_s_max": max(r.round_s for r in window),
        "aborted_shards": sum(r.aborted_shards for r in reports),
        "repairs": sum(r.repairs for r in reports),
        "joins": sum(r.joins for r in reports),
        "all_digests_equal_every_round": all(r.distinct_digests == 1 for r in reports),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| N | scenario | rounds committed (applying shards) | kB sent/member/round | kB recv/member/round | busiest owner kB |"
        " conductor kB | DHT kB/replica/round | largest DHT value kB | round s (median) | round s (max) |"
        " aborted shards | repairs | joins | digests equal | real s |\n|" + "---|" * 16 + "\n"
    )
    lines = []
    for r in rows:
        s = r["summary"]
        lines.append(
            f"| {r['members']} | {r['scenario']} | {s['rounds_committed']}/{s['rounds']}"
            f" ({s['rounds_applying_shards']}) |"
            f" {s['bytes_sent_per_member_round'] / 1e3:,.1f} | {s['bytes_received_per_member_round'] / 1e3:,.1f} |"
            f" {s['busiest_owner_bytes'] / 1e3:,.1f} | {s['conductor_bytes'] / 1e3:,.1f} |"
            f" {s['dht_bytes_per_replica_round'] / 1e3:,.1f} | {s['largest_dht_value_bytes'] / 1e3:,.1f} |"
            f" {s['round_s_median']:.2f} | {s['round_s_max']:.2f} | {s['aborted_shards']} | {s['repairs']} |"
            f" {s['joins']} | {s['all_digests_equal_every_round']} | {r['real_s']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def calibrate(real: int, shards: int, rounds: int) -> tuple[dict, str]:
    """The simulator against the measured traffic (2/4/8 nodes) and WAN (4 peers) runs of model ``small``."""
    results = Path(__file__).parent / "results"
    traffic = json.loads((results / "traffic-2026-11-28.json").read_text())["results"]
    wan = json.loads((results / "wan-2026-11-29.json").read_text())["results"]
    costs = {codec: codec_cost(codec, SMALL_PARAMS, real, shards) for codec in ("fp32", "cocktail")}
    rows, md = [], []
    md.append(
        "| nodes | codec | measured stream kB sent | simulated kB sent | sim/stream | measured socket kB sent |"
        " sim/socket |\n|---|---|---|---|---|---|---|"
    )
    for measured in traffic:
        settings = SimSettings(
            links=uniform(measured["nodes"], None), real_elements=real, model_elements=SMALL_PARAMS,
            codec=measured["codec"], cost=costs[measured["codec"]], num_shards=shards,
        )  # fmt: skip
        reports, _ = run(settings, rounds)
        sim_sent = summary(reports, shards)["bytes_sent_per_member_round"]
        row = {
            "nodes": measured["nodes"], "codec": measured["codec"], "simulated_sent": sim_sent,
            "stream_sent": measured["stream_sent_per_round"], "socket_sent": measured["socket_sent_per_round"],
        }  # fmt: skip
        rows.append(row)
        md.append(
            f"| {row['nodes']} | {row['codec']} | {row['stream_sent'] / 1e3:,.1f} | {sim_sent / 1e3:,.1f} |"
            f" {sim_sent / row['stream_sent']:.3f} | {row['socket_sent'] / 1e3:,.1f} |"
            f" {sim_sent / row['socket_sent']:.3f} |"
        )
    md.append(
        "\n| link Mbit/s | codec | measured median round s | simulated median round s | sim/measured |"
        " measured MB sent/peer/round | simulated MB sent |\n|---|---|---|---|---|---|---|"
    )
    wan_rows = []
    for measured in wan:
        if measured["method"] not in costs or measured["rate_mbit"] not in (100, 50, 20):
            continue
        settings = SimSettings(
            links=uniform(4, measured["rate_mbit"]), real_elements=real, model_elements=SMALL_PARAMS,
            codec=measured["method"], cost=costs[measured["method"]], num_shards=shards,
        )  # fmt: skip
        reports, _ = run(settings, rounds)
        # The transfer deadline starts at its floor and adapts over the first rounds (doubling after
        # a miss): the WAN runs' medians are over ~60 rounds, so the first third is left out here.
        window = reports[len(reports) // 3 :] or reports
        sim_s = sorted(r.duration_median_s for r in window)[len(window) // 2]
        sim_sent = summary(reports, shards)["bytes_sent_per_member_round"]
        wan_rows.append({"rate_mbit": measured["rate_mbit"], "codec": measured["method"], "simulated_round_s": sim_s,
                         "measured_round_s": measured["median_round_s"], "simulated_sent": sim_sent,
                         "measured_socket_sent": measured["socket_sent_per_peer_per_round"]})  # fmt: skip
        md.append(
            f"| {measured['rate_mbit']} | {measured['method']} | {measured['median_round_s']:.2f} | {sim_s:.2f} |"
            f" {sim_s / measured['median_round_s']:.2f} | {measured['socket_sent_per_peer_per_round'] / 1e6:.2f} |"
            f" {sim_sent / 1e6:.2f} |"
        )
    record = {"traffic": rows, "wan": wan_rows, "costs": {k: asdict(v) for k, v in costs.items()}}
    return record, "\n".join(md) + "\n"


def render(paths: list[str]) -> str:
    """One table of the rows of earlier runs' JSON files (summaries recomputed from their rounds)."""
    rows = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        reports = [RoundReport(**r) for r in record["rounds"]]
        rows.append({**record, "summary": summary(reports, record["shards"])})
    rows.sort(key=lambda r: (r["scenario"], r["members"]))
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, nargs="+", default=[16, 50])
    parser.add_argument("--scenario", choices=("mix", "churn", "conductor", "calibrate"), default="mix")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-params", type=int, default=100_000_000)
    parser.add_argument("--codec", default="cocktail")
    parser.add_argument("--real-elements", type=int, default=16 * 1024)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--relayed", type=float, default=0.4, help="Fraction of members behind NAT.")
    parser.add_argument(
        "--uniform-mbit",
        type=float,
        default=None,
        help="Every link this rate both ways, none relayed (not the mix).",
    )
    parser.add_argument("--churn", type=float, default=0.05, help="Fraction of members replaced per round.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tag", default="")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--render", nargs="+", metavar="JSON", help="Print one table of earlier runs' JSON files."
    )
    args = parser.parse_args()
    if args.render:
        print(render(args.render))
        return
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    logging.getLogger("swarm").setLevel(logging.ERROR)
    header = (
        f"Machine: {machine()} ({MACHINE_NOTE}); torch {torch.__version__}. Virtual time; real x' of"
        f" {args.real_elements} elements in {args.shards} shards"
    )
    if args.scenario == "calibrate":
        record, md = calibrate(args.real_elements, args.shards, args.rounds)
        record.update({"benchmark": "swarm_sim", "scenario": "calibrate", "date": DATE, "machine": machine()})
        title = f"# Simulator calibration against the measured 2/4/8-node traffic and 4-peer WAN runs ({DATE})\n\n"
        save(
            args.out,
            f"swarm_sim-calibrate{args.tag}-{DATE}",
            record,
            title + header + ", model small.\n\n" + md,
        )
        print(md)
        return
    cost = codec_cost(args.codec, args.model_params, args.real_elements, args.shards)
    for n in args.members:
        if args.uniform_mbit:
            links = uniform(n, args.uniform_mbit)
        else:
            links = link_mix(n, args.relayed, random.Random(args.seed))
        settings = SimSettings(
            links=links, real_elements=args.real_elements, model_elements=args.model_params, codec=args.codec,
            cost=cost, num_shards=args.shards, seed=args.seed,
        )  # fmt: skip
        faults: dict = {}
        if args.scenario == "churn":
            faults["churn"] = args.churn
        if args.scenario == "conductor":
            faults["phases"] = PHASES
        reports, real_s = run(settings, args.rounds, **faults)
        links_note = (
            f"every link {args.uniform_mbit:g} Mbit/s both ways, 1 ms, none relayed"
            if args.uniform_mbit
            else f"links {'/'.join(map(str, TIERS_MBIT))} Mbit/s down (uploads a fifth below 300),"
            f" {args.relayed:.0%} relayed"
        )
        scenario = args.scenario + (
            f"-uniform{args.uniform_mbit:g}" if args.uniform_mbit else f"-relayed{round(100 * args.relayed)}"
        )
        row = {"members": n, "scenario": scenario, "summary": summary(reports, args.shards), "real_s": real_s}
        record = {
            "benchmark": "swarm_sim", "date": DATE, "machine": machine(), "note": MACHINE_NOTE, **row,
            "model_params": args.model_params, "codec": args.codec, "shards": args.shards,
            "relayed": args.relayed, "churn": args.churn if args.scenario == "churn" else 0.0,
            "links_mbit": [[link.down_bps / MBIT, link.up_bps / MBIT, link.relayed] for link in links],
            "cost": asdict(cost), "rounds": [asdict(r) for r in reports],
        }  # fmt: skip
        md = (
            f"# Protocol simulator: today's flat group, N = {n}, scenario {scenario} ({DATE})\n\n"
            f"{header}; charged as a {args.model_params:,}-parameter model, codec {args.codec}; {links_note};"
            f" {args.rounds} rounds.\n\n" + table([row])
        )
        save(args.out, f"swarm_sim-{scenario}-n{n}{args.tag}-{DATE}", record, md)
        print(table([row]), flush=True)


if __name__ == "__main__":
    main()
