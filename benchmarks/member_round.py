"""Benchmark: a member's own work in a cocktail round, from its local model x_i to its parts.

Before a round a member turns x_i - x' into one encoded part per shard (and decodes its own parts,
C[delta_i], which it subtracts from x_i if included). Two ways, on the CPU or with the model on a GPU:

    dense   the whole delta: a flat fp32 copy of x_i on the host, minus x', the NaN check over it,
            then ``encode`` of every shard (which reads the shard's support only)
    packed  what the node does: the NaN check over the parameters on their device, x_i - x' gathered
            on the round's supports only (``Span``, ``LocalTrainer.gather``; x' is a host tensor, its
            supports cross to the device), then ``encode_support`` on the model's device

Both make the same bytes (checked on the CPU, reported on a GPU). Reported per size: median wall
time and CPU time (all threads of this process) over the repeats, the bytes that cross from the
device to the host (a GPU member: the flat copy against the payloads), and the time to hash x'
(sha256, one core): what the node used to spend between rounds with training stopped, and now
spends on a worker thread while the next round trains (``GlobalCopy.hash_in_background``).

    python benchmarks/member_round.py                                         # CPU: 10M, 100M
    python benchmarks/member_round.py --device cuda --sizes 100000000 1000000000
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from report import machine, save, today

from node.trainer import LocalTrainer
from swarm.averaging.shards import ShardLayout, gather, shards_for, supports
from swarm.averaging.state import digest_of
from swarm.compression.cocktail import CocktailCodec
from swarm.compression.codecs import CodecContext, all_finite

REPEATS = 5
WIDTH = 2048
"""Parameters are WIDTH x WIDTH matrices, each followed by a WIDTH vector (a layer's weight and
bias), so that shards and supports cross parameter boundaries as in a real model."""


def _model(num_elements: int) -> torch.nn.Module:
    shapes: list[tuple[int, ...]] = []
    left = num_elements
    while left:
        for numel, shape in ((WIDTH * WIDTH, (WIDTH, WIDTH)), (WIDTH, (WIDTH,))):
            take = min(left, numel)
            if take:
                shapes.append(shape if take == numel else (take,))
                left -= take
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator) * 0.02) for shape in shapes]
    return torch.nn.ParameterList(params)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dense(trainer: LocalTrainer, x_prime: torch.Tensor, codec: CocktailCodec, layout: ShardLayout, r: int):
    delta = trainer.flat().sub_(x_prime)
    if not all_finite(delta):
        raise RuntimeError("non-finite delta")
    payloads = []
    for shard in range(layout.num_shards):
        start, end = layout.bounds(shard)
        ctx = CodecContext(round=r, shard=shard)
        payloads.append(codec.encode(delta[start:end], ctx))
        codec.decode_support(payloads[-1], end - start, ctx)
    return payloads


def _packed(trainer: LocalTrainer, x_prime: torch.Tensor, codec: CocktailCodec, layout: ShardLayout, r: int):
    if not trainer.all_finite():
        raise RuntimeError("non-finite x_i")
    spans = supports(codec, layout, r)
    delta = trainer.gather(spans).sub_(gather(x_prime, spans).to(trainer.device))
    payloads = []
    for shard, values in enumerate(delta.split([span.count for span in spans])):
        size = layout.size(shard)
        ctx = CodecContext(round=r, shard=shard)
        payloads.append(codec.encode_support(values, size, ctx))
        codec.decode_support(payloads[-1], size, ctx)
    return payloads


def _measure(fn, device: torch.device) -> tuple[float, float, list[bytes]]:
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    payloads = fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, payloads


def run_size(n: int, device: torch.device, repeats: int) -> dict:
    model = _model(n)
    trainer = LocalTrainer(
        model, device=device, peak_lr=1e-3, warmup_steps=1, total_steps=10, weight_decay=0.0,
        batch_size=1, micro_batch=None, joiner_warmup_steps=0,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    x_prime = trainer.flat() - torch.randn(n, generator=generator) * 1e-3
    codec = CocktailCodec()
    layout = ShardLayout(num_elements=n, num_shards=shards_for(16, n))
    row: dict = {"parameters": n, "shards": layout.num_shards, "device": device.type}
    for name, fn in (("dense", _dense), ("packed", _packed)):
        walls, cpus = [], []
        for r in range(1, repeats + 2):  # round 1 warms up (allocator, kernels)
            wall, cpu, payloads = _measure(lambda: fn(trainer, x_prime, codec, layout, r), device)  # noqa: B023
            if r > 1:
                walls.append(wall)
                cpus.append(cpu)
            row.setdefault(f"payloads_round{r}", {})[name] = payloads
        row[f"{name}_s"] = statistics.median(walls)
        row[f"{name}_cpu_s"] = statistics.median(cpus)
    same = all(
        row[f"payloads_round{r}"]["dense"] == row[f"payloads_round{r}"]["packed"]
        for r in range(1, repeats + 2)
    )
    payload_bytes = sum(len(p) for p in row["payloads_round1"]["packed"])
    for r in range(1, repeats + 2):
        del row[f"payloads_round{r}"]
    if device.type == "cpu" and not same:
        raise AssertionError("the packed contribution encoded other bytes than the dense one")
    hashing = []
    for _ in range(repeats):
        started = time.perf_counter()
        digest_of(x_prime)
        hashing.append(time.perf_counter() - started)
    row["digest_s"] = statistics.median(hashing)
    row["same_bytes"] = same
    row["payload_bytes"] = payload_bytes
    row["to_host_bytes"] = (
        {"dense": 4 * n + payload_bytes, "packed": payload_bytes} if device.type == "cuda" else None
    )
    return row


def render(record: dict) -> str:
    lines = [
        f"# A member's side of a cocktail round: dense delta against packed supports ({record['date']})",
        "",
        f"Machine: {record['machine']}; device {record['device_name']}; torch {record['torch']},"
        f" {record['threads']} CPU threads; defaults p=0.1, r=0.2, q=4; median of {record['repeats']} rounds"
        " after one warm-up round.",
        "",
        "| parameters | shards | dense s | dense CPU s | packed s | packed CPU s | speed-up | same bytes |"
        " payload MB | to host MB dense / packed | x' digest s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        host = row["to_host_bytes"]
        moved = "-" if host is None else f"{host['dense'] / 1e6:.0f} / {host['packed'] / 1e6:.1f}"
        lines.append(
            f"| {row['parameters']:,} | {row['shards']} | {row['dense_s']:.3f} | {row['dense_cpu_s']:.3f} |"
            f" {row['packed_s']:.3f} | {row['packed_cpu_s']:.3f} | {row['dense_s'] / row['packed_s']:.2f}x |"
            f" {row['same_bytes']} | {row['payload_bytes'] / 1e6:.2f} | {moved} | {row['digest_s']:.3f} |"
        )
    lines += [
        "",
        "dense: a flat fp32 copy of x_i on the host minus x', NaN check, `encode` per shard (and the own"
        " parts decoded); packed: NaN check on the parameters, x_i - x' gathered on the round's supports"
        " on the model's device, `encode_support` there (what `swarm-node` does). CPU s: CPU time of all"
        " threads of the process. x' digest: sha256 of x' on the host, which the node now computes on a"
        " worker thread while the next round trains.",
        "",
        f"Reproduce: `{record['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--name", default=None, help="result file stem (default member_round_<device>-<date>)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    rows = []
    for n in args.sizes:
        row = run_size(n, device, args.repeats)
        print(
            f"{n:>13,}: dense {row['dense_s']:.3f} s (CPU {row['dense_cpu_s']:.3f}), packed {row['packed_s']:.3f} s"
            f" (CPU {row['packed_cpu_s']:.3f}), same bytes {row['same_bytes']}, x' digest {row['digest_s']:.3f} s",
            flush=True,
        )
        rows.append(row)
    sizes = " ".join(str(n) for n in args.sizes)
    record = {
        "benchmark": "member_round",
        "date": today(),
        "machine": machine(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "command": f"python benchmarks/member_round.py --device {args.device} --sizes {sizes}"
        + (f" --threads {args.threads}" if args.threads else ""),
        "rows": rows,
    }
    stem = args.name or f"member_round_{device.type}-{record['date']}"
    folder = save(args.out, stem, record, render(record))
    print(f"wrote {folder / stem}.md")


if __name__ == "__main__":
    main()
