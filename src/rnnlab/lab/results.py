"""Reading what the runs of a grid produced: rows, curves, selected rates, the table and its means.

A finished run's directory holds ``results.json`` (its final figures) and ``metrics.jsonl`` (the
logged training and validation rows). From them come:

- one **row** per run (:func:`collect_row`): a dict keyed by the columns of ``results.csv``
  (:func:`csv_columns`); the metric's own columns are named by
  :attr:`~rnnlab.lab.grid.Metric.valid_column` and its siblings;
- its **validation curve** (:func:`valid_curve`) and when it first reached the grid's target
  (:func:`add_time_to_target`); the default target is the worst final validation figure among
  the runs at their selected rate, so every such run reaches it;
- per (cell, fraction, tau), the **learning rate selected by validation**: the best mean final
  validation figure over the seeds (:func:`selected_rates`); read back from an earlier grid's
  table, each cell's single chosen rate for a second stage (:func:`chosen_rates`);
- the **mean ± sample std over seeds** per (cell, fraction, tau, lr) (:class:`SummaryRow`).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.lab.grid import NLL, PERPLEXITY, GridConfig, Metric, PlannedRun

RESULTS = "results.json"  # in a run directory: the run is finished
TABLE = "results.csv"  # in a grid directory: one row per finished run

Row = dict[str, Any]  # one run's row of the table, keyed by its columns
RateKey = tuple[str, float, int]  # (cell, data fraction, tau): where a learning rate is selected


# --------------------------------------------------------------------------- one run
def valid_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The logged validations of a run, one per step (a resumed run's re-logged rows win)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind") == "valid":
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def train_speed(run_dir: Path) -> float | None:
    """Median training throughput (tokens/s) over the logged training rows."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    speeds = [
        row["tokens_per_s"]
        for row in map(json.loads, filter(str.strip, path.read_text(encoding="utf-8").splitlines()))
        if row.get("kind") == "train" and row.get("tokens_per_s")
    ]
    return statistics.median(speeds) if speeds else None


def collect_row(run: PlannedRun, run_dir: Path, metric: Metric = PERPLEXITY) -> Row:
    """One CSV row: the grid point, sizes, final figures and throughput of a run."""
    results = json.loads((run_dir / RESULTS).read_text(encoding="utf-8"))
    row: Row = {
        "run_id": run.run_id,
        "cell": run.cell,
        "params": results.get("parameters", run.size.parameters),
        "recurrent_params": run.size.recurrent_parameters,
        "hidden": run.size.hidden_size,
        "embed": run.size.embed_size,
        "layers": run.config.model.num_layers,
        "data_fraction": run.data_fraction,
        "bptt": run.bptt,
        "seed": run.seed,
        "lr": run.lr,
        "status": "diverged" if "diverged" in results else "ok",
        "steps": results.get("steps"),
        "tokens": results.get("tokens"),
        "wall_time_s": results.get("wall_time"),
    }
    for split in ("valid", "test"):
        figures = results.get(split) or {}
        if metric is NLL:
            row[f"{split}_nll"] = figures.get("nll_per_step")
        else:
            row[f"{split}_ppl"] = figures.get("perplexity")
            row[f"{split}_bpc"] = figures.get("bpc")
    speed = train_speed(run_dir)
    if speed is None and results.get("wall_time"):
        speed = results["tokens"] / results["wall_time"]
    row["tokens_per_s"] = speed
    return row


def add_time_to_target(
    row: Row,
    curve: list[dict[str, Any]],
    target: float | None,
    metric: Metric = PERPLEXITY,
) -> None:
    """Tokens, steps and wall time at the first logged validation at or below ``target``."""
    row[metric.target_column] = target
    row["tokens_to_target"] = row["steps_to_target"] = row["wall_time_to_target_s"] = None
    if target is None:
        return
    for point in curve:
        if point[metric.valid_column] <= target * (1 + 1e-4):  # logs round to 6 digits
            row["tokens_to_target"] = point["tokens"]
            row["steps_to_target"] = point["step"]
            row["wall_time_to_target_s"] = point["wall_time"]
            return


# --------------------------------------------------------------------------- learning rates
def selected_rates(rows: Sequence[Row], metric: Metric = PERPLEXITY) -> dict[RateKey, float]:
    """Per (cell, fraction, tau): the learning rate with the best mean final validation figure
    over its finished seeds (lower is better for both perplexity and NLL)."""
    means: dict[RateKey, dict[float, list[float]]] = {}
    for row in rows:
        value = row.get(metric.valid_column)
        if row["status"] != "ok" or value is None or not math.isfinite(value):
            continue
        key = (row["cell"], row["data_fraction"], row["bptt"])
        means.setdefault(key, {}).setdefault(row["lr"], []).append(value)
    return {
        key: min(by_lr, key=lambda lr: (statistics.fmean(by_lr[lr]), lr))
        for key, by_lr in means.items()
    }


