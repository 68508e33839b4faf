"""Gather convergence results of several invocations (learning rates, warm-ups, batch sizes) into one grid.

Each ``benchmarks/convergence.py`` invocation runs one peak learning rate, one warm-up and one
per-node batch size; this reads their result JSON files and tabulates final eval loss (after the
flush round) per setting, seed, batch size and rounds, learning rate and warm-up, with cocktail's gap
to the fp32 run on the same samples (the same seed, batch size, rounds and learning rate, and, since
node i of seed s has the same peer id in every invocation, the same batches). It adds the comparison
a tuned user would make: each codec at its best learning rate of the grid, per seed and budget.
Writes results/convergence-grid-<date><tag>.{json,md}.

    python benchmarks/convergence_grid.py RESULT.json [RESULT.json ...] [--tag=-lr]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from report import machine, save, today


def rows(paths: list[Path]) -> list[dict]:
    """One row per from-scratch run: setting, seed, lr, warm-up rounds, final and pre-flush eval."""
    found = []
    for path in paths:
        record = json.loads(path.read_text())
        a = record["args"]
        for name, r in record["results"].items():
            phase, rest = name.split("-", 1)
            if phase != "scratch":
                continue
            setting, seed = rest.rsplit("-s", 1)
            found.append(
                {
                    "setting": setting,
                    "seed": int(seed),
                    "lr": a.get("lr") or 3e-3,
                    "warmup_rounds": a["warmup_rounds"] if setting != "fp32" else 0,
                    "rounds": a["rounds"],
                    "batch": a.get("batch_size", 16),
                    "samples": r["samples"],
                    "final": r["final_eval_loss"],
                    "before_flush": r.get("eval_before_last_round"),
                    "identical": r["identical_x_every_round"],
                    "source": path.name,
                }
            )
    return found


def budget(run: dict) -> tuple[int, int]:
    """What makes two runs' samples the same: per-node batch size and rounds (one local step each)."""
    return run.get("batch", 16), run["rounds"]


def render(record: dict) -> str:
    runs = record["runs"]
    fp32 = {(r["seed"], r["lr"], *budget(r)): r for r in runs if r["setting"] == "fp32"}
    lines = [
        f"# Convergence grid: cocktail vs fp32 over learning rates, warm-ups and batch sizes ({record['date']})",
        "",
        f"Machine: {record['machine']}. From scratch, 4 nodes, model `tiny`, one local step per round,"
        " final eval after the flush round; gap: against the fp32 run of the same seed, batch size, rounds"
        " and learning rate (same batches). batch: sequences of 128 bytes per node per step.",
        "",
        "| setting | warm-up rounds | batch | rounds | samples | seed | peak lr | final eval | fp32 final eval"
        " | gap | identical x' |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        runs,
        key=lambda r: (
            r["setting"] != "fp32",
            r["setting"],
            r["warmup_rounds"],
            *budget(r),
            r["seed"],
            r["lr"],
        ),
    )
    for r in order:
        base = fp32.get((r["seed"], r["lr"], *budget(r)))
        gap = f"{100 * (r['final'] / base['final'] - 1):+.2f}%" if base and r["setting"] != "fp32" else "-"
        shown = f"{base['final']:.3f}" if base else "-"
        lines.append(
            f"| {r['setting']} | {r['warmup_rounds']} | {r['batch']} | {r['rounds']} | {r.get('samples', 0):,} |"
            f" {r['seed']} | {r['lr']:g} | {r['final']:.3f} |"
            f" {shown} | {gap} | {r['identical']} |"
        )
    groups = sorted({(r["setting"], r["warmup_rounds"], *budget(r)) for r in runs if r["setting"] != "fp32"})
    lines += [""]
    for setting, warmup, batch, rounds in groups:
        paired = [
            100 * (r["final"] / fp32[key]["final"] - 1)
            for r in runs
            if (r["setting"], r["warmup_rounds"], *budget(r)) == (setting, warmup, batch, rounds)
            and (key := (r["seed"], r["lr"], batch, rounds)) in fp32
        ]
        if paired:
            lines.append(
                f"- {setting}, {warmup} warm-up rounds, batch {batch}, {rounds} rounds, same seed and lr:"
                f" mean gap {statistics.mean(paired):+.2f}% over {len(paired)} paired run(s),"
                f" from {min(paired):+.2f}% to {max(paired):+.2f}%"
            )
    lines += [
        "",
        "Each codec at its best learning rate of the grid, per seed and budget (warm-up as given):",
        "",
    ]
    lines += [
        "| setting | warm-up rounds | batch | rounds | seed | best lr | final eval | fp32 best lr | fp32 best | gap |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|---|"]
    gaps: dict[tuple[str, int, int, int], list[float]] = {}
    for group in groups:
        setting, warmup, batch, rounds = group
        for seed in sorted({r["seed"] for r in runs}):
            mine = [
                r
                for r in runs
                if (r["setting"], r["warmup_rounds"], *budget(r)) == group and r["seed"] == seed
            ]
            theirs = [
                r
                for r in runs
                if r["setting"] == "fp32" and r["seed"] == seed and budget(r) == (batch, rounds)
            ]
            if not mine or not theirs:
                continue
            best, best_fp32 = min(mine, key=lambda r: r["final"]), min(theirs, key=lambda r: r["final"])
            gap = 100 * (best["final"] / best_fp32["final"] - 1)
            gaps.setdefault(group, []).append(gap)
            lines.append(
                f"| {setting} | {warmup} | {batch} | {rounds} | {seed} | {best['lr']:g} | {best['final']:.3f} |"
                f" {best_fp32['lr']:g} | {best_fp32['final']:.3f} | {gap:+.2f}% |"
            )
    lines += [""]
    for (setting, warmup, batch, rounds), values in gaps.items():
        lines.append(
            f"- {setting}, {warmup} warm-up rounds, batch {batch}, {rounds} rounds, best vs best:"
            f" mean gap {statistics.mean(values):+.2f}% over {len(values)} seed(s)"
        )
    lines += ["", "Sources: " + ", ".join(sorted({r["source"] for r in runs})) + "."]
    lines += [
        "",
        "Reproduce: the `commands` of each source file, then this script over their JSON files.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    runs = rows(args.results)
    commands = []
    for path in args.results:
        commands += json.loads(path.read_text()).get("commands", [])
    record = {"benchmark": "convergence-grid", "date": today(), "machine": machine(), "commands": commands,
              "runs": runs}  # fmt: skip
    save(args.out, f"convergence-grid-{record['date']}{args.tag}", record, render(record))
    print(render(record))


if __name__ == "__main__":
    main()
