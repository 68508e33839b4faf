"""Update-rule simulation: how fast x' moves when members of very different speeds average (issue 31, item 4).

One process, tensors only, no networking. M members train one model; member i runs ``speed_i``
local steps per round (a round is one unit of wall time: a member with speed 0.5 finishes a step
every other round and sits out the rounds in between). Every round, the members that finished a
step send x_i - x' through the real codec (``swarm.compression``: fp32, or cocktail with its
defaults), one owner per shard reduces the decoded parts with the real ``swarm.averaging.reduce``
functions and owner error feedback (``OwnerErrors``), and every member applies the result as
``node.trainer.LocalTrainer.apply_round`` does: x' += C[Delta], x_i += C[Delta] - C[delta_i] (a
member whose step is still running adopts C[Delta] only). What changes between runs is the rule
that turns the parts into Delta:

- ``uniform``: today's mean of the deltas, weight 1 per member; the global step (which drives the
  learning-rate schedule) advances by the mean local step count, as ``exchange.py`` does.
- ``fednova``: FedNova's step-normalised mean, Delta = tau_eff * sum_i p_i delta_i / tau_i with
  p_i = samples_i / samples and its default tau_eff = sum_i p_i tau_i (also the global step's advance).
- ``fednova-max``: the same with tau_eff = max_i tau_i.
- ``fednova-work``: tau_eff = max_i tau_i and p_i by work, n_i tau_i / sum_j n_j tau_j (the plain
  mean for equal speeds; 0.59 delta_fast + 0.049 per slow delta for 1 fast at 12 + 99 at 1).
- ``drop-slow``: the ablation that keeps only the fastest member (a swarm of one, codec included).
- ``RULE*STEP`` (``fednova-max*2``): an outer step size on the rule's Delta; ``drop-slow*2`` is its
  control (the same step for the fast member alone).
- reference: the fastest member alone, no codec, x' = x_i after every round (run 4x longer).

Cocktail runs average their first ``--warmup-rounds`` rounds exactly, as ``CodecSchedule`` does.
The local optimiser is the real node's: torch AdamW (weight decay 0.01) with ``node.trainer.lr_at``'s
warm-up and cosine (peak ``--lr``, 50 warm-up and 3000 total global steps) and the per-member ramp over
its first 20 own steps (``--joiner-warmup``). Each member draws its own batches from the embedded
stdlib corpus (``swarm.data.sampling.train_batch`` with its own peer id); held-out eval loss of x'
uses ``eval_batches``. The model is a byte-level MLP language model (the last 8 bytes' embeddings,
one GELU hidden layer of 128, 54k parameters) rather than the ``tiny`` preset: a ``tiny`` step
takes 0.3-1.5 s on this machine's shared cores, and 1 fast + 99 slow members take 111 steps a
round. Progress is judged against wall time: how long the fast member alone takes to reach the
loss a rule reaches (``update_rules_report``). Writes results/update_rules-<date>.{json,md,png}.

    python benchmarks/update_rules.py [--rounds 40] [--jobs 3] [--lr 3e-3] [--scenarios spread 1+99 1+7]

At the defaults: about 20 minutes with ``--jobs 3`` on 2 shared cores (1+99 dominates: 111 steps and
100 encodes a round).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
sys.path.insert(0, str(Path(__file__).parent))
from report import machine, save, today
from update_rules_report import plot, render, summarise

from node.trainer import lr_at
from swarm.averaging.defence import find_outliers
from swarm.averaging.owner_errors import OwnerErrors
from swarm.averaging.reduce import apply_error_feedback, weighted_mean
from swarm.averaging.shards import ShardLayout, gather, supports
from swarm.compression.cocktail import CocktailCodec
from swarm.compression.codecs import CodecContext, Fp32Codec
from swarm.data.corpus import load_corpus
from swarm.data.sampling import eval_batches, train_batch

# Shapes: a flat parameter vector is [n] fp32; a batch is [b, CONTEXT + 1] int64 bytes (the last
# column is the target); a shard's support is [m] fp32 (every entry for fp32, every 10th for cocktail).

CONTEXT, EMBED, HIDDEN = 8, 16, 128
BATCH = 128
"""Windows per local step: each is CONTEXT bytes of input and the byte that follows."""
EVAL_WINDOWS, EVAL_BATCH = 4096, 1024
NUM_SHARDS = 1
"""One shard of 54k entries: the size of a `tiny` shard at the run's default 16 (top-k and the owner
error act per shard; smaller shards would only multiply the codec's fixed costs here)."""
OUTLIER_FACTOR = 1000.0
"""The owner's default outlier exclusion (``swarm.averaging.defence``)."""
RULES = ("uniform", "fednova", "fednova-max", "fednova-work", "drop-slow")
DEFAULT_RULES = ["uniform", "fednova", "fednova-max", "fednova-max*2", "drop-slow", "drop-slow*2"]
"""``drop-slow*2`` is the control for an outer step: the fast member alone with the same step."""
COCKTAIL_RULES = ["uniform", "fednova-max", "fednova-max*2", "drop-slow", "drop-slow*2"]
REFERENCE = "fast-alone"
REFERENCE_FACTOR = 4
"""The reference runs this many times longer, so that a rule ahead of it still maps to a time."""


