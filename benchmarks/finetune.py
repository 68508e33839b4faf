"""Benchmark: fine-tuning a model pretrained here on a task it was not pretrained on, 4 real nodes.

1. A byte-level BPE tokenizer (the ``tokenizers`` library) trained on this Python's stdlib sources,
   and a Llama-style model (``LlamaConfig``, about 20M parameters by default) built from it.
2. Pretraining "here", in this process with plain torch, on task A: Python source code. The loss on
   held-out code before and after is recorded; the result is the founder's model folder (safetensors
   and tokenizer files, as ``AutoTokenizer`` and ``--model DIR`` load it).
3. Task B, which the model never saw: English prose (this machine's license and package documentation
   texts, paragraphs deduplicated), one JSONL record per paragraph; the founder packs it and holds out
   about one paragraph in 40 (``swarm.data.pack``).
4. Per codec (fp32, cocktail; same seed, same peer keys, so the same batches): 4 ``swarm-node join``
   processes on loopback, each in its own working directory: the founder with ``--model DIR --data
   FILE``, three volunteers with only ``--peer`` (and node settings: ports, local steps, files). They
   fine-tune on B for ``--rounds`` rounds (deterministic mode, ``--local-steps`` each). Then a 5th
   volunteer with only ``--peer`` joins the running swarm: its join time is from its process start to
   its first committed round, the model and data artifact fetch and the catch-up of x' included.
5. Per codec: wall time, rounds, bytes each node sent per round (the round's payload as the node
   counts it, and all its traffic from its status file), compression ratio, held-out eval loss of x'
   on B at the start (the pretrained model, evaluated here on the held-out batches every node uses)
   and after ``--rounds``, whether the x' digests agree in every round members shared, and the join.

The founder's side (texts, tokenizer, model, pretraining) is in ``finetune_tasks.py``. Writes
results/finetune-<date>.{json,md} (``--name`` to change the prefix). Run from the repository
root (about 16 minutes on 2 CPU cores at the defaults, 4 of them pretraining; ``--smoke`` is a 2-minute toy size):

    python benchmarks/finetune.py
    python benchmarks/finetune.py --smoke --out /tmp/ft
    python benchmarks/finetune.py --device cuda --vocab 16384 --hidden 768 --layers 12 --heads 12 \
        --ffn 2048 --seq-len 256 --batch-size 16 --pretrain-steps 400 --name finetune-cuda  # ~110M
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.processes
from finetune_tasks import code_texts, model_folder, pretrain, prose_texts, task_b_eval_loss
from report import first_maddr, machine, save, today

from swarm.identity import generate_identity
from tests.processes import kill_groups

ROOT = Path(__file__).resolve().parents[1]
NODES = 4
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
"""The node's log timestamps (``node.process``: ``%(asctime)s``, local time)."""


class Node:
    """One ``swarm-node join`` process in its own working directory (its own session, to kill its group)."""

    def __init__(self, folder: Path, command: list[str]) -> None:
        folder.mkdir(parents=True)
        self.folder, self.started = folder, time.time()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with open(folder / "node.log", "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "node", "join", "--ephemeral", *command, "--status-file", "status.json",
                 "--summary-json", "summary.json", "--checkpoint-dir", "checkpoints"],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def status(self) -> dict:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads((self.folder / "status.json").read_text())
        return {}

    def summary(self) -> dict:
        return json.loads((self.folder / "summary.json").read_text())

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"a node exited early ({self.process.returncode}); see {self.folder}/node.log")

    def log_time(self, needle: str) -> float | None:
        """When the node logged a line containing ``needle`` (Unix time), None if it never did."""
        for line in (self.folder / "node.log").read_text(errors="replace").splitlines():
            if needle in line:
                return dt.datetime.strptime(line[:23], LOG_TIME).timestamp()
        return None

    def artifact_bytes(self) -> dict[str, int]:
        """Bytes of each artifact this node holds in its store, by kind."""
        held: dict[str, int] = {}
        for manifest in (self.folder / "checkpoints" / "artifacts").glob("*/manifest.json"):
            if not manifest.parent.name.startswith("."):
                kind = json.loads(manifest.read_text())["kind"]
                held[kind] = sum(f.stat().st_size for f in manifest.parent.iterdir() if f.is_file())
        return held


