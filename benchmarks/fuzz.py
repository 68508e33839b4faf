"""Long fuzz runs: every network decoder (tests/fuzz/targets.py) under atheris (libFuzzer,
coverage-guided), ``--seconds`` per target, each in its own process.

Reported per target: inputs run, executions per second, coverage (libFuzzer's cov/ft counters),
resident memory early in the run and at its end (a decoder that leaks grows it), and whether any
input crashed the target (libFuzzer then writes it to the work folder as crash-*). Writes
results/fuzz-<date>.{json,md}.

    pip install atheris   # (extra "fuzz"; a manylinux wheel, nothing to compile)
    python benchmarks/fuzz.py [--seconds 120] [--targets cocktail_payload manifest ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+).*?exec/s: (\d+) rss: (\d+)Mb", re.M)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)


def child(name: str, seconds: int, workdir: Path) -> None:
    """Fuzz one target in this process until libFuzzer's time limit (it exits the process)."""
    import atheris
    import torch  # noqa: F401  (imported before instrumentation: only our code is instrumented)

    with atheris.instrument_imports(include=["swarm", "tests"]):
        from tests.fuzz.targets import TARGETS, seeds

    target = TARGETS[name]
    corpus = workdir / f"corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()[name]):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup(
        [
            sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-rss_limit_mb=4096", "-timeout=20",
            "-print_final_stats=1", f"-artifact_prefix={workdir}/crash-{name}-", "-max_len=8192",
        ],
        target,
    )  # fmt: skip
    atheris.Fuzz()


def run_target(name: str, seconds: int, workdir: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--seconds",
        str(seconds),
        "--workdir",
        str(workdir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 300)
    output = result.stdout + result.stderr
    (workdir / f"{name}.log").write_text(output)
    statuses = [tuple(int(g) for g in m.groups()) for m in _STATUS.finditer(output)]
    done = _DONE.search(output)
    runs = int(done.group(1)) if done else (statuses[-1][0] if statuses else 0)
    # Memory early (after a quarter of the status lines: imports and the first corpus are in) and last.
    early = statuses[len(statuses) // 4][4] if statuses else None
    crashes = sorted(p.name for p in workdir.glob(f"crash-{name}-*"))
    return {
        "target": name,
        "seconds": seconds,
        "runs": runs,
        "exec_per_s": round(runs / seconds) if seconds else None,
        "cov": statuses[-1][1] if statuses else None,
        "ft": statuses[-1][2] if statuses else None,
        "rss_early_mb": early,
        "rss_final_mb": statuses[-1][4] if statuses else None,
        "exit_code": result.returncode,
        "crashes": crashes,
        "tail": output[-1500:] if result.returncode != 0 else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=120, help="fuzzing time per target")
    parser.add_argument("--targets", nargs="*", default=None, help="default: all")
    parser.add_argument(
        "--workdir", default=None, help="corpus, logs and crash inputs (default: a temp folder)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, Path(args.workdir))
        return
    from report import machine, save, today

    from tests.fuzz.targets import TARGETS

    names = args.targets or sorted(TARGETS)
    with tempfile.TemporaryDirectory(prefix="swarm-fuzz-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = []
        for name in names:
            result = run_target(name, args.seconds, workdir)
            print(
                f"{name}: {result['runs']} runs, {result['exec_per_s']}/s, cov {result['cov']},"
                f" rss {result['rss_early_mb']} -> {result['rss_final_mb']} MB, exit {result['exit_code']}",
                flush=True,
            )
            results.append(result)
    from importlib.metadata import version

    record = {
        "benchmark": "fuzz",
        "date": today(),
        "machine": machine(),
        "atheris": version("atheris"),
        "results": results,
    }
    save(args.out, f"fuzz-{record['date']}", record, render(record))
    print(render(record))
    if any(r["exit_code"] != 0 for r in results):
        sys.exit(1)


def render(record: dict) -> str:
    lines = [
        f"# Fuzzing the network decoders ({record['date']})",
        "",
        f"Machine: {record['machine']}; atheris {record['atheris']} (libFuzzer, coverage-guided, one process per"
        " target). Targets: tests/fuzz/targets.py.",
        "",
        "| target | seconds | inputs run | exec/s | cov | ft | RSS early MB | RSS final MB | crashes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['target']} | {r['seconds']} | {r['runs']:,} | {r['exec_per_s']} | {r['cov']} | {r['ft']} |"
            f" {r['rss_early_mb']} | {r['rss_final_mb']} | {len(r['crashes']) or 'none'} |"
        )
    lines += [
        "",
        "A crash is any exception other than the decoder's own error type, or a decoded value that is not",
        "sane (wrong size, NaN/Inf). RSS early: at a quarter of the run (after imports and the first corpus).",
        "",
        f"Reproduce: `pip install atheris && python benchmarks/fuzz.py --seconds {record['results'][0]['seconds']}`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
