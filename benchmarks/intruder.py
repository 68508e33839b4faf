"""Intruder benchmark: how much longer are a closed run's rounds while an outsider keeps trying?

A closed run (``--run-owner``) of ``--members`` credentialed node processes on loopback trains the
default task in deterministic mode (one local step per round, ``--rounds`` committed rounds, fp32
codec), once alone and once with ``--intruders`` outsiders that ignore their own missing credential
(``SWARM_FAULT=ignore_auth``): they publish member heartbeats, ask conductors to join and try to
conduct rounds themselves; and an outsider host in the benchmark's process sends join requests
without a credential to every member, ``--flood-rate`` per second in all. Members must refuse all
of it without waiting for anyone. The runs
alternate (clean, intruded, clean, ...) ``--repeats`` times so that drift of the machine hits both.

Reported per run: rounds per second of wall-clock time over the steady part (after the first
``--skip`` rounds, node 0's commit times), the median round duration (rendezvous to commit, the
median over members of each round, then over rounds), whether an outsider ever entered a round, and
whether members' x' stayed identical. Writes results/intruder-<date>.{json,md}.

With ``--rewrite``, the outsider rewrites records instead (``outsiders.py``): for ``--seconds`` after
start-up, alternately with and without it, ``--members`` members train and one more joins halfway
through (it reads the run spec the outsider forges). Reported per run: the rounds node 0 committed
in the window and their rate, whether x' stayed identical, how many of the outsider's stores the
members' DHTs accepted, by kind, what the DHT serves afterwards, and whether any member followed the
forged spec (its history shows the forged codec), coordinator (its log names the address), round or
pointer (it dialled the outsider, or its round jumped). Writes results/intruder-rewrite-<date>.{json,md}.

    python benchmarks/intruder.py [--members 4] [--rounds 60] [--repeats 2]
    python benchmarks/intruder.py --rewrite [--members 3] [--seconds 120] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from report import first_maddr, machine, save, today

LEAVE_TIMEOUT_S = 300.0
"""How long a member may take to leave gracefully (hand over, evaluate, write its summary)."""


def credentials(workdir: Path, name: str, members: int) -> tuple[str, list[list[str]], list[bytes]]:
    """The owner's public key and, per member, the flags of its identity and credential, and its peer id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from swarm.auth import issue, owner_public_key
    from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf

    owner = Ed25519PrivateKey.generate()
    flags, ids = [], []
    for i in range(members):
        identity = workdir / f"{name}-member-{i}.key"
        generate_identity(identity)
        key = load_identity(identity)
        assert key is not None
        peer = peer_id_of(public_key_protobuf(key.public_key()))
        credential = workdir / f"{name}-member-{i}.cred"
        credential.write_bytes(issue(owner, run_id="closed", peer_id=peer, valid_s=86400).to_bytes())
        flags.append(["--identity", str(identity), "--credential", str(credential)])
        ids.append(peer)
    return owner_public_key(owner), flags, ids


def read_status(
    status: Path, process: subprocess.Popen, ready: Callable[[dict], bool], what: str, timeout_s: float = 600
) -> dict:
    """A node's status file (``--status-file``) once ``ready`` holds for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = json.loads(status.read_text())
            if ready(state):
                return state
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the node writing {status} exited before {what}; see its log")
        time.sleep(0.5)
    raise TimeoutError(f"no {what} in {status} in {timeout_s:.0f} s")


def run_id_of(status: Path, process: subprocess.Popen) -> str:
    """The run's full id, as the node that started it reports it (a pinned run's id is longer than
    the name it was started with): the id every DHT key and protocol name of the run is built from."""
    return read_status(status, process, lambda s: bool(s.get("run_id")), "run id", timeout_s=300)["run_id"]


def digests_agree(summaries: list[dict]) -> bool:
    """Whether every round that members committed has one x' digest on all who committed it."""
    seen: dict[int, set[str]] = {}
    for s in summaries:
        for h in s["history"]:
            if h["digest"] is not None:
                seen.setdefault(h["round"], set()).add(h["digest"])
    return all(len(digests) == 1 for digests in seen.values())


