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

    python benchmarks/intruder.py [--members 4] [--rounds 60] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from report import first_maddr, machine, save, today


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


class Flooder:
    """An outsider's host in this process that sends join requests without a credential to every
    member, ``rate`` per second in all, and counts the answers (each should be a refusal)."""

    def __init__(self, entry: str, members: list[bytes], rate: float):
        self.entry, self.members, self.rate = entry, members, rate
        self.sent = self.refused = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        from swarm.p2p import HostOptions, SwarmHost
        from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb

        host = await SwarmHost.start(
            HostOptions(initial_peers=(self.entry,), host_maddrs=("/ip4/127.0.0.1/tcp/0",))
        )
        protocol = "/swarm/closed/rendezvous/1"
        try:
            while not self._stop.is_set():
                for member in self.members:
                    if self._stop.is_set():
                        break
                    started = time.monotonic()
                    self.sent += 1
                    try:
                        stream = await host.open_stream(
                            member, protocol, timeout_s=5.0, max_frame_bytes=65536
                        )
                        try:
                            await stream.send(
                                pb.Frame(join=pb.JoinRequest(run_id="closed", round=1, weight=1.0))
                            )
                            frame = await asyncio.wait_for(stream.recv(), timeout=5.0)
                            self.refused += frame.WhichOneof("body") == "busy"
                        finally:
                            stream.close()
                    except Exception:
                        self.failed += 1
                    await asyncio.sleep(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))
        finally:
            await host.shutdown()


def run_swarm(name: str, intruders: int, args: argparse.Namespace, workdir: Path) -> dict:
    owner_key, member_flags, member_ids = credentials(workdir, name, args.members)
    summaries = [workdir / f"{name}-{i}.summary.json" for i in range(args.members)]
    status0 = workdir / f"{name}-0.status.json"
    common = [
        sys.executable, "-m", "node", "join", "--run-id", "closed", "--host-maddr", "/ip4/127.0.0.1/tcp/0",
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
                    flooder = Flooder(entry, member_ids, args.flood_rate)
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
    common_rounds = set.intersection(*({h["round"] for h in s["history"]} for s in data))
    digests = [{h["round"]: h["digest"] for h in s["history"]} for s in data]
    identical = all(len({d[r] for d in digests}) == 1 for r in common_rounds)
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
        "members_identical_x": identical,
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
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
