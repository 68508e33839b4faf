"""Benchmark: training over slow links. Swarm with the cocktail codec, Swarm with fp32, and hivemind's
stock optimizer (fp16 gradients), 4 peers, each in its own network namespace, links shaped with tbf.

The task is fine-tuning, CocktailSGD's setting: first one process trains the model alone for
``--pretrain-steps`` steps on loopback (model ``small``, ~7M parameters, 28 MB in fp32: large enough
that a round of exact averaging takes ~20 s over 20 Mbit/s), and every run starts from that
checkpoint. For every link rate (unlimited, 1000, 500, 100, 50, 20 Mbit/s, both directions of every
peer's link) and method, the 4 peers then train for ``--seconds`` of wall-clock time on the same data
(stdlib corpus, ``--batch-size`` x 128 bytes per peer step, the same peak learning rate and
``--warmup-steps`` warm-up; hivemind's target batch is 4 x the batch, one step of all peers: the same
effective batch; the pretraining uses the same batch). On half-core peers a local step at batch 4
takes ~2 s, so fp32's exact round at 100 Mbit/s hides behind a few local steps, as it would on a
much faster link; ``--batch-size 1`` gives the ratio of a GPU peer (steps of a fraction of a second
against an exact round of seconds). Each peer's processes share a CPU quota (``--cpu-per-peer``, default the machine's
cores / 4), so a peer computes at a fixed speed, as on its own GPU: without it, a method whose other
peers stall (hivemind's joiners downloading state) hands their cores to peer 0, the one evaluated.
Swarm runs in wall-clock mode with adaptive rounds (the period lengthens from ``--round-period`` until
communication fits; the chosen period and local steps per round are reported). Peer 0 evaluates on
the held-out split at most every ``--eval-every-s`` seconds: Swarm x' (the model it publishes) and its
own working model x_0, after a committed round; hivemind its own parameters. hivemind's peer 0 also
counts its epochs stepped with averaged gradients against those that fell back to local ones.
Reported: swarm samples per second, median round time, socket bytes per peer per round, eval loss
against wall-clock time, and the time to reach a target eval loss (``--target``, or the loss
Swarm-fp32 reaches on the unlimited link at 60% of its run). Every namespace is deleted at the end.

    sudo .venv/bin/python benchmarks/wan.py [--seconds 120] [--rates 0 1000 500 100 50 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from netlab import NetLab, socket_delta
from report import first_maddr, machine, require_plotting, save, today
from wan_report import code_commit, plot, render

PEERS = 4


def pretrain(args: argparse.Namespace, path: Path, workdir: Path) -> None:
    """Train ``args.model`` alone on loopback for ``args.pretrain_steps`` steps and save it to ``path``."""
    rounds = max(1, args.pretrain_steps // 10)
    command = [
        sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", "wan-pretrain", "--host-maddr", "/ip4/127.0.0.1/tcp/0",
        "--model", args.model, "--batch-size", str(args.batch_size), "--local-steps", "10", "--min-group", "1",
        "--until-round", str(rounds), "--total-steps", str(rounds * 10), "--save-model", str(path),
        "--eval-every", str(rounds), "--summary-json", str(workdir / "pretrain.summary.json"),
    ]  # fmt: skip
    with open(workdir / "pretrain.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=7200)
    summary = json.loads((workdir / "pretrain.summary.json").read_text())
    print(f"pretrained {args.model}: {rounds * 10} steps, eval loss {summary['eval_loss']:.3f}", flush=True)


COCKTAIL_KNOBS = {"p": "--sparsity", "r": "--topk", "q": "--bits"}


def codec_args(method: str) -> list[str]:
    """The node's codec flags for a Swarm method: ``fp32``, ``cocktail`` or a cocktail setting such
    as ``cocktail:p=0.5`` or ``cocktail:p=0.5,r=0.2,q=4`` (sparsity, top-k ratio, bits; the others at
    their defaults). ArgumentTypeError for anything else."""
    name, _, setting = method.partition(":")
    if name not in ("cocktail", "fp32") or (name == "fp32" and setting):
        raise argparse.ArgumentTypeError(
            f"unknown method {method!r}: cocktail[:p=..,r=..,q=..], fp32 or hivemind"
        )
    flags = ["--codec", name]
    for item in filter(None, setting.split(",")):
        knob, _, value = item.partition("=")
        if knob not in COCKTAIL_KNOBS or not value:
            raise argparse.ArgumentTypeError(f"{method!r}: settings are p=, r= and q=, got {item!r}")
        try:
            float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{method!r}: {item!r} is not a number") from None
        flags += [COCKTAIL_KNOBS[knob], value]
    return flags


def method_spec(text: str) -> str:
    """argparse's check of a ``--methods`` entry: ``hivemind`` or a Swarm method (``codec_args``)."""
    if text != "hivemind":
        codec_args(text)
    return text