def run_swarm(name: str, intruders: int, args: argparse.Namespace, workdir: Path) -> dict:
    from outsiders import Flooder

    owner_key, member_flags, member_ids = credentials(workdir, name, args.members)
    summaries = [workdir / f"{name}-{i}.summary.json" for i in range(args.members)]
    status0 = workdir / f"{name}-0.status.json"
    common = [
        sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", "closed", "--host-maddr", "/ip4/127.0.0.1/tcp/0",
        "--threads", "1", "--local-steps", "1", "--min-group", str(args.members), "--join-grace", "120",
        "--join-timeout", "240", "--eval-every", "100000", "--run-owner", owner_key,
    ]  # fmt: skip
    processes: list[subprocess.Popen] = []
    outsiders: list[subprocess.Popen] = []
    flooder: Flooder | None = None
    try:
        for i in range(args.members):
            command = [*common, "--until-round", str(args.rounds), "--summary-json", str(summaries[i])]
            command += member_flags[i]
            if i == 0:
                command += ["--status-file", str(status0), "--codec", "fp32", "--seed", "0"]
            else:
                command += ["--peer", first_maddr(status0, processes[0], timeout_s=300)]
            log = workdir / f"{name}-{i}.log"
            with open(log, "w") as out:
                processes.append(
                    subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                )
            if i == 0:
                entry = first_maddr(status0, processes[0], timeout_s=300)
                if intruders and args.flood_rate > 0:
                    flooder = Flooder(entry, run_id_of(status0, processes[0]), member_ids, args.flood_rate)
                    flooder.start()
                for j in range(intruders):  # from the start, so that every round meets them
                    log_j = workdir / f"{name}-intruder-{j}.log"
                    with open(log_j, "w") as out:
                        outsiders.append(
                            subprocess.Popen(
                                [*common, "--peer", entry],
                                stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "SWARM_FAULT": "ignore_auth"},
                                start_new_session=True,
                            )
                        )
        failed = [i for i, p in enumerate(processes) if p.wait(timeout=3600) != 0]
        still_trying = [p.poll() is None for p in outsiders]
    finally:
        if flooder is not None:
            flooder.stop()
        for process in [*processes, *outsiders]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    if failed:
        raise RuntimeError(f"{name}: members {failed} failed; see {workdir}")
    data = [json.loads(p.read_text()) for p in summaries]
    by_round: dict[int, list[float]] = {}
    groups: set[int] = set()
    for s in data:
        for h in s["history"]:
            by_round.setdefault(h["round"], []).append(h["duration_s"])
            groups.add(h["group_size"])
    steady = [r for r in sorted(by_round) if r > args.skip]
    times = {h["round"]: h["time"] for h in data[0]["history"]}
    span = [r for r in steady if r in times]
    rounds_per_s = (len(span) - 1) / (times[span[-1]] - times[span[0]])
    refused = sum(
        log.read_text(errors="replace").count("rejected a join request")
        for log in workdir.glob(f"{name}-[0-9]*.log")
    )
    return {
        "name": name,
        "intruders": intruders,
        "intruders_still_trying_at_end": sum(still_trying),
        "rounds": len(by_round),
        "rounds_per_s": rounds_per_s,
        "median_round_s": statistics.median(
            statistics.median(v) for r, v in by_round.items() if r > args.skip
        ),
        "group_sizes": sorted(groups),
        "outsider_entered": any(g > args.members for g in groups),
        "members_identical_x": digests_agree(data),
        "join_requests_rejected": refused,
        "flood": None
        if flooder is None
        else {
            "rate": args.flood_rate,
            "sent": flooder.sent,
            "refused": flooder.refused,
            "failed": flooder.failed,
        },
    }