def identity(workdir: Path, index: int) -> Path:
    """Node ``index``'s key, the same in both codecs' runs: its peer id fixes its batches."""
    path = workdir / "keys" / f"{index}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_identity(path, hashlib.sha256(f"swarm-finetune/{index}".encode()).digest())
    return path


def wait_until(nodes: list[Node], done, timeout_s: float, samples: list[list[dict]], what: str) -> None:
    """Poll every node's status (kept in ``samples``) until ``done()``; fail if a node exits first."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        for node, kept in zip(nodes, samples, strict=False):
            node.check_alive()
            kept.append(node.status())
        time.sleep(0.5)


def traffic_per_round(samples: list[dict], first: int, last: int) -> float | None:
    """Bytes the node's host sent per round, from its first status at round ``first`` or later to its
    first at ``last`` or later (the status file is rewritten every second: within a second of a commit)."""
    marks = [next((s for s in samples if s.get("round", 0) >= r), None) for r in (first, last)]
    if None in marks or marks[1]["round"] == marks[0]["round"]:
        return None
    return (marks[1]["bytes_sent"] - marks[0]["bytes_sent"]) / (marks[1]["round"] - marks[0]["round"])


def run_codec(codec: str, model_dir: Path, data: Path, workdir: Path, args: argparse.Namespace) -> dict:
    """The 4 founding nodes for ``args.rounds`` rounds, then the 5th volunteer's join; all stopped."""
    base = workdir / codec
    common = [
        "--host-maddr", "/ip4/127.0.0.1/tcp/0", "--threads", str(args.threads), "--device", args.device,
        "--local-steps", str(args.local_steps), "--min-group", str(NODES), "--join-grace", "120",
        "--join-timeout", "240", "--eval-every", str(args.eval_every), "--eval-batches", str(args.eval_batches),
        "--checkpoint-every", "0",
    ]  # fmt: skip
    founder = [
        "--run-id", f"ft-{codec}", "--model", str(model_dir), "--data", str(data), "--codec", codec,
        "--seed", str(args.seed), "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--warmup-steps", str(args.warmup_steps), "--total-steps",
        str(args.rounds * args.local_steps), "--joiner-warmup-steps", "0",
    ]  # fmt: skip
    nodes: list[Node] = []
    try:
        started = time.time()
        nodes.append(Node(base / "node0", [*common, *founder, "--identity", str(identity(workdir, 0))]))
        peer = first_maddr(nodes[0].folder / "status.json", nodes[0].process, timeout_s=300)
        for i in range(1, NODES):
            volunteer = [*common, "--peer", peer, "--joiner-warmup-steps", "0"]
            nodes.append(Node(base / f"node{i}", [*volunteer, "--identity", str(identity(workdir, i))]))
        samples: list[list[dict]] = [[] for _ in range(NODES + 1)]
        wait_until(
            nodes, lambda: all(n.status().get("round", 0) >= args.rounds for n in nodes),
            args.timeout_s, samples, f"round {args.rounds}",
        )  # fmt: skip
        reached = time.time()
        nodes.append(Node(base / "joiner", [*common, "--peer", peer]))
        wait_until(
            nodes, lambda: nodes[-1].status().get("rounds_completed", 0) >= 1, args.timeout_s, samples,
            "round with the 5th volunteer",
        )  # fmt: skip
        for node in nodes:
            node.process.send_signal(signal.SIGTERM)
        for node in nodes:
            if node.process.wait(timeout=300) != 0:
                raise RuntimeError(
                    f"a node exited with {node.process.returncode}; see {node.folder}/node.log"
                )
    finally:
        kill_groups(node.process for node in nodes)
    summaries = [node.summary() for node in nodes]
    return measure(codec, nodes, summaries, samples, started, reached, args)


