"""Benchmark: the CocktailSGD shard codec on the CPU: encode/decode time and compression ratio.

For each size, one shard of fresh N(0, 0.01) values: median of 3 encodes and decodes (one torch/numpy
thread), payload bytes, and the ratio against fp32. The GPU part of this benchmark (100M and 1B
parameters against the memory floor) needs the GPU machine and a torch implementation; not here yet.

    python benchmarks/codec.py [--sizes 1000000 10000000 100000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from swarm.compression.cocktail import CocktailCodec, CocktailParams
from swarm.compression.codecs import CodecContext


def measure(n: int, params: CocktailParams) -> dict:
    codec = CocktailCodec(params)
    values = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.01
    ctx = CodecContext(round=1, shard=0)
    encode_s, decode_s = [], []
    payload = b""
    for _ in range(3):
        started = time.perf_counter()
        payload = codec.encode(values, ctx)
        encode_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        codec.decode(payload, n, ctx)
        decode_s.append(time.perf_counter() - started)
    return {
        "parameters": n,
        "sparsity": params.sparsity,
        "topk": params.topk,
        "bits": params.bits,
        "payload_bytes": len(payload),
        "bits_per_parameter": 8 * len(payload) / n,
        "ratio_vs_fp32": 4 * n / len(payload),
        "encode_s": statistics.median(encode_s),
        "decode_s": statistics.median(decode_s),
        "encode_mparams_per_s": n / statistics.median(encode_s) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = [CocktailParams(), CocktailParams(sparsity=0.4, topk=0.5)]
    results = [measure(n, params) for params in settings for n in args.sizes]
    today = dt.date.today().isoformat()
    record = {
        "benchmark": "codec_cpu",
        "date": today,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"codec_cpu-{today}.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# CocktailSGD codec on the CPU ({today})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}; one thread; median of 3.",
        "",
        "| parameters | p | r | q | bits/param | ratio vs fp32 | encode s | decode s | encode Mparam/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['parameters']:,} | {r['sparsity']} | {r['topk']} | {r['bits']} | {r['bits_per_parameter']:.3f} |"
            f" {r['ratio_vs_fp32']:.0f}x | {r['encode_s']:.3f} | {r['decode_s']:.3f} | {r['encode_mparams_per_s']:.0f} |"
        )
    lines += ["", "Reproduce: `python benchmarks/codec.py`."]
    (out / f"codec_cpu-{today}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