def is_selected(row: Row, chosen: dict[RateKey, float]) -> bool:
    """Whether ``row`` ran at the rate selected for its (cell, fraction, tau)."""
    return chosen.get((row["cell"], row["data_fraction"], row["bptt"])) == row["lr"]


def chosen_rates(grid_dir: str | Path) -> dict[str, float]:
    """Each cell's learning rate as selected by validation in an earlier grid (its
    ``results.csv``): the second stage of a search. A cell whose choice differs between the
    grid's fractions or windows has no single rate: :class:`ConfigError`."""
    path = Path(grid_dir) / TABLE
    rows, metric = _read_rate_table(path)
    per_cell: dict[str, set[float]] = {}
    for (cell, _, _), lr in selected_rates(rows, metric).items():
        per_cell.setdefault(cell, set()).add(lr)
    split = sorted(c for c, lrs in per_cell.items() if len(lrs) > 1)
    if split:
        raise ConfigError(
            f"{path}: the search chose different rates for {', '.join(split)} at different "
            "fractions or windows; give them as --lr cell=rate"
        )
    if not per_cell:
        raise ConfigError(f"{path} has no finished run to choose a learning rate from")
    return {cell: lrs.pop() for cell, lrs in per_cell.items()}


def _read_rate_table(path: Path) -> tuple[list[Row], Metric]:
    """The rows of a grid's ``results.csv`` with what selecting a rate needs, and its metric."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            raw = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"cannot read the searched grid's {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error):
        raise ConfigError(f"{path} is not a results table of rnnlab compare") from None
    metric = next((m for m in (PERPLEXITY, NLL) if raw and m.valid_column in raw[0]), None)
    needed = {"cell", "data_fraction", "bptt", "lr", "status"}
    if metric is None or not needed <= set(raw[0]):
        raise ConfigError(f"{path} is not a results table of rnnlab compare (or has no rows)")
    key = metric.valid_column
    rows = []
    for r in raw:
        try:
            value = float(r[key]) if r[key] not in ("", None) else None
            rows.append(
                {
                    "cell": r["cell"],
                    "data_fraction": float(r["data_fraction"]),
                    "bptt": int(r["bptt"]),
                    "lr": float(r["lr"]),
                    "status": r["status"],
                    key: value,
                }
            )
        except ValueError:
            raise ConfigError(f"{path}: unreadable row {r.get('run_id', '?')}") from None
    return rows, metric


# --------------------------------------------------------------------------- a whole grid
@dataclass
class GridResults:
    """The finished runs of a grid, read back: rows (with time to target), validation curves
    by run id, the rates selected by validation, and the target."""

    rows: list[Row]
    curves: dict[str, list[dict[str, Any]]]
    chosen: dict[RateKey, float]
    target: float | None


def collect_results(
    grid: GridConfig, out: Path, runs: Sequence[PlannedRun], metric: Metric
) -> GridResults:
    """Rows and curves of the runs among ``runs`` that finished in the grid directory ``out``."""
    finished = [r for r in runs if (r.directory(out) / RESULTS).is_file()]
    rows = [collect_row(r, r.directory(out), metric) for r in finished]
    curves = {r.run_id: valid_curve(r.directory(out)) for r in finished}
    chosen = selected_rates(rows, metric)
    target = grid.target_ppl
    if target is None:
        target = worst_selected(rows, chosen, metric)
    for row in rows:
        add_time_to_target(row, curves[row["run_id"]], target, metric)
    return GridResults(rows, curves, chosen, target)


def worst_selected(
    rows: Sequence[Row], chosen: dict[RateKey, float], metric: Metric
) -> float | None:
    """The worst final validation figure among the finished runs at their selected rate (the
    default target: every such run reaches it); None without one."""
    finals = [
        row[metric.valid_column]
        for row in rows
        if row["status"] == "ok"
        and row[metric.valid_column] is not None
        and is_selected(row, chosen)
    ]
    return max(finals) if finals else None


# --------------------------------------------------------------------------- the CSV
CSV_COLUMNS = (
    "run_id", "cell", "params", "recurrent_params", "hidden", "embed", "layers", "data_fraction",
    "bptt", "seed", "lr", "status", "steps", "tokens", "valid_ppl", "test_ppl", "valid_bpc",
    "test_bpc", "tokens_per_s", "wall_time_s", "target_ppl", "tokens_to_target",
    "steps_to_target", "wall_time_to_target_s",
)  # fmt: skip
_NLL_COLUMNS = {"valid_ppl": "valid_nll", "test_ppl": "test_nll", "target_ppl": "target_nll"}


def csv_columns(metric: Metric = PERPLEXITY) -> tuple[str, ...]:
    """The CSV columns: perplexity and bits per character for text, NLL per step for rolls."""
    if metric is PERPLEXITY:
        return CSV_COLUMNS
    return tuple(_NLL_COLUMNS.get(c, c) for c in CSV_COLUMNS if not c.endswith("_bpc"))


def write_csv(path: Path, rows: Sequence[Row], columns: Sequence[str] = CSV_COLUMNS) -> Path:
    """Write ``rows`` as a CSV table of ``columns`` (numbers to 6 significant digits)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: value_text(row.get(k), 6) for k in columns})
    return path