def sessions_cpu_s(leaders: list[int]) -> dict[str, float]:
    """CPU seconds used so far by the live processes of the sessions ``leaders`` lead (each member
    starts its own), split into the members' main processes and their helpers (DHT process, p2pd)."""
    used = {"main": 0.0, "helpers": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in leaders:  # the session id
            kind = "main" if int(stat.parent.name) in leaders else "helpers"
            used[kind] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def run_window(name: str, rewrite: bool, args: argparse.Namespace, workdir: Path) -> dict:
    """``--seconds`` of a closed run after its first ``--skip`` rounds: ``--members`` members train,
    one more joins halfway through, and with ``rewrite`` the outsider rewrites the run's records."""
    from outsiders import FORGED_CODEC, FORGED_COORDINATOR, FORGED_ROUND, Rewriter

    count = args.members + 1
    owner_key, member_flags, _ = credentials(workdir, name, count)
    statuses = [workdir / f"{name}-{i}.status.json" for i in range(count)]
    summaries = [workdir / f"{name}-{i}.summary.json" for i in range(count)]
    common = [
        sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", "closed", "--host-maddr", "/ip4/127.0.0.1/tcp/0",
        "--threads", "1", "--local-steps", "1", "--min-group", str(args.members), "--join-grace", "120",
        "--join-timeout", "240", "--eval-every", "100000", "--run-owner", owner_key,
        "--checkpoint-every", str(args.checkpoint_every),
    ]  # fmt: skip
    processes: list[subprocess.Popen] = []
    rewriter: Rewriter | None = None
    entry, outcome = "", None

    def start(i: int) -> None:
        command = [*common, "--summary-json", str(summaries[i]), "--status-file", str(statuses[i])]
        command += [*member_flags[i], *(["--codec", "fp32", "--seed", "0"] if i == 0 else ["--peer", entry])]
        with open(workdir / f"{name}-{i}.log", "w") as out:
            processes.append(
                subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )

    try:
        start(0)
        entry = first_maddr(statuses[0], processes[0], timeout_s=300)
        for i in range(1, args.members):
            start(i)
        if rewrite:
            rewriter = Rewriter(entry, run_id_of(statuses[0], processes[0]))
            rewriter.start()
        read_status(statuses[0], processes[0], lambda s: s["rounds_completed"] >= args.skip, "first rounds")
        began, cpu_began = time.time(), sessions_cpu_s([p.pid for p in processes])
        if rewriter is not None:
            rewriter.begin()
        time.sleep(args.seconds / 2)
        start(args.members)
        time.sleep(max(0.0, began + args.seconds - time.time()))
        ended, cpu_ended = time.time(), sessions_cpu_s([p.pid for p in processes])
        if rewriter is not None:
            outcome = rewriter.stop()
        for process in processes:
            process.send_signal(signal.SIGTERM)  # a graceful leave writes the summary
        exits: list[int | None] = []
        for process in processes:
            try:
                exits.append(process.wait(timeout=LEAVE_TIMEOUT_S))
            except subprocess.TimeoutExpired:
                exits.append(None)
    finally:
        if rewriter is not None and outcome is None:
            rewriter.stop()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    data = [json.loads(p.read_text()) for p in summaries if p.exists()]
    if not data or not summaries[0].exists():
        raise RuntimeError(f"{name}: node 0 wrote no summary; see {workdir}")
    in_window = [h["round"] for h in data[0]["history"] if began <= h["time"] <= ended]
    by_round: dict[int, list[float]] = {}
    for s in data:
        for h in s["history"]:
            if h["round"] in in_window:
                by_round.setdefault(h["round"], []).append(h["duration_s"])
    logs = [(workdir / f"{name}-{i}.log").read_text(errors="replace") for i in range(count)]
    late = json.loads(summaries[-1].read_text()) if summaries[-1].exists() else None
    return {
        "name": name,
        "rewrite": rewrite,
        "window_s": ended - began,
        "rounds_in_window": len(in_window),
        "rounds_per_s": len(in_window) / (ended - began),
        "median_round_s": statistics.median(statistics.median(v) for v in by_round.values())
        if by_round
        else float("nan"),
        "group_sizes": sorted({h["group_size"] for s in data for h in s["history"]}),
        "members_identical_x": digests_agree(data),
        "exit_codes": exits,
        "members_cpu_s": {k: round(cpu_ended[k] - cpu_began[k], 1) for k in cpu_ended},
        "late_joiner_rounds": None if late is None else late["rounds_completed"],
        "refusals_logged": sum(int(n) for log in logs for n in re.findall(r"refused (\d+) DHT record", log)),
        "followed": {
            "spec": any(h.get("codec") == FORGED_CODEC for s in data for h in s["history"])
            or any(f"codec {FORGED_CODEC}" in log for log in logs),
            "coordinator": any(FORGED_COORDINATOR in log for log in logs),
            "round": any(s["round"] >= FORGED_ROUND for s in data),
            "dialled outsider": bool(outcome and sum(outcome["contacts_from_members"].values())),
        },
        "outsider": outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--intruders", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--skip", type=int, default=5, help="rounds left out as start-up")
    parser.add_argument(
        "--flood-rate",
        type=float,
        default=20.0,
        help="join requests per second from an in-process outsider (0: none)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rewrite", action="store_true", help="the record-rewriting outsider instead")
    parser.add_argument("--seconds", type=float, default=120.0, help="--rewrite: each run's window")
    parser.add_argument(
        "--checkpoint-every", type=int, default=10, help="--rewrite: members' checkpoint period, rounds"
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.rewrite:
        rewrite_runs(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-intruder-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            for intruders in (0, args.intruders):
                name = f"r{repeat}-{'intruded' if intruders else 'clean'}"
                result = run_swarm(name, intruders, args, workdir)
                print(json.dumps(result), flush=True)
                results.append(result)
    clean = [r["rounds_per_s"] for r in results if not r["intruders"]]
    intruded = [r["rounds_per_s"] for r in results if r["intruders"]]
    record = {
        "benchmark": "intruder",
        "date": today(),
        "machine": machine(),
        "members": args.members,
        "intruders": args.intruders,
        "flood_rate": args.flood_rate,
        "rounds": args.rounds,
        "results": results,
        "slowdown": statistics.mean(clean) / statistics.mean(intruded) - 1.0,
    }
    print(render(record))
    save(args.out, f"intruder-{record['date']}", record, render(record))


def rewrite_runs(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-intruder-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            for rewrite in (False, True):
                result = run_window(f"r{repeat}-{'rewrite' if rewrite else 'clean'}", rewrite, args, workdir)
                print(json.dumps(result), flush=True)
                results.append(result)
    clean = [r["rounds_per_s"] for r in results if not r["rewrite"]]
    rewritten = [r["rounds_per_s"] for r in results if r["rewrite"]]
    record = {
        "benchmark": "intruder-rewrite",
        "date": today(),
        "machine": machine(),
        "members": args.members,
        "seconds": args.seconds,
        "checkpoint_every": args.checkpoint_every,
        "results": results,
        "slowdown": statistics.mean(clean) / (statistics.mean(rewritten) or float("nan")) - 1.0,
    }
    print(render_rewrite(record))
    save(args.out, f"intruder-rewrite-{record['date']}", record, render_rewrite(record))


def render(record: dict) -> str:
    lines = [
        f"# Intruder benchmark ({record['date']})",
        "",
        f"Machine: {record['machine']}. A closed run of {record['members']} credentialed members on loopback,"
        f" model `tiny`, fp32 codec, one local step per round, {record['rounds']} rounds; with"
        f" {record['intruders']} outsider node(s) running `SWARM_FAULT=ignore_auth` (heartbeats, join"
        " requests, attempts to conduct; they also train, so they take CPU from the members on this"
        f" machine) plus an outsider host flooding every member with join requests"
        f" ({record['flood_rate']:g}/s in all), or without any.",
        "",
        "| run | outsiders | rounds/s (steady) | median round s | join requests rejected | group sizes seen | outsider entered | identical x' |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['name']} | {r['intruders']} | {r['rounds_per_s']:.3f} | {r['median_round_s']:.3f} |"
            f" {r['join_requests_rejected']} | {r['group_sizes']} | {r['outsider_entered']} | {r['members_identical_x']} |"
        )
    lines += [
        "",
        f"Rounds take {100 * record['slowdown']:+.1f}% longer with the outsider(s) (mean rounds/s of the clean"
        " runs over that of the intruded runs, minus one; target: at most +10%).",
        "",
        "Flood requests per intruded run (sent / answered with a refusal / failed): "
        + ", ".join(
            f"{r['name']} {r['flood']['sent']} / {r['flood']['refused']} / {r['flood']['failed']}"
            for r in record["results"]
            if r.get("flood")
        )
        + ".",
        "",
        "Reproduce: `python benchmarks/intruder.py"
        f" --members {record['members']} --intruders {record['intruders']} --flood-rate {record['flood_rate']:g}"
        f" --rounds {record['rounds']}`.",
    ]
    return "\n".join(lines) + "\n"


def render_rewrite(record: dict) -> str:
    from outsiders import FORGED_CODEC, FORGED_COORDINATOR, FORGED_ROUND

    lines = [
        f"# Intruder benchmark: an outsider rewrites the run's records ({record['date']})",
        "",
        f"Machine: {record['machine']}. A closed run of {record['members']} credentialed members on"
        " loopback, model `tiny`, fp32 codec, one local step per round, a checkpoint every"
        f" {record['checkpoint_every']} rounds; a window of {record['seconds']:g} s after the first rounds,"
        " halfway through which one more credentialed member joins. In the `rewrite` runs an outsider"
        " host without a credential (`benchmarks/outsiders.py`) rewrites every record of the run it can"
        " reach, about once a second, throughout the window.",
        "",
        "| run | rounds in window | rounds/s | median round s | identical x' | late joiner's rounds | exit codes | members' CPU s: main / DHT+p2pd | refusals logged | followed spec / coordinator / round / dialled outsider |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        f = r["followed"]
        lines.append(
            f"| {r['name']} | {r['rounds_in_window']} | {r['rounds_per_s']:.3f} | {r['median_round_s']:.3f} |"
            f" {r['members_identical_x']} | {r['late_joiner_rounds']} | {r['exit_codes']} |"
            f" {r['members_cpu_s']['main']:g} / {r['members_cpu_s']['helpers']:g} | {r['refusals_logged']} |"
            f" {f['spec']} / {f['coordinator']} / {f['round']} / {f['dialled outsider']} |"
        )
    lines += [
        "",
        "Followed: the spec when a member's history or start-up line shows the forged codec"
        f" ({FORGED_CODEC}), the coordinator when a member's log names the forged address"
        f" ({FORGED_COORDINATOR}), the round when a member's round reached {FORGED_ROUND:.0e}, and the"
        " outsider was dialled when a member opened a stream to it (a believed heartbeat or pointer).",
        "",
        f"Rounds take {100 * record['slowdown']:+.1f}% longer with the outsider (mean rounds/s of the clean"
        " runs over that of the rewrite runs, minus one).",
    ]
    for r in record["results"]:
        if not r["outsider"]:
            continue
        o = r["outsider"]
        lines += [
            "",
            f"{r['name']}: {o['passes']} passes, {o['cpu_s']:g} CPU s of the outsider (its process, DHT"
            " process and p2pd, on this machine's cores). Stores the members' DHTs accepted (hivemind's"
            " answer, the outsider's own node left out):",
            "",
            "| write | sent | accepted | no answer |",
            "|---|---|---|---|",
            *(
                f"| {kind} | {t['sent']} | {t['accepted']} | {t['failed']} |"
                for kind, t in o["stores"].items()
            ),
            "",
            "Served afterwards: "
            + "; ".join(f"{k}: {v}" for k, v in o["audit"].items())
            + f". Streams members opened to the outsider: {o['contacts_from_members'] or 'none'}."
            + (f" Outsider error: {o['error']}." if o["error"] else ""),
        ]
    lines += [
        "",
        f"Reproduce: `python benchmarks/intruder.py --rewrite --members {record['members']}"
        f" --seconds {record['seconds']:g} --checkpoint-every {record['checkpoint_every']}`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