def measure(codec, nodes, summaries, samples, started, reached, args) -> dict:
    """The run's figures from the nodes' summaries, status samples and the 5th volunteer's log."""
    history = [{h["round"]: h for h in s["history"]} for s in summaries]
    founder, rounds, joiner = history[0], args.rounds, nodes[-1]
    measured = [h[r] for h in history[:NODES] for r in range(2, rounds + 1) if r in h]
    evals = {r: h["eval_loss"] for r, h in sorted(founder.items()) if h.get("eval_loss") is not None}
    shared = sorted(set().union(*history))
    agree = [r for r in shared if len({h[r]["digest"] for h in history if r in h}) == 1]
    totals = [traffic_per_round(s, 2, rounds) for s in samples[:NODES]]
    first = min(history[-1])

    def mean(key: str) -> float:
        return sum(h[key] for h in measured) / len(measured)

    def since_start(needle: str) -> float | None:
        at = joiner.log_time(needle)
        return None if at is None else at - joiner.started

    return {
        "codec": codec,
        "rounds": rounds,
        "rounds_committed": {f"node{i}": s["rounds_completed"] for i, s in enumerate(summaries)},
        "seconds_to_round": founder[rounds]["time"] - started,
        "seconds_per_round": (founder[rounds]["time"] - founder[1]["time"]) / (rounds - 1),
        "payload_bytes_sent_per_node_round": mean("bytes_sent"),
        "fp32_bytes_per_node_round": mean("fp32_bytes"),
        "total_bytes_sent_per_node_round": None if None in totals else sum(totals) / len(totals),
        "compression_ratio": mean("compression_ratio"),
        "eval_loss": evals,
        "eval_loss_at_rounds": evals.get(rounds),
        "eval_loss_at_exit": summaries[0]["eval_loss"],
        "digest_rounds_compared": len(shared),
        "digest_rounds_agreeing": len(agree),
        "join": {
            "started_after_s": reached - started,
            "seconds_to_model_artifact": since_start("fetched the run's model artifact"),
            "seconds_to_data_artifact": since_start("fetched the run's data artifact"),
            "seconds_to_x": since_start("took x' from"),
            "first_round": first,
            "seconds_to_first_round": history[-1][first]["time"] - joiner.started,
            "artifact_bytes": joiner.artifact_bytes(),
            "catch_up": summaries[-1]["catch_up"],
            "rounds_committed": summaries[-1]["rounds_completed"],
        },
    }