@dataclass(frozen=True, kw_only=True)
class Optimiser:
    peak_lr: float = 3e-3
    warmup_steps: int = 50
    total_steps: int = 3000
    weight_decay: float = 0.01
    joiner_warmup: int = 20

    def lr(self, global_step: float, own_steps: int) -> float:
        """``LocalTrainer.lr_for``: the schedule at the global step, times the member's own ramp."""
        lr = lr_at(
            global_step, peak=self.peak_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps
        )
        return lr * (min(1.0, (own_steps + 1) / self.joiner_warmup) if self.joiner_warmup else 1.0)


class ByteMLP:
    """Next-byte prediction from the last CONTEXT bytes; the parameters are one flat vector ``[n]``."""

    def __init__(self) -> None:
        self.shapes = [(256, EMBED), (CONTEXT * EMBED, HIDDEN), (HIDDEN,), (HIDDEN, 256), (256,)]
        self.num_elements = sum(math.prod(shape) for shape in self.shapes)

    def init(self, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        pieces = [
            torch.randn(math.prod(s), generator=generator) * 0.02 if len(s) == 2 else torch.zeros(s[0])
            for s in self.shapes
        ]
        return torch.cat(pieces)

    def loss(self, flat: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per byte) of each window's last byte."""
        views, offset = [], 0
        for shape in self.shapes:
            views.append(flat[offset : offset + math.prod(shape)].view(shape))
            offset += math.prod(shape)
        embed, w1, b1, w2, b2 = views
        inputs = embed[batch[:, :CONTEXT]].reshape(batch.shape[0], CONTEXT * EMBED)  # [b, c*e]
        return F.cross_entropy(F.gelu(inputs @ w1 + b1) @ w2 + b2, batch[:, CONTEXT])


@dataclass(eq=False, kw_only=True)
class Member:
    peer_id: bytes
    speed: float
    """Local steps per round (per unit of wall time)."""
    x: torch.Tensor
    """x_i, a leaf the optimiser owns."""
    optimizer: torch.optim.Optimizer
    steps: int = 0
    since_round: int = 0
    pending: torch.Tensor | None = None
    """The gradient of a step that started in an earlier round and has not finished: taken where
    x_i was then, applied where x_i is when it finishes (a slow member's staleness)."""


def finished_by(speed: float, t: float) -> int:
    """Steps a member of ``speed`` has finished by wall time ``t`` (rounds)."""
    return math.floor(speed * t + 1e-9)


@dataclass(kw_only=True)
class Simulation:
    model: ByteMLP
    tokens: object
    evals: list[torch.Tensor]
    optimiser: Optimiser
    seed: int
    warmup_rounds: int
    cocktail: CocktailCodec = field(default_factory=CocktailCodec)

    def member(self, index: int, speed: float, x0: torch.Tensor) -> Member:
        x = x0.clone().requires_grad_()
        o = self.optimiser
        optimizer = torch.optim.AdamW([x], lr=o.peak_lr, weight_decay=o.weight_decay)
        return Member(peer_id=f"member-{index}".encode(), speed=speed, x=x, optimizer=optimizer)

    def gradient(self, m: Member, round_index: int) -> torch.Tensor:
        batch = train_batch(self.tokens, seq_len=CONTEXT, batch_size=BATCH, seed=self.seed,
                            peer_id=m.peer_id, round=round_index, step=m.steps)  # fmt: skip
        (grad,) = torch.autograd.grad(self.model.loss(m.x, batch), m.x)
        return grad

    def train_round(self, m: Member, r: int, global_step: int) -> None:
        """Round ``r``'s local work [r, r + 1): finish the steps that end in it, start the next one."""
        for _ in range(finished_by(m.speed, r), finished_by(m.speed, r + 1)):
            grad = m.pending if m.pending is not None else self.gradient(m, r)
            m.pending = None
            for group in m.optimizer.param_groups:
                group["lr"] = self.optimiser.lr(global_step + m.since_round, m.steps)
            m.x.grad = grad
            m.optimizer.step()
            m.x.grad = None
            m.steps += 1
            m.since_round += 1
        if m.pending is None and finished_by(m.speed, r + 1) < m.speed * (r + 1) - 1e-9:
            m.pending = self.gradient(m, r)  # the step in progress at the boundary started in this round

    @torch.no_grad()
    def eval_loss(self, x: torch.Tensor) -> float:
        return sum(float(self.model.loss(x, b)) for b in self.evals) / len(self.evals)

    def run(self, speeds: list[float], rule: str, codec_name: str, rounds: int) -> dict:
        """Train ``rounds`` rounds; the eval loss of x' at wall time 0, 1, ..., ``rounds``."""
        started = time.perf_counter()
        x_global = self.model.init(self.seed)
        fastest = max(range(len(speeds)), key=lambda i: speeds[i])
        kept = [fastest] if rule == REFERENCE or parse_rule(rule)[0] == "drop-slow" else range(len(speeds))
        members = [self.member(i, speeds[i], x_global) for i in kept]
        exact = Fp32Codec()
        layout = ShardLayout(num_elements=x_global.numel(), num_shards=NUM_SHARDS)
        errors = OwnerErrors(layout)
        global_step, points, log = 0, [(0.0, self.eval_loss(x_global))], []
        for r in range(rounds):
            for m in members:
                self.train_round(m, r, global_step)
            present = [m for m in members if m.since_round > 0]
            if rule == REFERENCE:
                x_global = members[0].x.detach().clone()
                increment, scale = present[0].since_round if present else 0, 1.0
            elif present:
                weights, scale, increment = rule_weights(rule, present)
                # CodecSchedule: the run's first warmup_rounds rounds are averaged exactly.
                codec = self.cocktail if codec_name == "cocktail" and r + 1 > self.warmup_rounds else exact
                with torch.no_grad():
                    self.reduce_and_apply(
                        present, members, weights, scale, x_global, codec, layout, errors, r + 1
                    )
            global_step += increment
            log.append({"present": len(present), "scale": round(scale, 4), "global_step": global_step})
            for m in members:
                m.since_round = 0
            points.append((float(r + 1), self.eval_loss(x_global)))
        return {"rule": rule, "codec": codec_name if rule != REFERENCE else "-", "points": points,
                "rounds": log, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip

    def reduce_and_apply(self, present, members, weights, scale, x_global, codec, layout, errors, round_id):
        """One round of the real update path on every shard: encode each part, reduce with the
        owner's error feedback, encode the result once, apply it to x' and every x_i."""
        spans = supports(codec, layout, round_id)
        counts = [span.count for span in spans]
        x_on = gather(x_global, spans)
        parts = {}
        for m in present:
            delta = gather(m.x.detach(), spans) - x_on  # x_i - x' on the round's supports
            parts[m.peer_id] = delta.split(counts)
        for shard, span in enumerate(spans):
            size = layout.size(shard)
            ctx = CodecContext(round=round_id, shard=shard)
            offset, stride = codec.support(size, ctx)
            decoded = {  # C[delta_i]: what the owner reads and what member i takes out of its residual
                peer: codec.decode_support(codec.encode_support(values[shard], size, ctx), size, ctx)
                for peer, values in parts.items()
            }
            contributions = {peer: (weights[peer], decoded[peer]) for peer in decoded}
            for peer in find_outliers(contributions, OUTLIER_FACTOR):
                del contributions[peer]
            aggregate = weighted_mean(contributions) * scale
            corrected = apply_error_feedback(aggregate, errors.on_support(shard, offset, stride))
            result = codec.decode_support(codec.encode_support(corrected, size, ctx), size, ctx)
            errors.keep(shard, offset, stride, corrected - result)
            window = slice(span.first, span.stop, span.stride)
            x_global[window] += result
            for m in members:
                own = decoded[m.peer_id] if m.peer_id in contributions else None
                m.x[window] += result if own is None else result - own


def rule_weights(rule: str, present: list[Member]) -> tuple[dict[bytes, float], float, int]:
    """(weight per member for ``weighted_mean``, the factor on its result, the global step's advance).

    FedNova's Delta = tau_eff * sum_i (n_i / N) delta_i / tau_i is ``weighted_mean`` with weights
    w_i = n_i / tau_i (samples per step) times tau_eff * sum_i w_i / N.
    """
    name, outer = parse_rule(rule)
    steps = {m.peer_id: m.since_round for m in present}
    if name in ("uniform", "drop-slow"):
        return {p: 1.0 for p in steps}, outer, round(sum(steps.values()) / len(steps))
    samples = {p: BATCH * t for p, t in steps.items()}
    total = sum(samples.values())
    weights = {p: samples[p] / steps[p] for p in steps}
    default = sum(samples[p] * steps[p] for p in steps) / total  # FedNova's sum_i p_i tau_i
    tau_eff = default if name == "fednova" else max(steps.values())
    if name == "fednova-work":  # p_i by work (samples x steps): the fast member's steps keep more weight
        work = {p: samples[p] * steps[p] for p in steps}
        return samples, outer * tau_eff * total / sum(work.values()), round(tau_eff)
    return weights, outer * tau_eff * sum(weights.values()) / total, round(tau_eff)


def parse_rule(rule: str) -> tuple[str, float]:
    """``fednova-max*1.5``: the rule ``fednova-max`` with an outer step size of 1.5 on its Delta."""
    name, _, outer = rule.partition("*")
    if name not in RULES:
        raise argparse.ArgumentTypeError(
            f"unknown rule {name!r} (one of {', '.join(RULES)}, optionally *STEP)"
        )
    return name, float(outer or 1.0)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    speeds: list[float]
    """Local steps per round of each member; the fastest runs 12 in every scenario."""
    description: str
    joiner_warmup: int | None = None
    """The members' own lr ramp when it differs from ``--joiner-warmup``."""
    codecs: tuple[str, ...] | None = None
    """The codecs it runs when not all of ``--codecs``."""


def scenarios(members_spread: int) -> dict[str, Scenario]:
    spread = [12 * 100 ** (-i / (members_spread - 1)) for i in range(members_spread)]
    one_plus_99 = [12.0] + [1.0] * 99
    return {
        "spread": Scenario(speeds=spread, description=f"{members_spread} members, speeds log-spaced from 12 to 0.12 steps per round (1-100x)"),
        "1+99": Scenario(speeds=one_plus_99, description="1 fast member (12 steps per round) + 99 slow ones (1 step per round)"),
        "1+7": Scenario(speeds=[12.0] + [1.5] * 7, description="1 fast member (12 steps per round) + 7 members 8x slower (1.5 steps per round)"),
        "1+99-noramp": Scenario(speeds=one_plus_99, description="1+99 without the members' own lr ramp (joiner warm-up 0), fp32", joiner_warmup=0, codecs=("fp32",)),
    }  # fmt: skip


def run_task(args: argparse.Namespace, name: str, codec: str) -> list[dict]:
    """One scenario's runs with one codec (``-``: the fast member alone); a worker process's job."""
    torch.set_num_threads(1)
    scenario = scenarios(args.spread_members)[name]
    corpus = load_corpus(["stdlib"])
    evals = eval_batches(
        corpus.eval, seq_len=CONTEXT, batch_size=EVAL_BATCH, num_batches=EVAL_WINDOWS // EVAL_BATCH
    )
    ramp = args.joiner_warmup if scenario.joiner_warmup is None else scenario.joiner_warmup
    sim = Simulation(model=ByteMLP(), tokens=corpus.train, evals=evals, optimiser=Optimiser(peak_lr=args.lr, joiner_warmup=ramp),
                     seed=args.seed, warmup_rounds=args.warmup_rounds)  # fmt: skip
    if codec == "-":
        return [sim.run(scenario.speeds, REFERENCE, "-", args.rounds * REFERENCE_FACTOR)]
    rules = args.rules if codec == "fp32" else args.cocktail_rules
    runs = [sim.run(scenario.speeds, rule, codec, args.rounds) for rule in rules]
    for run in runs:
        print(
            f"{name:12s} {run['rule']:16s} {codec:9s} eval {run['points'][-1][1]:.3f} ({run['seconds']} s)",
            flush=True,
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--scenarios", nargs="+", default=["spread", "1+99", "1+7", "1+99-noramp"])
    parser.add_argument("--codecs", nargs="+", default=["fp32", "cocktail"], choices=["fp32", "cocktail"])
    parser.add_argument(
        "--rules", nargs="+", default=DEFAULT_RULES, help="Rules; NAME*STEP adds an outer step size."
    )
    parser.add_argument(
        "--cocktail-rules", nargs="+", default=COCKTAIL_RULES, help="The rules run with cocktail."
    )
    parser.add_argument("--spread-members", type=int, default=16)
    parser.add_argument(
        "--lr", type=float, default=3e-3, help="Peak learning rate (the run's default: 3e-3)."
    )
    parser.add_argument("--joiner-warmup", type=int, default=20, help="Own steps of each member's lr ramp.")
    parser.add_argument(
        "--warmup-rounds", type=int, default=4, help="First rounds averaged exactly (cocktail runs)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="Worker processes (one thread each).")
    parser.add_argument("--name", default="update_rules")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    for rule in [*args.rules, *args.cocktail_rules]:
        parse_rule(rule)
    table = scenarios(args.spread_members)
    tasks = [
        (name, codec) for name in args.scenarios for codec in ["-", *(table[name].codecs or args.codecs)]
    ]
    tasks.sort(key=lambda task: (task[0] != "1+99", task[1] == "-"))  # the longest first
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {task: pool.submit(run_task, args, *task) for task in tasks}
        done = {task: future.result() for task, future in futures.items()}
    results = []
    for name in args.scenarios:
        scenario = table[name]
        runs = [run for codec in (scenario.codecs or args.codecs) for run in done[(name, codec)]]
        result = {"name": name, "description": scenario.description, "speeds": [round(v, 4) for v in scenario.speeds],
                  "joiner_warmup": args.joiner_warmup if scenario.joiner_warmup is None else scenario.joiner_warmup,
                  "reference": done[(name, "-")][0], "runs": runs}  # fmt: skip
        summarise(result, args.rounds)
        results.append(result)
    optimiser = Optimiser(peak_lr=args.lr, joiner_warmup=args.joiner_warmup)
    record = {
        "benchmark": "update_rules", "date": today(), "machine": machine(), "torch": torch.__version__,
        "threads": 1, "jobs": args.jobs, "seed": args.seed, "rounds": args.rounds,
        "reference_rounds": args.rounds * REFERENCE_FACTOR,
        "model": {"kind": "byte MLP", "context": CONTEXT, "embed": EMBED, "hidden": HIDDEN,
                  "parameters": ByteMLP().num_elements, "batch_windows": BATCH},
        "optimiser": vars(optimiser) | {"kind": "torch AdamW"}, "num_shards": NUM_SHARDS,
        "cocktail": vars(CocktailCodec().params), "warmup_rounds": args.warmup_rounds,
        "wall_s": round(time.perf_counter() - started, 1), "argv": sys.argv[1:], "scenarios": results,
    }  # fmt: skip
    stem = f"{args.name}-{record['date']}"
    folder = save(args.out, stem, record, render(record))
    if not args.no_plot:
        plot(record, folder / f"{stem}.png")
    print(render(record))


if __name__ == "__main__":
    main()