def value_text(value: Any, digits: int) -> str:
    """A value as table text: empty for None, floats to ``digits`` significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}"
    return str(value)


# --------------------------------------------------------------------------- means over seeds
def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def mean_pm_std(values: Sequence[float | None], fmt: str) -> str:
    """The finite ``values`` as "mean ± std" in format ``fmt`` ("n/a" std for one value, "–"
    for none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    mean, std = mean_std(vals)
    return f"{mean:{fmt}} ± {'n/a' if std is None else format(std, fmt)}"


@dataclass(frozen=True)
class SummaryRow:
    """One (cell, data fraction, tau, lr) group over its seeds; figures as "mean ± std" text
    over the finished runs ("–" when none finished)."""

    cell: str
    params: int  # of the group's first run
    data_fraction: float
    bptt: int
    lr: float | None
    n: int  # finished runs
    diverged: int
    valid: str  # the metric's final validation figure
    test: str  # the metric's test figure
    tokens_per_s: str
    wall_time_to_target_s: str
    tokens_to_target: str
    test_bpc: str | None  # text only (None for piano rolls)
    metric: Metric

    @property
    def rate_key(self) -> RateKey:
        """(cell, fraction, tau): where :func:`selected_rates` picks a rate."""
        return self.cell, self.data_fraction, self.bptt

    def as_dict(self) -> dict[str, Any]:
        """The row keyed like the CSV (``valid_ppl`` or ``valid_nll``, ...), as
        :func:`summarize` gives it."""
        out: dict[str, Any] = {
            "cell": self.cell,
            "params": self.params,
            "data_fraction": self.data_fraction,
            "bptt": self.bptt,
            "lr": self.lr,
            "n": self.n,
            "diverged": self.diverged,
            self.metric.valid_column: self.valid,
            self.metric.test_column: self.test,
            "tokens_per_s": self.tokens_per_s,
            "wall_time_to_target_s": self.wall_time_to_target_s,
            "tokens_to_target": self.tokens_to_target,
        }
        if self.metric is PERPLEXITY:
            out["test_bpc"] = self.test_bpc
        return out


def summary_rows(rows: Sequence[Row], metric: Metric = PERPLEXITY) -> list[SummaryRow]:
    """Mean ± std over seeds per (cell, data fraction, tau, learning rate), in grid order."""
    fmt = ".2f" if metric is PERPLEXITY else ".3f"
    groups: dict[tuple[str, float, int, float | None], list[Row]] = {}
    for row in rows:
        key = (row["cell"], row["data_fraction"], row["bptt"], row.get("lr"))
        groups.setdefault(key, []).append(row)
    out = []
    for (cell, fraction, tau, lr), members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        out.append(
            SummaryRow(
                cell=cell,
                params=members[0]["params"],
                data_fraction=fraction,
                bptt=tau,
                lr=lr,
                n=len(ok),
                diverged=len(members) - len(ok),
                valid=_over_seeds(ok, metric.valid_column, fmt),
                test=_over_seeds(ok, metric.test_column, fmt),
                tokens_per_s=_over_seeds(ok, "tokens_per_s", ".0f"),
                wall_time_to_target_s=_over_seeds(ok, "wall_time_to_target_s", ".1f"),
                tokens_to_target=_over_seeds(ok, "tokens_to_target", ".0f"),
                test_bpc=_over_seeds(ok, "test_bpc", ".3f") if metric is PERPLEXITY else None,
                metric=metric,
            )
        )
    return out


def _over_seeds(runs: Sequence[Row], column: str, fmt: str) -> str:
    return mean_pm_std([r[column] for r in runs], fmt)


def summarize(rows: Sequence[Row], metric: Metric = PERPLEXITY) -> list[dict[str, Any]]:
    """:func:`summary_rows` as plain dicts keyed like the CSV (what ``rnnlab compare`` prints)."""
    return [s.as_dict() for s in summary_rows(rows, metric)]