SMOKE = {
    "vocab": 1024, "hidden": 64, "layers": 2, "heads": 2, "ffn": 128, "pretrain_steps": 30,
    "pretrain_seq_len": 64, "seq_len": 32, "rounds": 4, "eval_every": 2, "eval_batches": 4,
    "code_mb": 1.0, "prose_mb": 0.5,
}  # fmt: skip
"""``--smoke``: a toy size that runs the whole benchmark in about two minutes."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_argument_group("model (Llama-style; the defaults make 20.5M parameters)")
    size.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary size")
    size.add_argument("--hidden", type=int, default=384)
    size.add_argument("--layers", type=int, default=8)
    size.add_argument("--heads", type=int, default=6)
    size.add_argument("--ffn", type=int, default=1024, help="intermediate size of the MLP")
    pre = parser.add_argument_group("pretraining on task A (Python code), in this process")
    pre.add_argument("--code-mb", type=float, default=4.0, help="stdlib source read (tokenizer and task A)")
    pre.add_argument("--pretrain-steps", type=int, default=120)
    pre.add_argument("--pretrain-batch", type=int, default=8)
    pre.add_argument("--pretrain-seq-len", type=int, default=128)
    pre.add_argument("--pretrain-lr", type=float, default=2e-3)
    tune = parser.add_argument_group("fine-tuning on task B (English prose), 4 nodes")
    tune.add_argument("--prose-mb", type=float, default=2.0, help="English text written as JSONL")
    tune.add_argument(
        "--codecs", nargs="+", choices=["fp32", "fp16", "cocktail"], default=["fp32", "cocktail"]
    )
    tune.add_argument("--rounds", type=int, default=16, help="rounds of the 4 nodes before the 5th joins")
    tune.add_argument("--local-steps", type=int, default=2)
    tune.add_argument("--seq-len", type=int, default=64)
    tune.add_argument("--batch-size", type=int, default=4, help="sequences per node and local step")
    tune.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of fine-tuning")
    tune.add_argument("--warmup-steps", type=int, default=4)
    tune.add_argument("--eval-every", type=int, default=4)
    tune.add_argument("--eval-batches", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: pretraining and every node")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads of pretraining and each node"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=1200, help="limit of each wait for rounds")
    parser.add_argument("--smoke", action="store_true", help="a toy size (about two minutes)")
    parser.add_argument("--name", default="finetune", help="prefix of the result files' names")
    parser.add_argument("--workdir", help="keep models, data and logs here (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    for key, value in SMOKE.items() if args.smoke else ():
        if getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)
    if args.rounds < 2 or args.rounds % args.eval_every:
        parser.error("--rounds must be at least 2 and a multiple of --eval-every (x' is evaluated there)")
    started = time.monotonic()
    import torch
    import transformers
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="swarm-finetune-") as tmp:
        workdir = Path(args.workdir or tmp)
        model_dir, data = workdir / "founder" / "model", workdir / "founder" / "prose.jsonl"
        code, prose = code_texts(int(args.code_mb * 1e6)), prose_texts(int(args.prose_mb * 1e6))
        tokenizer, model = model_folder(model_dir, code, args)
        pretrained = pretrain(model, tokenizer, code, args)
        model.cpu().save_pretrained(model_dir, safe_serialization=True)
        data.write_text("".join(json.dumps({"text": p}) + "\n" for p in prose))
        loaded = AutoTokenizer.from_pretrained(model_dir)
        runs = {codec: run_codec(codec, model_dir, data, workdir, args) for codec in args.codecs}
        store = workdir / args.codecs[0] / "node0" / "checkpoints" / "artifacts"
        start_eval = task_b_eval_loss(model_dir, store, args)
        for run in runs.values():
            run["eval_loss_at_start"] = start_eval
        record = {
            "benchmark": "finetune",
            "date": today(),
            "machine": machine(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "args": vars(args),
            "parameters": pretrained["parameters"],
            "tokenizer": {"class": type(loaded).__name__, "vocab": len(loaded)},
            "task_a": {"files": len(code), "bytes": sum(map(len, code)), "pretraining": pretrained},
            "task_b": {"paragraphs": len(prose), "bytes": sum(map(len, prose))},
            "runs": runs,
            "wall_s": time.monotonic() - started,
            "command": " ".join(["python benchmarks/finetune.py", *sys.argv[1:]]),
        }
    stem = f"{args.name}-{record['date']}"
    save(args.out, stem, record, render(record))
    print(render(record))


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(record: dict) -> str:
    a, pre, mb = record["args"], record["task_a"]["pretraining"], 1e6
    lines = [
        f"# Fine-tuning a model pretrained here on a new task, {NODES} nodes, fp32 vs cocktail ({record['date']})",
        "",
        f"Machine: {record['machine']}; device {record['device']}"
        f"{' (' + record['gpu'] + ')' if record.get('gpu') else ', no GPU'}; torch {record['torch']},"
        f" transformers {record['transformers']}. Whole benchmark: {record['wall_s'] / 60:.1f} min.",
        "",
        f"Model: Llama-style, {record['parameters'] / 1e6:.1f}M parameters (hidden {a['hidden']}, {a['layers']}"
        f" layers, {a['heads']} heads, MLP {a['ffn']}), byte-level BPE vocabulary of {record['tokenizer']['vocab']}"
        f" trained here on the stdlib sources ({record['tokenizer']['class']} loads it).",
        f"Task A (pretraining, in-process torch): {record['task_a']['files']} stdlib files,"
        f" {record['task_a']['bytes'] / mb:.1f} MB; {pre['steps']} steps x {a['pretrain_batch']} x"
        f" {a['pretrain_seq_len']} tokens in {pre['seconds']:.0f} s; held-out code loss"
        f" {pre['held_out_loss_at_init']:.3f} at init -> {pre['held_out_loss_after']:.3f}.",
        f"Task B (fine-tuning, never seen): {record['task_b']['paragraphs']:,} English paragraphs"
        f" ({record['task_b']['bytes'] / mb:.1f} MB) of this machine's license and package documentation,"
        " as JSONL; the founder packs it and holds out ~1 in 40.",
        f"Fine-tuning: {NODES} `swarm-node join` processes on loopback (founder `--model DIR --data FILE`,"
        f" three with only `--peer`), {a['rounds']} rounds x {a['local_steps']} local steps x batch"
        f" {a['batch_size']} x {a['seq_len']} tokens per node, peak lr {a['lr']}, {a['warmup_steps']} warm-up"
        f" steps, cosine over the {a['rounds'] * a['local_steps']} steps; {a['threads']} torch thread(s) per node."
        f" Eval: {a['eval_batches']} held-out batches of task B.",
        "",
        "| codec | s to round R | s per round | payload kB sent / node / round | all kB sent / node / round |"
        " fp32 payload kB | compression | eval B at start | eval B at round R | x' digests agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for codec, r in record["runs"].items():
        total = r["total_bytes_sent_per_node_round"]
        lines.append(
            f"| {codec} | {r['seconds_to_round']:.0f} | {r['seconds_per_round']:.1f} |"
            f" {r['payload_bytes_sent_per_node_round'] / 1e3:,.0f} | {'-' if total is None else f'{total / 1e3:,.0f}'} |"
            f" {r['fp32_bytes_per_node_round'] / 1e3:,.0f} | {r['compression_ratio']:.1f}x |"
            f" {r['eval_loss_at_start']:.3f} | {r['eval_loss_at_rounds']:.3f} |"
            f" {r['digest_rounds_agreeing']}/{r['digest_rounds_compared']} rounds |"
        )
    lines += [""]
    for codec, r in record["runs"].items():
        curve = ", ".join(f"{k}: {v:.3f}" for k, v in r["eval_loss"].items())
        lines.append(f"Eval B of x' by round, {codec}: {curve} (at exit: {r['eval_loss_at_exit']:.3f}).")
    lines += [
        "",
        "The 5th volunteer, only `--peer` (and node settings), started once the 4 reached round R:",
        "",
        "| codec | model artifact at s | data artifact at s | x' at s | first committed round | at s | model MB |"
        " data MB | x' from |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for codec, r in record["runs"].items():
        j, held = r["join"], r["join"]["artifact_bytes"]
        lines.append(
            f"| {codec} | {seconds(j['seconds_to_model_artifact'])} | {seconds(j['seconds_to_data_artifact'])} |"
            f" {seconds(j['seconds_to_x'])} | {j['first_round']} | {j['seconds_to_first_round']:.1f} | {held.get('model', 0) / mb:.1f} |"
            f" {held.get('data', 0) / mb:.2f} | {j['catch_up'].get('source', '-')} |"
        )
    lines += [
        "",
        f"R = {a['rounds']}. s to round R: from the founder's process start (its packing of the data included)"
        " to its commit of round R; s per round: rounds 1 to R. payload: the round's own streams as the node"
        " counts them (history `bytes_sent`), rounds 2 to R, mean over the 4 nodes; all: every stream of the"
        " node's host (status file `bytes_sent`: rounds, and x' and artifacts served; not the DHT) over the"
        " same rounds, read within a second of each end; fp32 payload: what exact averaging moves (the"
        " node's `fp32_bytes`); compression: the node's `compression_ratio` (fp32 bytes over bytes sent and"
        " received). eval B at start: the pretrained model on the held-out batches every node evaluates,"
        " computed here; at round R: x' as the founder evaluated it. Digests: rounds whose x' agrees on every"
        " member holding that round (the 5th volunteer's included). Join times: from the 5th process's start."
        " MB: what its artifact store holds.",
        "",
        *(
            [
                "GPU row: missing; no GPU was lent for this run. On a CUDA machine the same script runs at"
                " 100M+ parameters (`--device cuda --hidden 768 --layers 12 ...`, see the module docstring).",
                "",
            ]
            if record["device"] == "cpu"
            else []
        ),
        f"Reproduce: `{record['command']}`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
