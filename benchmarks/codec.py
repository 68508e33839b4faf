"""Benchmark: the CocktailSGD codec with error feedback, on the CPU or a GPU, against the memory floor.

One step as a member or owner runs it on a vector of N parameters:

    e += u                      error feedback: the new update joins what was not sent yet
    payload = encode(e)         random mask, top-k, q-bit quantisation (bytes on the host)
    e -= decode(payload)        what was sent leaves the residual (in place, selected entries only)

Reported per size: median time of that step (and of encode and decode alone), bits per parameter,
ratio against fp32. On a GPU also the memory floor: 12 bytes per parameter (read u, read and write
e) over the device's measured copy bandwidth (a large tensor copy, read + write), and the step's
multiple of it. The GPU run also checks that decoding the same bytes on the GPU and the CPU gives
bit-identical tensors, and that x' + C[Delta] is bit-identical on both (the mixed CPU/GPU pair).

    python benchmarks/codec.py                                  # CPU: 1M, 10M, 100M
    python benchmarks/codec.py --device cuda --sizes 100000000 1000000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from report import machine, save, today

from swarm.compression.cocktail import CocktailCodec, CocktailParams
from swarm.compression.codecs import CodecContext

REPEATS = 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, object]:
    _sync(device)
    started = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - started, result


def copy_bandwidth(device: torch.device, n: int = 1 << 28) -> float:
    """Bytes per second of a device-to-device copy (read + write) of n fp32 values."""
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = [_timed(partial(dst.copy_, src), device)[0] for _ in range(REPEATS)]
    return 2 * 4 * n / statistics.median(times)


def _sizes(n: int, params: CocktailParams, device: torch.device, topk_method: str, payload: bytes) -> dict:
    """What a result row is about: size, setting, method, and the payload's size against fp32."""
    return {
        "parameters": n,
        "device": str(device),
        "topk_method": topk_method,
        "sparsity": params.sparsity,
        "topk": params.topk,
        "bits": params.bits,
        "payload_bytes": len(payload),
        "bits_per_parameter": 8 * len(payload) / n,
        "ratio_vs_fp32": 4 * n / len(payload),
    }


def measure(n: int, params: CocktailParams, device: torch.device, topk_method: str) -> dict:
    if topk_method == "fused":
        return measure_fused(n, params, device)
    codec = CocktailCodec(params, topk_method=topk_method)
    generator = torch.Generator(device=device).manual_seed(n)
    error = torch.zeros(n, device=device)
    update = torch.empty(n, device=device).normal_(0, 0.01, generator=generator)
    step_s, encode_s, decode_s = [], [], []
    payload = b""

    def step(ctx: CodecContext) -> bytes:
        error.add_(update)
        data = codec.encode(error, ctx)
        codec.subtract_decoded(data, error, ctx)
        return data

    for round_id in range(REPEATS + 1):
        ctx = CodecContext(round=round_id, shard=0)
        seconds, payload = _timed(partial(step, ctx), device)  # type: ignore[assignment]
        if round_id:  # the first call warms up kernels and allocators
            step_s.append(seconds)
            encode_s.append(_timed(partial(codec.encode, error, ctx), device)[0])
            decode_s.append(_timed(partial(codec.decode, payload, n, ctx, device=device), device)[0])
    result = {
        **_sizes(n, params, device, topk_method, payload),
        "step_s": statistics.median(step_s),
        "encode_s": statistics.median(encode_s),
        "decode_s": statistics.median(decode_s),
    }
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _to_host(header: bytes, body: torch.Tensor) -> bytes:
    """The payload as the bytes a node sends: the body through a pinned buffer when it is on a GPU."""
    staging = torch.empty(body.numel(), dtype=torch.uint8, pin_memory=body.is_cuda)
    return header + staging.copy_(body).numpy().tobytes()


