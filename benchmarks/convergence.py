"""Benchmark: does the cocktail codec train as well as exact averaging on the same samples?

The default task (model ``tiny`` on the embedded stdlib corpus), 4 node processes on loopback in
deterministic mode: every round each node runs ``--local-steps`` steps, the whole group averages,
and the run stops after ``--rounds`` committed rounds, so every setting sees the same samples.
Held-out eval loss of x' is recorded every ``--eval-every`` rounds.

From scratch, per seed: fp32 codec; cocktail at the defaults (p=0.1, r=0.2, q=4) after
``--warmup-rounds`` exact rounds; cocktail aggressive (p=0.05, r=0.1, q=2) with the same warm-up.
Fine-tuning, per seed: start from the x' the fp32 run of the first seed ended with (saved with
--save-model) and train ``--finetune-rounds`` more rounds with fp32 or cocktail defaults, no
warm-up. With ``--flush`` (the default) every run trains one more round, which the cocktail runs
average exactly (``--exact-every``): that round moves what compression still holds back (members'
residuals, owners' errors) into x', as a run would before it hands over its final model. The eval
loss before that round and after it are both reported. Writes results/convergence-<date>.{json,md,png}.

    python benchmarks/convergence.py [--rounds 60] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.processes
from report import first_maddr, machine, require_plotting, save, today

from swarm.identity import generate_identity
from tests.processes import kill_groups, start_logged

NODES = 4
SETTINGS: dict[str, list[str]] = {
    "fp32": ["--codec", "fp32"],
    "cocktail": ["--codec", "cocktail"],
    "cocktail-aggressive": ["--codec", "cocktail", "--sparsity", "0.05", "--topk", "0.1", "--bits", "2"],
    # The authors' pre-training setting (after a 10% exact warm-up): 10x the exchange rate p*r.
    "cocktail-pretrain": ["--codec", "cocktail", "--sparsity", "0.4", "--topk", "0.5", "--bits", "4"],
}


def identity(workdir: Path, seed: int, index: int) -> Path:
    """Node ``index``'s key for ``seed``, the same in every setting and invocation: its peer id fixes
    its data order (and who conducts and owns which shard), so the settings train on the same batches."""
    path = workdir / "keys" / f"s{seed}-{index}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_identity(path, hashlib.sha256(f"swarm-convergence/{seed}/{index}".encode()).digest())
    return path


def run_swarm(
    name: str, first_args: list[str], args: argparse.Namespace, rounds: int, workdir: Path, seed: int
) -> list[dict]:
    """Start NODES processes (the first one starts the run), wait for them, return their summaries."""
    processes: list[subprocess.Popen] = []
    summaries = [workdir / f"{name}-{i}.summary.json" for i in range(NODES)]
    status0 = workdir / f"{name}-0.status.json"
    for stale in (status0, *summaries):  # an earlier run of this name in the same workdir
        stale.unlink(missing_ok=True)
    common = [
        sys.executable, "-m", "node", "join", "--ephemeral", "--run-id", name, "--host-maddr", "/ip4/127.0.0.1/tcp/0",
        "--threads", "1", "--local-steps", str(args.local_steps), "--min-group", str(NODES),
        "--join-grace", "120", "--join-timeout", "240", "--until-round", str(rounds),
        "--eval-every", str(args.eval_every), "--batch-size", str(args.batch_size),
    ]  # fmt: skip
    try:
        for i in range(NODES):
            command = [
                *common,
                "--summary-json",
                str(summaries[i]),
                "--identity",
                str(identity(workdir, seed, i)),
            ]
            if i == 0:
                command += ["--status-file", str(status0), *first_args]
            else:
                command += ["--peer", first_maddr(status0, processes[0], timeout_s=300)]
            processes.append(start_logged(command, workdir / f"{name}-{i}.log"))
        for process in processes:
            if process.wait(timeout=3600) != 0:
                raise RuntimeError(f"{name}: a node failed; see logs in {workdir}")
    finally:
        kill_groups(processes)
    return [json.loads(p.read_text()) for p in summaries]


@functools.cache
def initial_eval_loss(model: str, seed: int, batch_size: int) -> float:
    """Held-out eval loss of the run's x' before any training: the model the first node builds from
    ``seed``, on the windows every node evaluates (``eval_batches`` with the run's batch size)."""
    import torch

    from node.config import TrainingConfig
    from node.trainer import causal_lm_loss
    from swarm.data.corpus import load_corpus
    from swarm.data.sampling import eval_batches
    from swarm.models.build import build_model, resolve_model
    from swarm.run_settings import RunSettings

    corpus = load_corpus()
    network = build_model(resolve_model(model), seed=seed).eval()
    batches = eval_batches(
        corpus.eval,
        seq_len=RunSettings().seq_len,
        batch_size=batch_size,
        num_batches=TrainingConfig.eval_batches,
    )
    with torch.no_grad():
        return sum(causal_lm_loss(network, b).item() for b in batches) / len(batches)


def curve(summaries: list[dict]) -> dict:
    """Eval loss of x' against swarm samples (node 0's evaluations; every node's x' is the same)."""
    history = summaries[0]["history"]
    points = [(h["swarm_samples"], h["eval_loss"]) for h in history if h.get("eval_loss") is not None]
    rounds = min(len(s["history"]) for s in summaries)
    identical = all(len({s["history"][i]["digest"] for s in summaries}) == 1 for i in range(rounds))
    evals = {h["round"]: h["eval_loss"] for h in history if h.get("eval_loss") is not None}
    return {
        "points": points,
        "final_eval_loss": summaries[0]["eval_loss"],
        "eval_before_last_round": evals.get(history[-1]["round"] - 1),
        "samples": history[-1]["swarm_samples"],
        "rounds": len(history),
        "identical_x_every_round": identical,
        "compression_ratio": summaries[0]["compression_ratio"],
        "wall_s": max(s["duration_s"] for s in summaries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=60, help="rounds from scratch (0: fine-tuning only)")
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="sequences per node per local step (default: 16, the run's)",
    )
    parser.add_argument("--warmup-rounds", type=int, default=10)
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate from scratch (default: the run's)"
    )
    parser.add_argument("--finetune-rounds", type=int, default=30)
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="peak learning rate of fine-tuning")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--aggressive-seeds",
        type=int,
        default=None,
        help="run the aggressive setting for the first N seeds only",
    )
    parser.add_argument(
        "--flush",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one more round at the end, exact for cocktail runs (default: on)",
    )
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=["fp32", "cocktail", "cocktail-aggressive"],
        help="from-scratch settings to run (default: fp32 cocktail cocktail-aggressive)",
    )  # fmt: skip
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument(
        "--pretrained", help="fine-tune from this model folder (default: the first seed's fp32 run here)"
    )
    parser.add_argument(
        "--include", help="a result JSON of an earlier invocation (same settings) whose runs join this record"
    )
    parser.add_argument("--workdir", help="keep logs and summaries here (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    require_plotting()
    if args.finetune_rounds and not args.pretrained and ("fp32" not in args.settings or not args.rounds):
        parser.error(
            "fine-tuning starts from the fp32 run's model: keep fp32 in --settings or give --pretrained"
        )
    included = json.loads(Path(args.include).read_text()) if args.include else {}
    results: dict[str, dict] = included.get("results", {})
    commands = [*included.get("commands", []), " ".join(["python benchmarks/convergence.py", *sys.argv[1:]])]
    with tempfile.TemporaryDirectory(prefix="swarm-convergence-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        pretrained = Path(args.pretrained) if args.pretrained else workdir / "pretrained"
        schedule = ["--total-steps", str(args.rounds * args.local_steps)]
        if args.lr:
            schedule += ["--lr", str(args.lr)]
        extra = 1 if args.flush else 0
        aggressive_seeds = (
            args.seeds[: args.aggressive_seeds] if args.aggressive_seeds is not None else args.seeds
        )
        for seed in args.seeds if args.rounds else []:
            for setting, codec_args in SETTINGS.items():
                if setting not in args.settings:
                    continue
                if setting == "cocktail-aggressive" and seed not in aggressive_seeds:
                    continue
                name = f"scratch-{setting}-s{seed}"
                first = [*codec_args, *schedule, "--seed", str(seed)]
                if setting != "fp32":
                    first += ["--warmup-rounds", str(args.warmup_rounds)]
                    if args.flush:
                        first += ["--exact-every", str(args.rounds + 1)]
                if setting == "fp32" and seed == args.seeds[0] and not args.pretrained:
                    first += ["--save-model", str(pretrained)]
                results[name] = curve(run_swarm(name, first, args, args.rounds + extra, workdir, seed))
                results[name]["initial_eval_loss"] = initial_eval_loss("tiny", seed, args.batch_size)
                print(name, json.dumps({k: v for k, v in results[name].items() if k != "points"}), flush=True)
        finetune = [
            "--model", str(pretrained), "--lr", str(args.finetune_lr), "--total-steps",
            str(args.finetune_rounds * args.local_steps),
        ]  # fmt: skip
        for seed in args.seeds if args.finetune_rounds else []:
            for setting in ("fp32", "cocktail"):
                name = f"finetune-{setting}-s{seed}"
                first = [*SETTINGS[setting], *finetune, "--seed", str(seed + 100)]
                if setting != "fp32" and args.flush:
                    first += ["--exact-every", str(args.finetune_rounds + 1)]
                results[name] = curve(
                    run_swarm(name, first, args, args.finetune_rounds + extra, workdir, seed + 100)
                )
                results[name]["initial_eval_loss"] = initial_eval_loss(str(pretrained), seed, args.batch_size)
                print(name, json.dumps({k: v for k, v in results[name].items() if k != "points"}), flush=True)
    import torch

    record = {
        "benchmark": "convergence",
        "date": today(),
        "machine": machine(),
        "torch": torch.__version__,
        "nodes": NODES,
        "args": vars(args),
        "commands": commands,
        "results": results,
    }
    stem = f"convergence-{record['date']}{args.tag}"
    plot(record, save(args.out, stem, record, render(record)) / f"{stem}.png")
    print(render(record))


def render(record: dict) -> str:
    a, results = record["args"], record["results"]
    lines = [
        f"# Convergence: cocktail vs fp32 averaging on the same samples ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}. {record['nodes']} nodes on loopback, model"
        f" `tiny` on the stdlib corpus, batch {a.get('batch_size', 16)} x 128 bytes per node, {a['local_steps']} local steps per round.",
        f"From scratch: {a['rounds']} rounds, peak lr {a.get('lr') or 'the run default (3e-3)'}; cocktail"
        f" settings start after {a['warmup_rounds']} exact (fp32) warm-up rounds. Fine-tuning:"
        f" {a['finetune_rounds']} rounds from {a.get('pretrained') or 'the x of the first seed fp32 run'},"
        f" peak lr {a.get('finetune_lr', 1e-3)}, no warm-up rounds."
        + (
            " Every run then trains one more round, which the cocktail runs average exactly (the flush)."
            if a.get("flush")
            else ""
        ),
        "",
        "| run | seed | samples | initial eval | first eval | before last round | vs fp32 | final eval | vs fp32 |"
        " drop vs initial | drop vs first | ratio vs fp32 bytes | identical x' every round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        phase, setting, seed = (
            name.split("-", 1)[0],
            name.split("-", 1)[1].rsplit("-s", 1)[0],
            name.rsplit("-s", 1)[1],
        )
        baseline = results.get(f"{phase}-fp32-s{seed}")

        def versus(key: str, r: dict = r, baseline: dict | None = baseline) -> str:
            if not baseline or r.get(key) is None or baseline.get(key) is None:
                return "-"
            return f"{100 * (r[key] / baseline[key] - 1):+.2f}%"

        before = r.get("eval_before_last_round")
        start = r["points"][0][1] if r["points"] else float("nan")
        initial = r.get("initial_eval_loss")

        def drop(begin: float | None, r: dict = r) -> str:
            return "-" if begin is None else f"{100 * (1 - r['final_eval_loss'] / begin):.1f}%"

        lines.append(
            f"| {phase} {setting} | {seed} | {r['samples']:,} | {'-' if initial is None else f'{initial:.3f}'} |"
            f" {start:.3f} |"
            f" {'-' if before is None else f'{before:.3f}'} | {versus('eval_before_last_round')} |"
            f" {r['final_eval_loss']:.3f} | {versus('final_eval_loss')} | {drop(initial)} | {drop(start)} |"
            f" {r['compression_ratio']:.0f}x |"
            f" {r['identical_x_every_round']} |"
        )
    lines += [
        "",
        "initial eval: x' before any training (the first node's model, evaluated by this script). first eval:",
        "the first evaluation of a run (after one eval interval). drop: final eval below initial / first eval.",
        "vs fp32: eval loss relative to",
        "the fp32 run of the same phase and seed on the same samples (target: within +2%). ratio: fp32 payload",
        "bytes over bytes moved, whole run (warm-up rounds included, which move fp32).",
        "",
        "Reproduce (the runs above, from these commands; --include merges an earlier invocation's runs):",
        *[f"`{command}`" for command in record.get("commands", [])],
    ]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"scratch": "from scratch", "finetune": "fine-tuning from the fp32 x'"}
    phases = [phase for phase in titles if any(name.startswith(f"{phase}-") for name in record["results"])]
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.5), squeeze=False)
    panel = dict(zip(phases, axes[0], strict=True))
    styles = {"fp32": "-", "cocktail": "--", "cocktail-aggressive": ":", "cocktail-pretrain": "-."}
    for name, r in record["results"].items():
        phase, rest = name.split("-", 1)
        setting, seed = rest.rsplit("-s", 1)
        ax = panel[phase]
        xs, ys = zip(*r["points"], strict=True) if r["points"] else ((), ())
        ax.plot(xs, ys, styles[setting], label=f"{setting} seed {seed}", color=f"C{list(styles).index(setting)}",
                alpha=1.0 if seed == str(record["args"]["seeds"][0]) else 0.55)  # fmt: skip
    for phase, ax in panel.items():
        ax.set_title(titles[phase])
        ax.set_xlabel("samples (sequences, whole swarm)")
        ax.set_ylabel("held-out eval loss of x' (nats/byte)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    batch = record["args"].get("batch_size", 16)
    fig.suptitle(
        f"{record['nodes']} nodes, batch {batch} per node, cocktail vs fp32 averaging ({record['date']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
