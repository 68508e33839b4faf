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

PEERS = 4


def pretrain(args: argparse.Namespace, path: Path, workdir: Path) -> None:
    """Train ``args.model`` alone on loopback for ``args.pretrain_steps`` steps and save it to ``path``."""
    rounds = max(1, args.pretrain_steps // 10)
    command = [
        sys.executable, "-m", "node", "join", "--run-id", "wan-pretrain", "--host-maddr", "/ip4/127.0.0.1/tcp/0",
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
            sys.executable, "-m", "node", "join", "--run-id", tag, "--host-maddr", f"/ip4/{lab.address(i)}/tcp/0",
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
        "code": _commit(),
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


def _commit() -> str | None:
    """The checkout's commit (with ``+`` when it has uncommitted changes), for the record."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            check=True, cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def render(record: dict) -> str:
    lines = [
        f"# Training over shaped links: Swarm cocktail, Swarm fp32, hivemind stock ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}"
        + (f"; code at {record['code']}" if record.get("code") else "")
        + (
            f" (the included runs: {record['included']})"
            if record.get("included") and record["included"] != record.get("code")
            else ""
        )
        + f"; {record['peers']} peers, each in its own network"
        f" namespace; fine-tuning model `{record['model']}` from a checkpoint pretrained alone"
        + (
            f" for {record['pretrain_steps']} steps"
            if record["pretrain_steps"] is not None
            else f" (`{record.get('pretrained')}`)"
        )
        + f"; batch {record['batch_size']} x 128 bytes per peer step, peak lr {record['lr']} after"
        f" {record.get('warmup_steps', 50)} warm-up steps; {record['seconds']:.0f} s of training per run; links shaped with tbf at both ends"
        " (no added delay).",
        f"Target eval loss: {record['target_eval_loss']:.3f} ("
        + (
            "given"
            if record.get("target_given")
            else "what Swarm fp32 reaches on the unlimited link within 60% of its run"
        )
        + f"); Swarm's round period starts at {record.get('round_period_s', 2.0)} s; "
        + (
            f"each peer capped at {record['cpu_per_peer']:g} CPU cores."
            if record.get("cpu_per_peer")
            else "no CPU cap per peer."
        )
        if record["target_eval_loss"] is not None
        else "Target eval loss: none (no reference run).",
        "",
        "| link Mbit/s | method | samples/s | steady samples/s | rounds | averaged | median round s | period s | local steps/round | MB sent/peer/round | final eval | time to target s | peer 0's model: time to target s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        final = r["points"][-1]["eval_loss"] if r["points"] else float("nan")
        median = f"{r['median_round_s']:.2f}" if r["median_round_s"] is not None else "-"
        period = r["round_period_s"][0]
        target = r["time_to_target_s"]
        local = r.get("time_to_target_local_s")
        lines.append(
            f"| {r['rate_mbit'] or 'unlimited'} | {r['method']} | {r['samples_per_s']:.1f} |"
            f" {r['steady_samples_per_s']:.1f} | {r['rounds']} | {r.get('averaged', '-')} | {median} |"
            f" {period if period is not None else '-'} | {r['local_steps_per_round']} |"
            f" {r['socket_sent_per_peer_per_round'] / 1e6:.2f} | {final:.3f} |"
            f" {'not reached' if target is None else f'{target:.0f}'} |"
            f" {'-' if not r.get('local_points') else 'not reached' if local is None else f'{local:.0f}'} |"
        )
    if record.get("repeats", 1) > 1:
        lines += ["", *_repeat_summary(record)]
    lines += [
        "",
        "samples/s: sequences the whole swarm trained per second of the run, start-up and joiners'",
        "download of the model included (hivemind: epochs x target batch). steady: from the first to the",
        "last round with all peers (hivemind: first to last epoch). MB sent: TCP payload each peer's",
        "sockets sent per round (hivemind: per epoch). averaged: Swarm: rounds committed by all peers, of all",
        "rounds; hivemind: peer 0's epochs whose gradients were averaged with others, of all its epochs",
        "(the others fell back to its local gradients, so it trained alone; peer 0's own model is the",
        "one evaluated, where Swarm evaluates the shared x'). time to target: of the model each method",
        "publishes (Swarm: x'; hivemind: peer 0's); peer 0's model: Swarm's x_0 = x' plus what peer 0 has",
        "not sent yet, the same kind of model as hivemind's row.",
        "",
        f"Reproduce: `sudo .venv/bin/python benchmarks/wan.py --seconds {record['seconds']:.0f}"
        f" --model {record['model']} --batch-size {record['batch_size']} --lr {record['lr']}"
        f" --warmup-steps {record.get('warmup_steps', 50)} --round-period {record.get('round_period_s', 2.0)}"
        f" --cpu-per-peer {record.get('cpu_per_peer') or 0:g}"
        + (
            f" --pretrain-steps {record['pretrain_steps']}"
            if record["pretrain_steps"] is not None
            else " --pretrained DIR"
        )
        + (f" --target {record['target_eval_loss']}" if record.get("target_given") else "")
        + (f" --repeats {record['repeats']}" if record.get("repeats", 1) > 1 else "")
        + (f" --rates {' '.join(f'{r:g}' for r in record['rates'])}" if "rates" in record else "")
        + (f" --methods {' '.join(record['methods'])}" if "methods" in record else "")
        + "`.",
    ]
    return "\n".join(lines) + "\n"


def _repeat_summary(record: dict) -> list[str]:
    """Per link and method, every repeat's time to target and their median (not reached counts
    as slower than any time)."""

    def times(runs: list[dict], key: str) -> str:
        values = sorted((r.get(key) for r in runs), key=lambda t: float("inf") if t is None else t)
        shown = ", ".join("-" if t is None else f"{t:.0f}" for t in values)
        middle = values[(len(values) - 1) // 2]  # the lower median: an even count never invents a time
        return f"{shown} | {'not reached' if middle is None else f'{middle:.0f}'}"

    lines = [
        "Repeats (the methods took turns on the same link; times in s, sorted; median: the lower middle):",
        "",
        "| link Mbit/s | method | x': times to target | median | peer 0's model: times | median | samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["rate_mbit"], r["method"]) for r in record["results"])
    for rate, method in keys:
        runs = [r for r in record["results"] if (r["rate_mbit"], r["method"]) == (rate, method)]
        speed = ", ".join(f"{r['samples_per_s']:.1f}" for r in runs)
        lines.append(
            f"| {rate or 'unlimited'} | {method} | {times(runs, 'time_to_target_s')} |"
            f" {times(runs, 'time_to_target_local_s')} | {speed} |"
        )
    return lines


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({r["rate_mbit"] or 0 for r in record["results"]}, reverse=True)
    fig, axes = plt.subplots(1, len(rates), figsize=(4 * len(rates), 3.8), sharey=True, squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for r in record["results"]:
            if (r["rate_mbit"] or 0) == rate and r["points"]:
                label = r["method"] + (f" #{r.get('repeat', 0)}" if record.get("repeats", 1) > 1 else "")
                ax.plot([p["t"] for p in r["points"]], [p["eval_loss"] for p in r["points"]], label=label)
        if record["target_eval_loss"] is not None:
            ax.axhline(record["target_eval_loss"], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{rate:.0f} Mbit/s" if rate else "unlimited")
        ax.set_xlabel("wall-clock s")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out eval loss (nats/byte)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