def measure_fused(n: int, params: CocktailParams, device: torch.device) -> dict:
    """The fused Triton step (``swarm.compression.fused``): the device work, then the payload to host bytes.

    ``step_s`` is the device part (e += u, the payload in device memory, e -= C[e]); ``to_host_s``
    the copy of its body into host bytes the network sends, timed apart because a node overlaps it
    with the next step's compute; ``decode_s`` the torch decoder of those bytes on the same device.
    """
    from swarm.compression.fused import feedback_encode

    codec = CocktailCodec(params, topk_method="sampled")
    generator = torch.Generator(device=device).manual_seed(n)
    error = torch.zeros(n, device=device)
    update = torch.empty(n, device=device).normal_(0, 0.01, generator=generator)
    step_s, host_s, decode_s, payload = [], [], [], b""
    breakdown: list[dict[str, float]] = []
    for round_id in range(REPEATS + 1):
        ctx = CodecContext(round=round_id, shard=0)
        phases: list = []
        step = partial(feedback_encode, codec, error, ctx, update, phases=phases)
        seconds, (header, body) = _timed(step, device)
        if phases:
            breakdown.append({b[0]: a[1].elapsed_time(b[1]) / 1e3 for a, b in itertools.pairwise(phases)})
        to_host, payload = _timed(partial(_to_host, header, body), device)
        if round_id:
            step_s.append(seconds)
            host_s.append(to_host)
            decode_s.append(_timed(partial(codec.decode, payload, n, ctx, device=device), device)[0])
    # The last step's bytes: a valid payload, and the buffer holds exactly what it did not send.
    before = error.clone()
    header, body = feedback_encode(codec, error, ctx, update)
    sent = codec.decode(_to_host(header, body), n, ctx, device=device)
    conserved = bool(torch.equal(error, (before + update) - sent))
    del before, sent
    result = {
        **_sizes(n, params, device, "fused", payload),
        "step_s": statistics.median(step_s),
        "to_host_s": statistics.median(host_s),
        "encode_s": None,
        "decode_s": statistics.median(decode_s),
        "feedback_conserved": conserved,
    }
    if breakdown:  # per phase, the median over the timed steps (CUDA events)
        result["phases_s"] = {
            name: statistics.median(b[name] for b in breakdown[1:]) for name in breakdown[0]
        }
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def cross_device_identity(device: torch.device, n: int = 10_000_000) -> dict:
    """Decode on the GPU and on the CPU; apply to x' on both: are the results bit-identical?"""
    codec = CocktailCodec()
    ctx = CodecContext(round=3, shard=1)
    values = torch.randn(n, generator=torch.Generator().manual_seed(7)) * 0.01
    payload = codec.encode(values.to(device), ctx)
    on_gpu = codec.decode(payload, n, ctx, device=device)
    on_cpu = codec.decode(payload, n, ctx)
    x = torch.randn(n, generator=torch.Generator().manual_seed(8))
    return {
        "decode_identical": bool(torch.equal(on_gpu.cpu(), on_cpu)),
        "x_update_identical": bool(torch.equal((x.to(device) + on_gpu).cpu(), x + on_cpu)),
        "encode_on_cpu_and_gpu_identical_bytes": payload == codec.encode(values, ctx),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=["exact", "sampled", "fused"],
        default=None,
        help="top-k methods (default: exact on the CPU; exact, sampled and fused on CUDA). fused on the"
        " CPU needs TRITON_INTERPRET=1: a check of the script, not a timing",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if device.type == "cpu":
        torch.set_num_threads(1)
    sizes = args.sizes or (
        [1_000_000, 10_000_000, 100_000_000] if device.type == "cpu" else [100_000_000, 1_000_000_000]
    )
    methods = args.methods or (["exact"] if device.type == "cpu" else ["exact", "sampled", "fused"])
    settings = [CocktailParams(), CocktailParams(sparsity=0.4, topk=0.5)]
    results = [measure(n, params, device, method) for params in settings for method in methods for n in sizes]
    record: dict = {
        "benchmark": f"codec_{device.type}",
        "date": today(),
        "machine": machine(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (1 thread)",
        "torch": torch.__version__,
        "results": results,
    }
    if device.type == "cuda":
        bandwidth = copy_bandwidth(device)
        record["copy_bandwidth_bytes_per_s"] = bandwidth
        for r in results:
            r["floor_s"] = 12 * r["parameters"] / bandwidth
            r["step_over_floor"] = r["step_s"] / r["floor_s"]
            if "to_host_s" in r:
                r["with_host_over_floor"] = (r["step_s"] + r["to_host_s"]) / r["floor_s"]
        record["cross_device"] = cross_device_identity(device)
    save(args.out, f"{record['benchmark']}-{record['date']}", record, render(record))
    print(render(record))


def render(record: dict) -> str:
    gpu = "copy_bandwidth_bytes_per_s" in record
    lines = [
        f"# CocktailSGD codec with error feedback, {record['device_name']} ({record['date']})",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}; median of {REPEATS}. step = e += u;"
        " encode(e); e -= decode (payload bytes to and from the host included).",
        "Top-k `fused`: the Triton kernels of `swarm/compression/fused.py` (sampled threshold); its step is"
        " the device work (payload in device memory, e -= C[e] done), `to host` the copy of the payload"
        " into host bytes through a pinned buffer, which a node overlaps with the next step.",
    ]
    if gpu:
        lines.append(
            f"Measured copy bandwidth {record['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s (read + write);"
            " floor = 12 bytes per parameter over it."
        )
    lines += [
        "",
        "| parameters | top-k | p | r | q | bits/param | ratio vs fp32 | step s | encode s | decode s |"
        " to host s |" + (" floor s | step / floor | (step + to host) / floor |" if gpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if gpu else ""),
    ]
    for r in record["results"]:
        line = (
            f"| {r['parameters']:,} | {r['topk_method']} | {r['sparsity']} | {r['topk']} | {r['bits']} |"
            f" {r['bits_per_parameter']:.3f} | {r['ratio_vs_fp32']:.0f}x | {r['step_s']:.4f} |"
            + (f" {r['encode_s']:.4f} |" if r["encode_s"] is not None else " - |")
            + f" {r['decode_s']:.4f} |"
            + (f" {r['to_host_s']:.4f} |" if "to_host_s" in r else " - |")
        )
        if gpu:
            line += f" {r['floor_s']:.4f} | {r['step_over_floor']:.2f}x |"
            line += f" {r['with_host_over_floor']:.2f}x |" if "with_host_over_floor" in r else " - |"
        lines.append(line)
    for r in record["results"]:
        if "phases_s" in r:
            parts = ", ".join(f"{name} {seconds * 1e3:.3f}" for name, seconds in r["phases_s"].items())
            lines += [
                "",
                f"Fused step, {r['parameters']:,} parameters, p={r['sparsity']}, ms per phase: {parts}",
            ]
    conserved = [r["feedback_conserved"] for r in record["results"] if "feedback_conserved" in r]
    if conserved:
        lines += [
            "",
            f"Fused step: error buffer exactly (e + u) - decode(payload) in every size: {all(conserved)}",
        ]
    if "cross_device" in record:
        lines += ["", f"Mixed CPU/GPU check: {json.dumps(record['cross_device'])}"]
    device = record["benchmark"].removeprefix("codec_")
    lines += ["", f"Reproduce: `python benchmarks/codec.py --device {device}`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