def run_swarm(
    lab: NetLab, method: str, args: argparse.Namespace, model: str, workdir: Path, tag: str
) -> dict:
    seconds = args.seconds
    summaries = [workdir / f"{tag}-{i}.summary.json" for i in range(PEERS)]
    status0 = workdir / f"{tag}-0.status.json"
    processes = []
    for i in range(PEERS):
        command = [
            sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", tag, "--host-maddr", f"/ip4/{lab.address(i)}/tcp/0",
            "--threads", "1", "--round-period", str(args.round_period), "--summary-json", str(summaries[i]),
            "--eval-every", "1000000", "--min-group", str(PEERS), "--join-timeout", "120",
        ]  # fmt: skip
        if i == 0:
            command += [
                "--status-file", str(status0), "--eval-every-s", str(args.eval_every_s), "--eval-local",
                "--model", model, "--warmup-steps", str(args.warmup_steps),
                *codec_args(method), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                "--total-steps", "100000",
            ]  # fmt: skip
            if method.startswith("cocktail") and args.warmup_rounds:
                command += ["--warmup-rounds", str(args.warmup_rounds)]
        else:
            command += ["--peer", first_maddr(status0, processes[0])]
        processes.append(lab.run(i, command, log=workdir / f"{tag}-{i}.log"))
    started = time.time()
    sockets0 = [lab.socket_bytes(i) for i in range(PEERS)]
    time.sleep(seconds)
    sockets1 = [lab.socket_bytes(i) for i in range(PEERS)]
    for process in processes:
        process.send_signal(signal.SIGTERM)  # leave gracefully: finish the round, write the summary
    for process in processes:
        process.wait(timeout=300)
    missing = [i for i, p in enumerate(summaries) if not p.exists()]
    if missing:
        log = (workdir / f"{tag}-{missing[0]}.log").read_text()[-3000:]
        raise RuntimeError(f"{tag}: peers {missing} wrote no summary; peer {missing[0]}'s log ends:\n{log}")
    data = [json.loads(p.read_text()) for p in summaries]
    history = data[0]["history"]
    rounds = [h for h in history if h["time"] <= started + seconds]
    points = [
        {"t": h["time"] - started, "eval_loss": h["eval_loss"]}
        for h in rounds
        if h.get("eval_loss") is not None
    ]
    # Peer 0's working model x_0 (x' plus what it has not sent yet): what hivemind's row evaluates.
    local_points = [
        {"t": h["time"] - started, "eval_loss": h["local_eval_loss"]}
        for h in rounds
        if h.get("local_eval_loss") is not None
    ]
    sent = statistics.mean(socket_delta(a, b)[0] for a, b in zip(sockets0, sockets1, strict=True))
    full = [h for h in rounds if h["group_size"] == PEERS]
    steady = (
        (full[-1]["swarm_samples"] - full[0]["swarm_samples"]) / (full[-1]["time"] - full[0]["time"])
        if len(full) >= 2
        else 0.0
    )
    return {
        "samples_per_s": (rounds[-1]["swarm_samples"] / seconds) if rounds else 0.0,
        "steady_samples_per_s": steady,
        "rounds": len(rounds),
        "median_round_s": statistics.median(h["duration_s"] for h in rounds) if rounds else None,
        "socket_sent_per_peer_per_round": sent / max(1, len(rounds)),
        "round_period_s": [h["round_period_s"] for h in rounds][-1:] or [None],
        "local_steps_per_round": statistics.median(h["local_steps"] for h in rounds) if rounds else None,
        "excluded_parts": sum(d.get("excluded_parts", 0) for d in data),
        "averaged": f"{len(full)}/{len(rounds)}",
        "aborted_or_failed_rounds": sum(
            v for k, v in data[0]["rounds_by_status"].items() if k != "committed"
        ),
        "points": points,
        "local_points": local_points,
    }


