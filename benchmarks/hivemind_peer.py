"""One peer of the baseline: hivemind's stock ``hivemind.Optimizer`` on Swarm's task, for benchmarks/wan.py.

Same model, data, sampling, batch and peak learning rate as ``swarm-node join``; hivemind's defaults
otherwise, with fp16 gradient averaging (``Float16Compression``) and its stock fp32 state averaging
every epoch. ``--target-batch`` is the swarm-wide batch per optimizer step: the samples all peers
process in one step of Swarm's data-parallel schedule. Peer 0 writes its multiaddrs to ``--status``
and evaluates its parameters on the held-out split every ``--eval-every-s`` seconds.

    python benchmarks/hivemind_peer.py --index 0 --status s.json --out p0.json --seconds 120
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from functools import partial
from pathlib import Path

import torch

_OUTCOMES = {  # hivemind.Optimizer's log line -> how an epoch's step was taken
    "Averaged gradients with": "averaged",
    "Proceeding with local gradients": "local",
}


class _AveragingOutcomes(logging.Handler):
    """Counts how each epoch's step was taken, from hivemind.Optimizer's own log lines: with gradients
    averaged in a group, or with the peer's local gradients alone (averaging failed, or the peer saw
    no other peer at its epoch)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.counts = dict.fromkeys(_OUTCOMES.values(), 0)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for prefix, kind in _OUTCOMES.items():
            if message.startswith(prefix):
                self.counts[kind] += 1


def wait_for_peers(args: argparse.Namespace) -> float | None:
    """The start barrier: every peer begins training once all have built their optimizer.

    Without it peer 0 (started first, so the others can find it) runs epochs alone while the others
    are still loading; each joiner then finds itself behind, downloads the state, is behind again, and
    the run measures one peer training alone. Swarm's nodes wait the same way (``--min-group``).
    Returns the seconds waited, or None when the barrier timed out (the peer starts anyway).
    """
    ready = Path(args.ready_dir)
    ready.mkdir(parents=True, exist_ok=True)
    (ready / f"ready-{args.index}").write_text("")
    started = time.monotonic()
    while len(list(ready.glob("ready-*"))) < args.peers:
        if time.monotonic() - started > args.barrier_timeout_s:
            return None
        time.sleep(0.05)  # polling files: the peers share nothing else before the DHT carries them
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--peer", default=None, help="multiaddr of peer 0 (others)")
    parser.add_argument("--host-maddr", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--model", default="small")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--target-batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--origin", type=float, default=None, help="epoch seconds the run's clock starts at")
    parser.add_argument("--eval-every-s", type=float, default=15)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--status", default=None)
    parser.add_argument(
        "--ready-dir",
        default=None,
        help="start barrier: write ready-INDEX here once the optimizer exists, then wait for --peers of them",
    )
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--barrier-timeout-s", type=float, default=240)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import hivemind
    from hivemind.compression import Float16Compression

    outcomes = _AveragingOutcomes()
    hivemind_optimizer_log = logging.getLogger("hivemind.optim.optimizer")
    hivemind_optimizer_log.addHandler(outcomes)
    hivemind_optimizer_log.setLevel(logging.DEBUG)  # its per-epoch outcomes are DEBUG without verbose

    from node.trainer import causal_lm_loss
    from swarm.data.corpus import load_corpus
    from swarm.data.sampling import eval_batches, train_batch
    from swarm.models import build_model, resolve_model

    corpus = load_corpus(["stdlib"], max_bytes=64 * 1024 * 1024)
    model = build_model(resolve_model(args.model), seed=0)
    evals = eval_batches(
        corpus.eval, seq_len=args.seq_len, batch_size=args.batch_size, num_batches=args.eval_batches
    )
    dht = hivemind.DHT(
        initial_peers=[args.peer] if args.peer else None, host_maddrs=[args.host_maddr], start=True
    )
    if args.status:
        Path(args.status).write_text(json.dumps({"maddrs": [str(m) for m in dht.get_visible_maddrs()]}))
    warmup = args.warmup_steps
    optimizer = hivemind.Optimizer(
        dht=dht,
        run_id="hivemind-baseline",
        target_batch_size=args.target_batch,
        batch_size_per_step=args.batch_size,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.01),
        scheduler=partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda s: min(1.0, (s + 1) / warmup)),
        params=model.parameters(),
        matchmaking_time=3.0,
        averaging_timeout=60.0,
        grad_compression=Float16Compression(),
        verbose=False,
    )

    barrier_s = wait_for_peers(args) if args.ready_dir else None

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            losses = [causal_lm_loss(model, b).item() for b in evals]
        model.train()
        return sum(losses) / len(losses)

    started = args.origin or time.time()
    points = [{"t": time.time() - started, "epoch": 0, "eval_loss": evaluate()}] if args.index == 0 else []
    history = []
    next_eval = started + args.eval_every_s
    step = 0
    while time.time() - started < args.seconds:
        batch = train_batch(
            corpus.train, seq_len=args.seq_len, batch_size=args.batch_size, seed=0,
            peer_id=bytes([args.index]), round=0, step=step,
        )  # fmt: skip
        loss = causal_lm_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if not history or history[-1]["epoch"] != optimizer.local_epoch:
            history.append({"t": time.time() - started, "epoch": optimizer.local_epoch})
        if args.index == 0 and time.time() >= next_eval:
            points.append(
                {"t": time.time() - started, "epoch": optimizer.local_epoch, "eval_loss": evaluate()}
            )
            next_eval = time.time() + args.eval_every_s
    Path(args.out).write_text(
        json.dumps(
            {
                "index": args.index,
                "local_steps": step,
                "epochs": optimizer.local_epoch,
                "averaging": outcomes.counts,
                "points": points,
                "epoch_times": history,
                "barrier_s": barrier_s,
            }
        )
    )
    optimizer.shutdown()
    dht.shutdown()


if __name__ == "__main__":
    main()
