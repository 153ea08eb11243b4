"""Tables for docs/findings.md from `rnnlab compare` grids.

    python benchmarks/compare_tables.py GRID_DIR table [--axis data_fraction|bptt] [--key test_ppl]
    python benchmarks/compare_tables.py GRID_DIR target --fraction 1 --ppl 5.8 [--bptt 35]

``table``: one row per cell, one column per data fraction (or BPTT window), mean ± sample std
over the seeds of ``GRID_DIR/results.csv`` (diverged runs counted and said).
``target``: per cell, the training tokens and wall time until the validation curve of each run
(``runs/<id>/metrics.jsonl``) first reaches ``--ppl``, linearly interpolated between the two
validations around the crossing (``rnnlab compare --target-ppl`` reports the first validation
at or below it instead, without interpolation).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

from rnnlab.lab.results import mean_std, valid_curve


def read_rows(grid: Path) -> list[dict[str, str]]:
    with (grid / "results.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def number(row: dict[str, str], key: str) -> float | None:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def mean_pm(values: list[float | None], digits: int = 2) -> str:
    kept = [v for v in values if v is not None]
    if not kept:
        return "n/a"
    mean, std = mean_std(kept)
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def table(grid: Path, axis: str, key: str) -> str:
    rows = read_rows(grid)
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    points = sorted({float(r[axis]) for r in rows})
    groups: dict[tuple[str, float], list[float | None]] = defaultdict(list)
    meta = {}
    for r in rows:
        groups[(r["cell"], float(r[axis]))].append(number(r, key) if r["status"] == "ok" else None)
        meta[r["cell"]] = (r["hidden"], int(r["params"]), float(r["lr"]))
    name = {"data_fraction": "data", "bptt": "τ"}[axis]
    out = [
        "| cell | hidden | params | lr | " + " | ".join(f"{name} {p:g}" for p in points) + " |",
        "|---|---|---|---|" + "---|" * len(points),
    ]
    for cell in cells:
        hidden, params, lr = meta[cell]
        cols = []
        for p in points:
            values = groups[(cell, p)]
            text = mean_pm(values)
            bad = sum(v is None for v in values)
            cols.append(text + (f" ({bad} of {len(values)} diverged)" if bad else ""))
        out.append(f"| {cell} | {hidden} | {params:,} | {lr:g} | " + " | ".join(cols) + " |")
    return "\n".join(out)


def reach(curve: list[dict], target: float) -> tuple[float, float] | None:
    """(tokens, wall time) where a validation curve (:func:`rnnlab.lab.results.valid_curve`)
    first reaches ``target``; None if it never does."""
    before = None
    points = [(p["tokens"], p["wall_time"], p["valid_ppl"]) for p in curve if "valid_ppl" in p]
    for tokens, wall, ppl in points:
        if ppl <= target:
            if before is None:
                return tokens, wall
            t0, w0, p0 = before
            a = (p0 - target) / (p0 - ppl)
            return t0 + a * (tokens - t0), w0 + a * (wall - w0)
        before = (tokens, wall, ppl)
    return None


def to_target(grid: Path, fraction: float, target: float, bptt: int | None) -> str:
    rows = [
        r
        for r in read_rows(grid)
        if float(r["data_fraction"]) == fraction
        and (bptt is None or int(r["bptt"]) == bptt)
        and r["status"] == "ok"
    ]
    out = [
        f"target: validation perplexity {target:g}, data fraction {fraction:g}",
        "| cell | tokens/s | tokens to target (k) | wall time to target (s) | reached |",
        "|---|---|---|---|---|",
    ]
    for cell in dict.fromkeys(r["cell"] for r in rows):
        runs = [r for r in rows if r["cell"] == cell]
        got = [reach(valid_curve(grid / "runs" / r["run_id"]), target) for r in runs]
        hit = [g for g in got if g]
        out.append(
            f"| {cell} | {mean_pm([number(r, 'tokens_per_s') for r in runs], 0)} | "
            f"{mean_pm([g[0] / 1000 for g in hit], 0)} | {mean_pm([g[1] for g in hit], 1)} | "
            f"{len(hit)}/{len(runs)} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", type=Path)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("table")
    t.add_argument("--axis", choices=["data_fraction", "bptt"], default="data_fraction")
    t.add_argument("--key", default="test_ppl")
    g = sub.add_parser("target")
    g.add_argument("--fraction", type=float, default=1.0)
    g.add_argument("--ppl", type=float, required=True)
    g.add_argument("--bptt", type=int)
    args = p.parse_args()
    if args.what == "table":
        print(table(args.grid, args.axis, args.key))
    else:
        print(to_target(args.grid, args.fraction, args.ppl, args.bptt))


if __name__ == "__main__":
    main()