def run_hivemind(lab: NetLab, args: argparse.Namespace, model: str, workdir: Path, tag: str) -> dict:
    seconds = args.seconds
    outs = [workdir / f"{tag}-{i}.json" for i in range(PEERS)]
    status0 = workdir / f"{tag}-0.status.json"
    script = str(Path(__file__).parent / "hivemind_peer.py")
    processes = []
    origin = time.time()
    for i in range(PEERS):
        command = [
            sys.executable, script, "--index", str(i), "--host-maddr", f"/ip4/{lab.address(i)}/tcp/0",
            "--model", model, "--seconds", str(seconds), "--out", str(outs[i]),
            "--eval-every-s", str(args.eval_every_s), "--eval-batches", "8", "--origin", str(origin),
            "--batch-size", str(args.batch_size), "--target-batch", str(PEERS * args.batch_size),
            "--lr", str(args.lr), "--warmup-steps", str(args.warmup_steps),
            "--ready-dir", str(workdir / f"{tag}-ready"), "--peers", str(PEERS),
        ]  # fmt: skip
        if i == 0:
            command += ["--status", str(status0)]
        else:
            command += ["--peer", first_maddr(status0, processes[0])]
        processes.append(
            lab.run(i, command, log=workdir / f"{tag}-{i}.log", env={**os.environ, "PYTHONPATH": "."})
        )
    sockets0 = [lab.socket_bytes(i) for i in range(PEERS)]
    time.sleep(max(0.0, origin + seconds - 1 - time.time()))  # the peers stop at origin + seconds
    sockets1 = [lab.socket_bytes(i) for i in range(PEERS)]
    for process in processes:
        process.wait(timeout=seconds + 300)
    data = [json.loads(p.read_text()) for p in outs]
    epochs = data[0]["epochs"]
    sent = statistics.mean(socket_delta(a, b)[0] for a, b in zip(sockets0, sockets1, strict=True))
    times = data[0]["epoch_times"]
    steady = (
        (times[-1]["epoch"] - times[0]["epoch"]) * PEERS * args.batch_size / (times[-1]["t"] - times[0]["t"])
        if len(times) >= 2 and times[-1]["t"] > times[0]["t"]
        else 0.0
    )
    outcomes = data[0]["averaging"]
    # A step that outlived the window (waiting on departed peers) does not count.
    points = [p for p in data[0]["points"] if p["t"] <= seconds]
    return {
        "samples_per_s": epochs * PEERS * args.batch_size / seconds,
        "steady_samples_per_s": steady,
        "rounds": epochs,
        "median_round_s": seconds / epochs if epochs else None,
        "socket_sent_per_peer_per_round": sent / max(1, epochs),
        "round_period_s": [None],
        "local_steps_per_round": 1,
        "aborted_or_failed_rounds": None,
        # Peer 0's epochs by how its gradients were applied (hivemind.Optimizer's log): a failed
        # averaging falls back to the peer's local gradients, so peer 0 (the one evaluated) trains alone.
        "averaged": f"{outcomes['averaged']}/{outcomes['averaged'] + outcomes['local']}",
        "local_steps_per_peer": [d["local_steps"] for d in data],
        "start_barrier_s": [d.get("barrier_s") for d in data],
        "points": points,
        "local_points": points,  # peer 0's own model is the one evaluated
    }


