"""Churn soak: 8 nodes on loopback, a chaos loop that SIGKILLs a random node's whole process group
every 20-40 s and restarts it, and one SIGKILL + restart of the coordinator, for ``--minutes``.

The swarm trains the default task (model ``tiny``) with the cocktail codec in wall-clock rounds and
reports to a coordinator. Nodes 0-2 are never killed (the long-lived ones whose memory is watched);
the chaos loop picks among nodes 3-7 and restarts a killed node with the same identity after a pause,
joining through a live node (it catches up from a checkpoint and the round journal).
Every second the harness reads each node's status file (round, digest of x', eval loss) and the
resident memory of its process group (the node and its p2pd).

Reported: rounds the swarm completed, the longest stall (the longest time the swarm's highest
round did not advance), rounds in which live nodes reported different digests at the same round
(and whether any remained at the end, when every node is stopped at one common round), eval loss in
the first and last quarter, survivor crashes (a node the chaos loop did not kill that exited), and
the growth of the long-lived nodes' memory over the second half. Writes results/soak-<date>.{json,md,png}.

    python benchmarks/soak.py [--minutes 12] [--nodes 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import machine, require_plotting, save, today

LONG_LIVED = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_rss_mb(pgid: int, by_kind: dict[str, float] | None = None) -> float | None:
    """Resident memory of every process in process group ``pgid`` (the node, its DHT process and its
    p2pd); ``by_kind`` receives it per kind (``node`` is the group leader, others by command name)."""
    total = 0
    found = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # field 5 of stat: the process group
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb = int(line.split()[1])
                    total += kb
                    found = True
                    if by_kind is not None:
                        kind = "node" if int(entry) == pgid else stat[stat.index("(") + 1 : stat.rindex(")")]
                        by_kind[kind] = by_kind.get(kind, 0.0) + kb / 1024
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024 if found else None


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args, self.workdir = args, workdir
        self.grpc_port, self.http_port = free_port(), free_port()
        self.nodes: dict[int, subprocess.Popen] = {}
        self.incarnation = dict.fromkeys(range(args.nodes), 0)
        self.killed_by_us: set[int] = set()  # pids
        self.coordinator: subprocess.Popen | None = None
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self.crashes: list[dict] = []

    # --- processes ------------------------------------------------------------------------------

    def start_coordinator(self) -> None:
        # The run is node 0's: its key is made now (the node keeps it), so the coordinator knows it.
        run = subprocess.run(
            [sys.executable, "-m", "node", "run-id", "soak", "--identity", str(self.workdir / "node0.key")],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        command = [
            sys.executable, "-m", "coordinator", "serve", "--db", str(self.workdir / "coordinator.db"),
            "--run", run, "--host", "127.0.0.1", "--grpc-port", str(self.grpc_port),
            "--http-port", str(self.http_port),
        ]  # fmt: skip
        log = open(self.workdir / "coordinator.log", "a")  # noqa: SIM115 (kept open by the child)
        self.coordinator = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def node_command(self, slot: int) -> list[str]:
        a = self.args
        command = [
            sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", "soak", "--host-maddr", "/ip4/127.0.0.1/tcp/0",
            "--threads", "1", "--min-group", "2", "--round-period", str(a.round_period),
            "--identity", str(self.workdir / f"node{slot}.key"),
            "--status-file", str(self.workdir / f"node{slot}.status.json"),
            "--summary-json", str(self.workdir / f"node{slot}.summary.json"),
            "--coordinator", f"127.0.0.1:{self.grpc_port}", "--checkpoint-every", "10",
            "--eval-every", str(a.eval_every), "--log-level", "INFO",
        ]  # fmt: skip
        if slot == 0:
            command += ["--codec", "cocktail", "--model", a.model, "--total-steps", "100000"]
        else:
            command += ["--peer", self.live_maddr(exclude=slot)]
        return command

    def live_maddr(self, exclude: int) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for slot in random.sample(sorted(self.nodes), len(self.nodes)):
                if slot == exclude or self.nodes[slot].poll() is not None:
                    continue
                try:
                    status = json.loads((self.workdir / f"node{slot}.status.json").read_text())
                    if status.get("maddrs") and status.get("state") == "training":
                        return status["maddrs"][0]
                except (OSError, json.JSONDecodeError):
                    continue
            time.sleep(0.5)
        raise RuntimeError("no live node to join through")

    def start_node(self, slot: int) -> None:
        status = self.workdir / f"node{slot}.status.json"
        status.unlink(missing_ok=True)
        self.incarnation[slot] += 1
        log = open(self.workdir / f"node{slot}.{self.incarnation[slot]}.log", "w")  # noqa: SIM115
        self.nodes[slot] = subprocess.Popen(
            self.node_command(slot), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, process: subprocess.Popen) -> None:
        self.killed_by_us.add(process.pid)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    # --- observation ----------------------------------------------------------------------------

    def sample(self, t: float) -> None:
        for slot, process in self.nodes.items():
            if process.poll() is not None:
                if process.pid not in self.killed_by_us and not any(
                    c["pid"] == process.pid for c in self.crashes
                ):
                    self.crashes.append({"t": t, "slot": slot, "pid": process.pid, "rc": process.returncode})
                continue
            try:
                status = json.loads((self.workdir / f"node{slot}.status.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            kinds: dict[str, float] = {}
            self.samples.append(
                {
                    "t": round(t, 2), "slot": slot, "incarnation": self.incarnation[slot],
                    "round": status.get("round"), "digest": status.get("digest"),
                    "eval_loss": status.get("eval_loss"), "rss_mb": group_rss_mb(process.pid, kinds),
                    "rss_by_kind": {k: round(v, 1) for k, v in kinds.items()},
                }
            )  # fmt: skip

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        rng = random.Random(a.seed)
        self.start_coordinator()
        self.start_node(0)
        self.live_maddr(exclude=-1)
        for slot in range(1, a.nodes):
            self.start_node(slot)
        started = time.monotonic()
        end = started + 60 * a.minutes
        next_kill = started + a.settle + rng.uniform(20, 40)
        coordinator_restart = started + 0.5 * 60 * a.minutes
        pending_restarts: dict[int, float] = {}
        try:
            while (now := time.monotonic()) < end:
                t = now - started
                self.sample(t)
                if now >= next_kill:
                    slot = rng.choice([s for s in range(LONG_LIVED, a.nodes) if s not in pending_restarts])
                    self.kill(self.nodes[slot])
                    pending_restarts[slot] = now + rng.uniform(2, 8)
                    self.events.append({"t": round(t, 1), "event": "kill", "slot": slot})
                    print(f"[{t:6.0f} s] killed node {slot}", flush=True)
                    next_kill = now + rng.uniform(20, 40)
                for slot, when in list(pending_restarts.items()):
                    if now >= when:
                        del pending_restarts[slot]
                        self.start_node(slot)
                        self.events.append({"t": round(t, 1), "event": "restart", "slot": slot})
                if coordinator_restart and now >= coordinator_restart:
                    coordinator_restart = 0
                    assert self.coordinator is not None
                    self.kill(self.coordinator)
                    self.events.append({"t": round(t, 1), "event": "coordinator kill", "slot": None})
                    print(f"[{t:6.0f} s] killed the coordinator", flush=True)
                    time.sleep(3)
                    self.start_coordinator()
                    self.events.append({"t": round(t + 3, 1), "event": "coordinator restart", "slot": None})
                time.sleep(1.0)
            for slot in list(pending_restarts):
                self.start_node(slot)
            final = self.finish(started)
        finally:
            for process in [*self.nodes.values(), self.coordinator]:
                if process is not None and process.poll() is None:
                    self.kill(process)
        return final

    def finish(self, started: float) -> dict:
        """Let every node run a few rounds together, stop them all gracefully, and compare their x'
        at the newest round every node committed (from the summaries' round histories)."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            self.sample(time.monotonic() - started)
            latest = self.latest_rounds()
            if len(latest) == len(self.nodes) and max(latest.values()) - min(latest.values()) <= 1:
                break
            time.sleep(1)
        time.sleep(3 * self.args.round_period)
        for process in self.nodes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.nodes.values():
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill(process)
        # Each node's final x' against every digest any node had at that round: a node may leave
        # a round behind the others, and a late joiner may hold x' without a committed round.
        histories: dict[int, dict[int, str]] = {}
        finals: dict[int, tuple[int, str]] = {}
        for slot in self.nodes:
            try:
                summary = json.loads((self.workdir / f"node{slot}.summary.json").read_text())
                histories[slot] = {h["round"]: h["digest"] for h in summary["history"]}
                finals[slot] = (summary["round"], summary["digest"])
                histories[slot][summary["round"]] = summary["digest"]
            except (OSError, json.JSONDecodeError, KeyError):
                histories[slot] = {}
        seen: dict[int, set[str]] = {}
        for history in histories.values():
            for round_id, digest in history.items():
                seen.setdefault(round_id, set()).add(digest)
        return {
            "final_rounds": sorted({r for r, _ in finals.values()}),
            "final_digests": {slot: digest for slot, (_, digest) in finals.items()},
            "unrepaired": any(len(seen[r]) > 1 for r, _ in finals.values()),
        }

    def latest_rounds(self) -> dict[int, int]:
        latest: dict[int, int] = {}
        for s in self.samples[-4 * len(self.nodes) :]:
            if s["round"] is not None:
                latest[s["slot"]] = s["round"]
        return latest


def analyse(soak: Soak, final: dict, args: argparse.Namespace) -> dict:
    samples = soak.samples
    duration = 60 * args.minutes
    in_run = [s for s in samples if s["t"] <= duration and s["round"] is not None]
    # Longest stall: the longest time the swarm's highest round did not advance.
    stall, best, since = 0.0, -1, 0.0
    first_commit = None
    for t in sorted({s["t"] for s in in_run}):
        top = max(s["round"] for s in in_run if s["t"] == t)
        if top > best:
            if best >= 1:
                stall = max(stall, t - since)
            if first_commit is None and top >= 1:
                first_commit = t
            best, since = top, t
    rounds_first = min((s["round"] for s in in_run if s["t"] >= (first_commit or 0)), default=0)
    # Digests per round among live nodes: rounds where two nodes reported different x' at the same round.
    by_round: dict[int, set[str]] = {}
    for s in in_run:
        if s["digest"]:
            by_round.setdefault(s["round"], set()).add(s["digest"])
    disagreed = sorted(r for r, d in by_round.items() if len(d) > 1)
    final_digests = final.get("final_digests", {})
    unrepaired = bool(final.get("unrepaired"))
    # Eval loss (node 0, long-lived): first and last quarter.
    evals = [(s["t"], s["eval_loss"]) for s in in_run if s["slot"] == 0 and s["eval_loss"] is not None]
    dedup = [e for i, e in enumerate(evals) if i == 0 or e[1] != evals[i - 1][1]]
    q1 = [v for t, v in dedup if t <= duration / 4]
    q4 = [v for t, v in dedup if t >= 3 * duration / 4]
    # Memory of the long-lived nodes over the second half (medians of the first and last 30 s of it).
    memory = {}
    for slot in range(LONG_LIVED):
        series = [(s["t"], s["rss_mb"]) for s in in_run if s["slot"] == slot and s["rss_mb"] is not None]
        mid = [m for t, m in series if duration / 2 <= t <= duration / 2 + 30]
        last = [m for t, m in series if t >= duration - 30]
        if mid and last:
            a, b = statistics.median(mid), statistics.median(last)
            half = [(t, m) for t, m in series if t >= duration / 2]
            memory[slot] = {
                "mid_mb": round(a, 1), "end_mb": round(b, 1), "growth": round(b / a - 1, 4),
                # Least-squares trend over the whole second half: a step and a leak read differently.
                "trend_mb_per_min": round(60 * _slope(half), 2) if len(half) > 2 else None,
            }  # fmt: skip
    return {
        "rounds_completed": best,
        "rounds_at_first_commit": rounds_first,
        "longest_stall_s": round(stall, 1),
        "rounds_with_disagreeing_digests": len(disagreed),
        "disagreeing_rounds": disagreed[:50],
        "final_rounds": final.get("final_rounds", []),
        "final_digests": final_digests,
        "unrepaired_divergence": unrepaired,
        "eval_first_quarter": statistics.mean(q1) if q1 else None,
        "eval_last_quarter": statistics.mean(q4) if q4 else None,
        "eval_points": dedup,
        "survivor_crashes": soak.crashes,
        "kills": sum(1 for e in soak.events if e["event"] == "kill"),
        "events": soak.events,
        "memory": memory,
    }


def _slope(points: list[tuple[float, float]]) -> float:
    mean_t = statistics.mean(t for t, _ in points)
    mean_m = statistics.mean(m for _, m in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / spread if spread else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--round-period", type=float, default=2.0)
    parser.add_argument(
        "--eval-every", type=int, default=10, help="node 0 evaluates x' every this many rounds"
    )
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before the first kill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    require_plotting()
    if args.nodes <= LONG_LIVED:
        parser.error(f"--nodes must exceed the {LONG_LIVED} long-lived nodes")
    with tempfile.TemporaryDirectory(prefix="swarm-soak-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        soak = Soak(args, workdir)
        final = soak.run()
        result = analyse(soak, final, args)
        (workdir / "samples.json").write_text(json.dumps(soak.samples))
    import torch

    record = {
        "benchmark": "soak",
        "date": today(),
        "machine": machine(),
        "torch": torch.__version__,
        "minutes": args.minutes,
        "nodes": args.nodes,
        "long_lived": LONG_LIVED,
        "model": args.model,
        "round_period_s": args.round_period,
        **result,
    }
    stem = f"soak-{record['date']}"
    folder = save(args.out, stem, record, render(record))
    plot(record, soak.samples, folder / f"{stem}.png")
    print(render(record))


def render(r: dict) -> str:
    q1, q4 = r["eval_first_quarter"], r["eval_last_quarter"]
    mem = "; ".join(
        f"node {s}: {m['mid_mb']:.0f} -> {m['end_mb']:.0f} MB ({100 * m['growth']:+.1f}%)"
        for s, m in r["memory"].items()
    )
    lines = [
        f"# Churn soak ({r['date']})",
        "",
        f"Machine: {r['machine']}; torch {r['torch']}. {r['nodes']} nodes on loopback (model `{r['model']}`, cocktail"
        f" codec, wall-clock rounds from {r['round_period_s']} s), {r['minutes']:.0f} minutes; nodes"
        f" {r['long_lived']}-{r['nodes'] - 1} SIGKILLed (whole process group) every 20-40 s and restarted after 2-8 s"
        " with the same identity; the coordinator SIGKILLed and restarted once at half time.",
        "",
        "| measure | value | bound |",
        "|---|---|---|",
        f"| rounds completed (highest round of the swarm) | {r['rounds_completed']} | |",
        f"| kills | {r['kills']} (+1 coordinator) | |",
        f"| longest stall s | {r['longest_stall_s']} | |",
        f"| rounds where live nodes reported different x' | {r['rounds_with_disagreeing_digests']} | repaired |",
        f"| divergence left at the end (each node's final x' against every digest of its round) |"
        f" {'yes' if r['unrepaired_divergence'] else 'none'} ({len(r['final_digests'])} nodes ending at rounds"
        f" {', '.join(map(str, r['final_rounds']))}) | none |",
        f"| eval loss, first quarter -> last quarter | {q1 if q1 is None else f'{q1:.3f}'} -> {q4 if q4 is None else f'{q4:.3f}'} | falls |",
        f"| survivor crashes | {len(r['survivor_crashes'])} | 0 |",
        f"| memory of the long-lived nodes, second half | {mem} | < +10% |",
        "",
        "Stall: the longest time the swarm's highest round did not advance (after the first commit).",
        "Different x': two live nodes' status files showed different digests at the same round; a node",
        "that missed a round's shards repairs by replay, so this counts transient states. Memory: resident",
        "memory of the node's process group (Python and its p2pd), medians of 30 s windows.",
        "",
        f"Reproduce: `python benchmarks/soak.py --minutes {r['minutes']:.0f}`.",
    ]
    return "\n".join(lines) + "\n"


def plot(record: dict, samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for slot in range(record["nodes"]):
        series = [(s["t"], s["round"]) for s in samples if s["slot"] == slot and s["round"] is not None]
        if series:
            axes[0].plot(*zip(*series, strict=True), lw=0.8, label=f"node {slot}")
        rss = [(s["t"], s["rss_mb"]) for s in samples if s["slot"] == slot and s["rss_mb"] is not None]
        if rss and slot < record["long_lived"]:
            axes[2].plot(*zip(*rss, strict=True), lw=0.8, label=f"node {slot}")
    for e in record["events"]:
        axes[0].axvline(e["t"], color="red" if "coordinator" in e["event"] else "grey", lw=0.3)
    axes[0].set_title("round of x' per node (lines: kills, restarts)")
    axes[0].set_xlabel("s")
    if record["eval_points"]:
        axes[1].plot(*zip(*record["eval_points"], strict=True), marker="o", ms=3)
    axes[1].set_title("eval loss of x' (node 0)")
    axes[1].set_xlabel("s")
    axes[2].set_title("resident memory, long-lived nodes (MB)")
    axes[2].set_xlabel("s")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
