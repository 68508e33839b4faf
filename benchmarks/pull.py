"""Benchmark: checkpoint pull throughput from 1, 2 and 3 providers over 100 Mbit/s links, and the
pull's largest resident memory, fresh and resumed.

Each provider (benchmarks/checkpoint_provider.py: the node's own checkpoint service on a synthetic
checkpoint of ``--size-mb``) lives in its own network namespace behind a tbf-shaped link of
``--rate`` Mbit/s in both directions; the downloader's namespace has an unlimited link. For each
provider count of ``--providers`` (a fresh lab each time, so no pointer outlives its run),
``swarm-node pull`` runs in the downloader's namespace and is timed end to end (dial, pointers,
manifest, every chunk verified, folder written). With the smallest count, a second pull is killed
(SIGKILL) once half the checkpoint is on disk, then run again: the resumed pull. The peak resident
memory of every pull process is its VmHWM (``/proc/<pid>/status``). Reported: MB/s, the speed-up over one
provider, and peak RSS. Targets: 3 providers >= 2.5x one; peak RSS < 200 MB, fresh and resumed.
Writes results/pull-<date>.{json,md}.

    sudo .venv/bin/python benchmarks/pull.py [--size-mb 256] [--rate 100] [--providers 1,2,3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
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
POLL_S = 0.02
"""How often the running pull is checked (exited? half on disk?)."""
PULL_LIMIT_S = 1800.0
RSS_TARGET_MB = 200.0


def on_disk_bytes(folder: Path) -> int:
    """Bytes written under ``folder`` (allocated blocks: a file's holes do not count)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.is_file())


def high_water_kb(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM, kB); 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def run_pull(lab: NetLab, peer: str, out: Path, log: Path, *, kill_at_bytes: int | None = None) -> dict:
    """One ``swarm-node pull`` in the downloader's namespace, and its peak RSS: the VmHWM of its
    process (``ip netns exec`` execs the pull in place), read until it exits. Not ``ru_maxrss``: a
    child forked from this process (which imports torch and hivemind through checkpoint_provider)
    starts from this process's high-water mark. With ``kill_at_bytes``, SIGKILLed once that much
    of its partial folder is on disk."""
    partial = out.with_name(out.name + ".partial")
    command = ["ip", "netns", "exec", lab.namespace(MAX_PROVIDERS), sys.executable, "-m", "node", "pull",
               "--peer", peer, "--out", str(out), "--timeout", "120"]  # fmt: skip
    started = time.monotonic()
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    killed, peak_kb = False, 0
    while True:
        peak_kb = max(peak_kb, high_water_kb(process.pid))
        if process.poll() is not None:
            break
        if kill_at_bytes is not None and not killed and on_disk_bytes(partial) >= kill_at_bytes:
            process.send_signal(signal.SIGKILL)
            killed = True
        if time.monotonic() - started > PULL_LIMIT_S:
            process.send_signal(signal.SIGKILL)
            raise TimeoutError(f"the pull ran over {PULL_LIMIT_S:.0f} s; see {log}")
        time.sleep(POLL_S)
    seconds = time.monotonic() - started
    code = process.returncode
    text = log.read_text()
    result = {"seconds": seconds, "peak_rss_mb": peak_kb * 1024 / 1e6, "exit": code}
    if killed:
        result["killed_at_bytes"] = on_disk_bytes(partial)
        return result
    if code != 0:
        raise RuntimeError(f"the pull failed (exit {code}):\n{text[-3000:]}")
    transfer = re.search(r"of which ([0-9.]+) s transfer", text)
    resumed = re.search(r"([0-9.]+) MB resumed", text)
    if transfer is None or resumed is None:
        raise RuntimeError(f"pull printed no transfer time:\n{text[-2000:]}")
    result["transfer_s"] = float(transfer.group(1))
    result["resumed_mb"] = float(resumed.group(1))
    result["announced"] = next((x for x in text.splitlines() if "provider(s)" in x), "")
    return result


def check_pulled(out: Path, size_mb: int) -> int:
    """The pulled folder's size, once its model file is checked against the providers' bytes."""
    expected = hashlib.sha256(synthetic_files(size_mb)["model.safetensors"]).digest()
    with open(out / "model.safetensors", "rb") as f:
        if hashlib.file_digest(f, "sha256").digest() != expected:
            raise RuntimeError("the pulled checkpoint differs from what the providers hold")
    return sum(p.stat().st_size for p in out.iterdir())


def one(providers: int, args: argparse.Namespace, workdir: Path, *, resume: bool) -> dict:
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
        peer = first_maddr(statuses[0], first)
        time.sleep(2.0)  # let the last provider's pointer reach the DHT node that answers
        out = workdir / f"pulled-{providers}"
        fresh = run_pull(lab, peer, out, workdir / f"pull-{providers}.log")
        size = check_pulled(out, args.size_mb)
        result = {"providers": providers, "bytes": size, **fresh, "mb_per_s": size / 1e6 / fresh["seconds"],
                  "transfer_mb_per_s": size / 1e6 / fresh["transfer_s"]}  # fmt: skip
        if resume:
            again = workdir / f"resumed-{providers}"
            killed = run_pull(lab, peer, again, workdir / f"killed-{providers}.log", kill_at_bytes=size // 2)
            resumed = run_pull(lab, peer, again, workdir / f"resumed-{providers}.log")
            check_pulled(again, args.size_mb)
            fetched = size / 1e6 - resumed["resumed_mb"]
            result["killed"] = killed
            result["resumed"] = {**resumed, "fetched_mb": fetched,
                                 "transfer_mb_per_s": fetched / resumed["transfer_s"]}  # fmt: skip
    return result


def render(record: dict) -> str:
    results, size_mb, rate = record["results"], record["size_mb"], record["rate_mbit"]
    lines = [
        f"# Checkpoint pull from {', '.join(str(r['providers']) for r in results)} provider(s) ({record['date']})",
        "",
        f"Machine: {record['machine']}. Checkpoint of {size_mb} MiB (synthetic, 4 MiB chunks); each"
        f" provider behind its own {rate:g} Mbit/s tbf link (both directions), the downloader's link"
        " unlimited; `swarm-node pull` (py-libp2p, Noise), every chunk verified. End to end: the whole"
        " command (interpreter start, dial, pointers, manifest, chunks, rename); transfer: from the first"
        " chunk request to the last chunk written, as the command reports it. Peak RSS: the pull"
        f" process's VmHWM (`/proc/<pid>/status`, read every {POLL_S * 1000:.0f} ms until it exits).",
        "",
        "| providers | end to end s | MB/s | speed-up vs 1 | transfer s | MB/s | speed-up vs 1 | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['providers']} | {r['seconds']:.1f} | {r['mb_per_s']:.1f} | {r['speedup']:.2f}x |"
            f" {r['transfer_s']:.1f} | {r['transfer_mb_per_s']:.1f} | {r['transfer_speedup']:.2f}x |"
            f" {r['peak_rss_mb']:.0f} |"
            for r in results
        ],
        "",
        f"Link ceiling: {rate / 8:.1f} MB/s per provider. Target: 3 providers at least 2.5x one. The"
        f" providers and the pull share the machine's cores (with whatever else runs there): load average"
        f" {record['load_1m'][0]:.1f} at the start, {record['load_1m'][1]:.1f} at the end.",
    ]
    for r in results:
        if "resumed" not in r:
            continue
        killed, resumed = r["killed"], r["resumed"]
        lines += [
            "",
            f"Interrupted and resumed, {r['providers']} provider(s): a pull SIGKILLed with"
            f" {killed['killed_at_bytes'] / 1e6:.1f} MB on disk (peak RSS {killed['peak_rss_mb']:.0f} MB),"
            f" then run again: {resumed['resumed_mb']:.1f} MB resumed from disk, {resumed['fetched_mb']:.1f} MB"
            f" fetched in {resumed['transfer_s']:.1f} s of transfer ({resumed['transfer_mb_per_s']:.1f} MB/s),"
            f" {resumed['seconds']:.1f} s end to end, peak RSS {resumed['peak_rss_mb']:.0f} MB.",
        ]
    worst = max(max(r["peak_rss_mb"], r.get("resumed", {}).get("peak_rss_mb", 0.0)) for r in results)
    lines += [
        "",
        f"Peak RSS target: under {RSS_TARGET_MB:.0f} MB, fresh and resumed; largest measured {worst:.0f} MB.",
        "",
        f"Reproduce: `sudo .venv/bin/python benchmarks/pull.py --size-mb {size_mb} --rate {rate:g}"
        f" --providers {','.join(str(r['providers']) for r in results)}`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rate", type=float, default=100.0, help="providers' link rate, Mbit/s")
    parser.add_argument(
        "--providers", default="1,2,3", help=f"provider counts to run, comma-separated (1 to {MAX_PROVIDERS})"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--workdir", default=None, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--name", default=None, help="result file stem (default: pull-<date>)")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.providers.split(",")})
    if not all(1 <= n <= MAX_PROVIDERS for n in counts):
        parser.error(f"--providers takes counts from 1 to {MAX_PROVIDERS}")
    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="swarm-pull-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in counts:
            results.append(one(n, args, workdir, resume=n == counts[0]))
            print(json.dumps(results[-1]), flush=True)
    base, base_transfer = results[0]["mb_per_s"], results[0]["transfer_mb_per_s"]
    for r in results:  # relative to the smallest count run (one provider in a full sweep)
        r["speedup"] = r["mb_per_s"] / base
        r["transfer_speedup"] = r["transfer_mb_per_s"] / base_transfer
    record = {"benchmark": "pull", "date": today(), "machine": machine(), "size_mb": args.size_mb,
              "rate_mbit": args.rate, "load_1m": [load_before, os.getloadavg()[0]],
              "results": results}  # fmt: skip
    markdown = render(record)
    save(args.out, args.name or f"pull-{record['date']}", record, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
