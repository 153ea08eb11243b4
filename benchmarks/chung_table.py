"""The Chung et al. 2014 table (docs/findings.md) from `rnnlab compare` grids on piano rolls.

    python benchmarks/chung_table.py GRID_DIR [GRID_DIR ...] --out benchmarks/results/chung2014/table.json

Per grid (one corpus) and cell, over its seeds: validation and test NLL per step (mean ± sample
std), the published test figure and the difference, the epochs run and the epoch of the best
validation, the wall time to the early stop and per epoch, and the training split's NLL of the
best checkpoint (scored without weight noise, as the test split is), beside the paper's
training figure.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from _common import machine_info, write_report
from compare_tables import mean_pm as fmt

from rnnlab.data.rolls import load_rolls
from rnnlab.evaluation.rolls import evaluate_rolls
from rnnlab.lab.results import mean_std
from rnnlab.runs.load import load_model, set_threads

# Chung, Gulcehre, Cho & Bengio (2014), Table 2: NLL per step (tanh, GRU, LSTM).
PUBLISHED_TEST = {
    "jsb": (9.10, 8.54, 8.67),
    "nottingham": (3.13, 3.23, 3.20),
    "musedata": (6.23, 5.99, 6.23),
    "pianomidi": (9.03, 8.82, 9.03),
}
PUBLISHED_TRAIN = {
    "jsb": (8.82, 6.94, 8.15),
    "nottingham": (3.22, 2.79, 3.08),
    "musedata": (5.64, 5.06, 5.18),
    "pianomidi": (5.64, 4.93, 6.49),
}
CELLS = ("rnn", "gru", "gru-reset-before", "lstm")
NAMES = {"rnn": "tanh", "gru": "GRU", "gru-reset-before": "GRU, reset before", "lstm": "LSTM"}
COLUMN = {"rnn": 0, "gru": 1, "gru-reset-before": 1, "lstm": 2}  # the paper's column per cell
CORPUS_NAMES = {
    "jsb": "JSB Chorales",
    "nottingham": "Nottingham",
    "musedata": "MuseData",
    "pianomidi": "Piano-midi.de",
}


def best_epoch(run_dir: Path) -> int:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open(encoding="utf-8")]
    valid = [r for r in rows if r.get("kind") == "valid"]
    return min(valid, key=lambda r: r["valid_nll"])["epoch"]


def grid_rows(grid: Path) -> tuple[str, list[dict]]:
    spec = json.loads((grid / "grid.json").read_text(encoding="utf-8"))
    corpus = spec["data"]["corpus"]
    data = load_rolls(corpus)
    rows = []
    with (grid / "results.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            run_dir = grid / "runs" / row["run_id"]
            results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
            model, _, _ = load_model(run_dir)
            rows.append(
                {
                    "run_id": row["run_id"],
                    "cell": row["cell"],
                    "hidden": int(row["hidden"]),
                    "params": int(row["params"]),
                    "lr": float(row["lr"]),
                    "seed": int(row["seed"]),
                    "valid_nll": float(row["valid_nll"]),
                    "test_nll": float(row["test_nll"]),
                    "train_nll": evaluate_rolls(model, data.train).loss,
                    "epochs": results["epochs"],
                    "best_epoch": best_epoch(run_dir),
                    "wall_time_s": results["wall_time"],
                }
            )
    return corpus, rows


def table(grids: dict[str, list[dict]]) -> str:
    out = [
        "| dataset | cell | hidden | params | lr | n | valid NLL | **test NLL** | published | "
        "difference | train NLL (published) | epochs run (best) | minutes to stop | s / epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus, rows in grids.items():
        by_cell = defaultdict(list)  # (cell, hidden): a larger run of a cell gets its own row
        for r in rows:
            by_cell[(r["cell"], r["hidden"])].append(r)
        for cell, hidden in sorted(by_cell, key=lambda k: (CELLS.index(k[0]), k[1])):
            i = COLUMN[cell]
            rs = by_cell[(cell, hidden)]
            test = [r["test_nll"] for r in rs]
            diff = mean_std(test)[0] - PUBLISHED_TEST[corpus][i]
            epochs = [r["epochs"] for r in rs]
            out.append(
                f"| {CORPUS_NAMES[corpus]} | {NAMES[cell]} | {rs[0]['hidden']} | "
                f"{rs[0]['params']:,} | {rs[0]['lr']:g} | {len(rs)} | "
                f"{fmt([r['valid_nll'] for r in rs])} | **{fmt(test)}** | "
                f"{PUBLISHED_TEST[corpus][i]:.2f} | {diff:+.2f} | "
                f"{fmt([r['train_nll'] for r in rs])} ({PUBLISHED_TRAIN[corpus][i]:.2f}) | "
                f"{sum(epochs) / len(epochs):.0f} ({sum(r['best_epoch'] for r in rs) / len(rs):.0f}) | "
                f"{sum(r['wall_time_s'] for r in rs) / len(rs) / 60:.1f} | "
                f"{sum(r['wall_time_s'] / r['epochs'] for r in rs) / len(rs):.2f} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grids", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    set_threads(args.threads)
    grids: dict[str, list[dict]] = defaultdict(list)
    for g in args.grids:  # several grids of one corpus (e.g. another cell) join its rows
        corpus, rows = grid_rows(g)
        grids[corpus] += rows
    text = table(grids)
    print(text)
    write_report(args.out, {"machine": machine_info(), "grids": grids, "table": text})


if __name__ == "__main__":
    main()
