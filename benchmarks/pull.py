"""Benchmark: checkpoint pull throughput from 1, 2 and 3 providers over 100 Mbit/s links.

Each provider (benchmarks/checkpoint_provider.py: the node's own checkpoint service on a synthetic
checkpoint of ``--size-mb``) lives in its own network namespace behind a tbf-shaped link of
``--rate`` Mbit/s in both directions; the downloader's namespace has an unlimited link. For n = 1,
2, 3 providers (a fresh lab each time, so no pointer outlives its run), ``swarm-node pull`` runs in
the downloader's namespace and is timed end to end (dial, pointers, manifest, every chunk verified,
folder written). Reported: MB/s and the speed-up over one provider. Target: 3 providers >= 2.5x one.
Writes results/pull-<date>.{json,md}.

    sudo .venv/bin/python benchmarks/pull.py [--size-mb 256] [--rate 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from checkpoint_provider import synthetic_files
from netlab import NetLab
from report import first_maddr, machine, save, today

MAX_PROVIDERS = 3


def one(providers: int, args: argparse.Namespace, workdir: Path) -> dict:
    rates: list[float | None] = [args.rate] * MAX_PROVIDERS + [None]
    script = str(Path(__file__).parent / "checkpoint_provider.py")
    with NetLab(MAX_PROVIDERS + 1, tag="swpull", node_rates_mbit=rates) as lab:
        statuses = [workdir / f"p{providers}-{i}.json" for i in range(providers)]
        first = None
        for i in range(providers):
            command = [sys.executable, script, "--host-maddr", f"/ip4/{lab.address(i)}/tcp/0",
                       "--size-mb", str(args.size_mb), "--status", str(statuses[i]), "--publish"]  # fmt: skip
            if first is not None:
                command += ["--peer", first_maddr(statuses[0], first)]
            process = lab.run(
                i, command, log=workdir / f"p{providers}-{i}.log", env={**os.environ, "PYTHONPATH": "."}
            )
            first = first or process
            first_maddr(statuses[i], process, timeout_s=300)
        assert first is not None
        out = workdir / f"pulled-{providers}"
        peer = first_maddr(statuses[0], first)
        time.sleep(2.0)  # let the last provider's pointer reach the DHT node that answers
        started = time.monotonic()
        pulled = subprocess.run(
            ["ip", "netns", "exec", lab.namespace(MAX_PROVIDERS), sys.executable, "-m", "node", "pull",
             "--peer", peer, "--out", str(out), "--timeout", "120"],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        seconds = time.monotonic() - started
    if pulled.returncode != 0:
        raise RuntimeError(f"pull from {providers} provider(s) failed:\n{pulled.stderr[-3000:]}")
    data = (out / "model.safetensors").read_bytes()
    expected = synthetic_files(args.size_mb)["model.safetensors"]
    if hashlib.sha256(data).digest() != hashlib.sha256(expected).digest():
        raise RuntimeError("the pulled checkpoint differs from what the providers hold")
    size = sum(p.stat().st_size for p in out.iterdir())
    line = next((x for x in pulled.stdout.splitlines() if "provider(s)" in x), "")
    transfer = re.search(r"of which ([0-9.]+) s transfer", pulled.stdout)
    if transfer is None:
        raise RuntimeError(f"pull printed no transfer time:\n{pulled.stdout[-2000:]}")
    transfer_s = float(transfer.group(1))
    return {"providers": providers, "seconds": seconds, "bytes": size, "mb_per_s": size / 1e6 / seconds,
            "transfer_s": transfer_s, "transfer_mb_per_s": size / 1e6 / transfer_s, "announced": line}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rate", type=float, default=100.0, help="providers' link rate, Mbit/s")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--workdir", default=None, help="keep logs here (default: a temporary folder)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-pull-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in range(1, MAX_PROVIDERS + 1):
            results.append(one(n, args, workdir))
            print(json.dumps(results[-1]), flush=True)
    base, base_transfer = results[0]["mb_per_s"], results[0]["transfer_mb_per_s"]
    for r in results:
        r["speedup"] = r["mb_per_s"] / base
        r["transfer_speedup"] = r["transfer_mb_per_s"] / base_transfer
    record = {"benchmark": "pull", "date": today(), "machine": machine(), "size_mb": args.size_mb,
              "rate_mbit": args.rate, "results": results}  # fmt: skip
    lines = [
        f"# Checkpoint pull from 1-{MAX_PROVIDERS} providers ({record['date']})",
        "",
        f"Machine: {record['machine']}. Checkpoint of {args.size_mb} MiB (synthetic, 4 MiB chunks); each"
        f" provider behind its own {args.rate:g} Mbit/s tbf link (both directions), the downloader's link"
        " unlimited; `swarm-node pull` (py-libp2p, Noise), every chunk verified. End to end: the whole"
        " command (interpreter start, dial, pointers, manifest, chunks, rename); transfer: from the first"
        " chunk request to the last chunk written, as the command reports it.",
        "",
        "| providers | end to end s | MB/s | speed-up vs 1 | transfer s | MB/s | speed-up vs 1 |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['providers']} | {r['seconds']:.1f} | {r['mb_per_s']:.1f} | {r['speedup']:.2f}x |"
            f" {r['transfer_s']:.1f} | {r['transfer_mb_per_s']:.1f} | {r['transfer_speedup']:.2f}x |"
            for r in results
        ],
        "",
        f"Link ceiling: {args.rate / 8:.1f} MB/s per provider. Target: 3 providers at least 2.5x one.",
        "",
        f"Reproduce: `sudo .venv/bin/python benchmarks/pull.py --size-mb {args.size_mb} --rate {args.rate:g}`.",
    ]
    save(args.out, f"pull-{record['date']}", record, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