def time_to(points: list[dict], target: float) -> float | None:
    for point in points:
        if point["eval_loss"] <= target:
            return point["t"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument(
        "--model", default="small", help="model preset to pretrain and fine-tune (default small)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per peer step (default 4)")
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="peak learning rate of fine-tuning (default 1e-3)"
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=50,
        help="linear lr warm-up of every method, in steps (default 50)",
    )
    parser.add_argument("--pretrain-steps", type=int, default=400, help="steps of the starting checkpoint")
    parser.add_argument(
        "--pretrained", default=None, help="reuse this checkpoint folder instead of pretraining"
    )
    parser.add_argument(
        "--workdir", default=None, help="keep logs and summaries here (default: a temporary folder)"
    )
    parser.add_argument("--eval-every-s", type=float, default=8.0, help="peer 0's evaluation interval")
    parser.add_argument("--rates", type=float, nargs="+", default=[0, 1000, 500, 100, 50, 20])
    parser.add_argument(
        "--methods",
        nargs="+",
        type=method_spec,
        default=["cocktail", "fp32", "hivemind"],
        help="cocktail (the defaults p=0.1, r=0.2, q=4), a cocktail setting such as cocktail:p=0.5,"
        " fp32, hivemind (default: cocktail fp32 hivemind)",
    )
    parser.add_argument(
        "--cpu-per-peer",
        type=float,
        default=(os.cpu_count() or 2) / PEERS,
        help="CPU cores each peer's processes get together (default: this machine's cores / 4; 0: no cap),"
        " so that a peer computes at a fixed speed and cannot use the cores an idle peer leaves",
    )
    parser.add_argument(
        "--round-period", type=float, default=2.0, help="Swarm's starting round period in seconds (default 2)"
    )
    parser.add_argument(
        "--target", type=float, default=None,
        help="target eval loss (default: what Swarm fp32 reaches on the unlimited link within 60%% of its run)",
    )  # fmt: skip
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="wan", help="stem of the result files (default wan)")
    parser.add_argument(
        "--warmup-rounds", type=int, default=0, help="exact rounds before the cocktail codec takes over"
    )
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="run every (rate, method) this many times, the methods taking turns (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--include",
        help="a result JSON of an earlier invocation with the same settings: its runs join this record"
        " (a sweep split over several invocations, say the slow links first)",
    )
    args = parser.parse_args()
    require_plotting()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    included = json.loads(Path(args.include).read_text()) if args.include else None
    if included is not None:
        if args.target is None or args.pretrained is None:
            parser.error(
                "--include needs --target and --pretrained: the runs of one record start from one"
                " checkpoint and are judged against one target"
            )
        clashes = _setting_clashes(included, args)
        if clashes:
            parser.error(f"--include {args.include} was run with other settings: {'; '.join(clashes)}")
    results = list(included["results"]) if included else []
    with tempfile.TemporaryDirectory(prefix="swarm-wan-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model = args.pretrained or str(workdir / "pretrained")
        if args.pretrained is None:
            pretrain(args, Path(model), workdir)
        runs = [
            (repeat, rate, method)
            for rate in args.rates
            for repeat in range(args.repeats)
            for method in args.methods
        ]
        for repeat, rate, method in runs:
            label = method.replace(":", "-").replace(",", "-").replace("=", "")
            tag = f"wan-{label}-{int(rate)}" + (f"-{repeat}" if args.repeats > 1 else "")
            with NetLab(
                PEERS, rate_mbit=rate or None, tag="swwan", cpu_per_node=args.cpu_per_peer or None
            ) as lab:
                if method == "hivemind":
                    result = run_hivemind(lab, args, model, workdir, tag)
                else:
                    result = run_swarm(lab, method, args, model, workdir, tag)
            result.update(method=method, rate_mbit=rate or None, repeat=repeat)
            print(json.dumps({k: v for k, v in result.items() if k != "points"}), flush=True)
            results.append(result)
    reference = next((r for r in results if r["method"] == "fp32" and r["rate_mbit"] is None), None)
    target = args.target
    if target is None and reference and reference["points"]:
        cutoff = 0.6 * args.seconds
        target = min(p["eval_loss"] for p in reference["points"] if p["t"] <= cutoff)
    for r in results:
        r["time_to_target_s"] = time_to(r["points"], target) if target is not None else None
        r["time_to_target_local_s"] = (
            time_to(r.get("local_points", []), target) if target is not None else None
        )
    import torch

    record = {
        "benchmark": "wan",
        "date": today(),
        "machine": machine(),
        "torch": torch.__version__,
        "model": args.model,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "pretrain_steps": args.pretrain_steps if args.pretrained is None else None,
        "pretrained": args.pretrained,
        "warmup_steps": args.warmup_steps,
        "peers": PEERS,
        "seconds": args.seconds,
        "target_eval_loss": target,
        "target_given": args.target is not None,
        "round_period_s": args.round_period,
        "cpu_per_peer": args.cpu_per_peer or None,
        "repeats": args.repeats,
        "rates": list(dict.fromkeys([*(included["rates"] if included else []), *args.rates])),
        "methods": list(dict.fromkeys([*(included["methods"] if included else []), *args.methods])),
        "code": code_commit(),
        "included": included["code"] if included and "code" in included else None,
        "results": results,
    }
    stem = f"{args.name}-{record['date']}"
    plot(record, save(args.out, stem, record, render(record)) / f"{stem}.png")
    print(render(record))


# The settings two invocations must share for their runs to stand in one table: (record key, argument).
SHARED_SETTINGS = [
    ("model", "model"), ("batch_size", "batch_size"), ("lr", "lr"), ("warmup_steps", "warmup_steps"),
    ("seconds", "seconds"), ("target_eval_loss", "target"), ("round_period_s", "round_period"),
    ("cpu_per_peer", "cpu_per_peer"), ("pretrained", "pretrained"), ("repeats", "repeats"),
]  # fmt: skip


def _setting_clashes(record: dict, args: argparse.Namespace) -> list[str]:
    """Where an earlier invocation's record was run with other settings than ``args``."""
    clashes = []
    for key, name in SHARED_SETTINGS:
        mine = getattr(args, name)
        if name == "cpu_per_peer":
            mine = mine or None
        if record.get(key) != mine:
            clashes.append(f"{key} {record.get(key)!r} there, {mine!r} here")
    return clashes


if __name__ == "__main__":
    main()
