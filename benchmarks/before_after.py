"""Compare two sittings of the demo and round benchmarks: a change that must leave behaviour alone.

Reads two result files of ``demo_run.py`` (eval loss of x' per run, wall time, digest agreement)
and two of ``round_loopback.py`` (per setting: round time, event-loop CPU per round, bytes), taken
before and after a change on the same machine and day, and writes one dated table of each figure
with its change in percent and whether it is inside ``--tolerance`` (default ±10%).

    python benchmarks/before_after.py --name restructure \\
        --demo results/demo_run-before-DATE.json results/demo_run-after-DATE.json \\
        --loopback results/round_loopback-before-DATE.json results/round_loopback-after-DATE.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from report import machine, save, today

LOOPBACK_FIGURES = (
    ("median_loop_cpu_s", "loop CPU s per round"),
    ("median_round_s", "median round s"),
    ("median_transfer_s", "median transfer s"),
    ("sent_bytes_per_node_per_round", "bytes sent per node per round"),
)


def change(before: float, after: float) -> float:
    return 100.0 * (after - before) / before if before else float("nan")


def demo_figures(record: dict) -> dict[str, float]:
    """Per sitting: the mean over runs of the best node's eval loss of x', the mean wall time."""
    best = [min(node["eval_loss"] for node in run["nodes"]) for run in record["runs"]]
    return {
        "eval loss of x' (best node, mean of runs)": statistics.fmean(best),
        "wall s (mean of runs)": statistics.fmean(run["wall_s"] for run in record["runs"]),
    }


def demo_agree(record: dict) -> bool:
    return all(run["exit_code"] == 0 and not run["rounds_with_disagreeing_digests"] for run in record["runs"])


def loopback_rows(record: dict) -> dict[tuple[int, str], dict]:
    return {(r["nodes"], r["codec"]): r for r in record["results"]}


def compare(demo: tuple[dict, ...], loopback: tuple[dict, dict], tolerance: float) -> dict:
    """``demo`` is empty where only the round benchmark was run (a change to the protocol's plumbing)."""
    rows = []
    for figure, before in (demo_figures(demo[0]) if demo else {}).items():
        after = demo_figures(demo[1])[figure]
        rows.append({"setting": "demo", "figure": figure, "before": before, "after": after})
    old, new = loopback_rows(loopback[0]), loopback_rows(loopback[1])
    for setting in sorted(old.keys() & new.keys()):
        for key, figure in LOOPBACK_FIGURES:
            rows.append(
                {
                    "setting": f"{setting[0]} nodes, {setting[1]}",
                    "figure": figure,
                    "before": old[setting][key],
                    "after": new[setting][key],
                }
            )
    for row in rows:
        row["change_pct"] = change(row["before"], row["after"])
        row["within"] = abs(row["change_pct"]) <= tolerance
    return {
        "rows": rows,
        "digests_agree": {
            "demo": [demo_agree(d) for d in demo],
            "loopback": [all(r["digests_agree"] for r in lb["results"]) for lb in loopback],
        },
    }


def render(record: dict) -> str:
    lines = [
        f"# Before and after: {record['name']} ({record['date']})",
        "",
        f"Machine: {record['machine']}. Tolerance ±{record['tolerance']:g}%.",
        f"Before: {', '.join(record['before_files'])}. After: {', '.join(record['after_files'])}.",
        "",
        "| setting | figure | before | after | change | within |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['setting']} | {row['figure']} | {row['before']:.4g} | {row['after']:.4g}"
            f" | {row['change_pct']:+.1f}% | {'yes' if row['within'] else 'no'} |"
        )
    agree = record["digests_agree"]
    lines += ["", record["note"]] if record.get("note") else []
    lines += [
        "",
        "x' digests agree between nodes in every run:"
        + (f" demo before {agree['demo'][0]}, after {agree['demo'][1]};" if agree["demo"] else "")
        + f" loopback before {agree['loopback'][0]}, after {agree['loopback'][1]}.",
        "",
        f"Reproduce: `python benchmarks/before_after.py --name {record['name']}"
        + (" --demo BEFORE AFTER" if agree["demo"] else "")
        + " --loopback BEFORE AFTER` over the result files named above.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="what changed; the result file is <name>-<date>")
    parser.add_argument("--demo", nargs=2, type=Path, default=[], metavar=("BEFORE", "AFTER"))
    parser.add_argument("--loopback", nargs=2, type=Path, required=True, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--tolerance", type=float, default=10.0, help="percent")
    parser.add_argument("--note", default="", help="the conditions of the sittings, printed under the table")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    demo = tuple(json.loads(p.read_text()) for p in args.demo)
    loopback = tuple(json.loads(p.read_text()) for p in args.loopback)
    record = {
        "benchmark": "before_after",
        "name": args.name,
        "date": today(),
        "machine": machine(),
        "tolerance": args.tolerance,
        "note": args.note,
        "before_files": [p.name for p in (*args.demo[:1], args.loopback[0])],
        "after_files": [p.name for p in (*args.demo[1:], args.loopback[1])],
        **compare(demo, (loopback[0], loopback[1]), args.tolerance),
    }
    folder = save(args.out, f"{args.name}-{record['date']}", record, render(record))
    print(render(record))
    print(f"written to {folder}")


if __name__ == "__main__":
    main()
