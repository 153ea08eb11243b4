"""The report of a comparison grid: ``results.csv``, the PNG plots and ``summary.md``.

``summary.md`` holds, one section after the other: the settings every run shared; the size each
cell got (matched to the parameter budget); the mean ± sample std over seeds per (cell, fraction,
tau, lr) with the time to target; in a learning-rate search, the rate selected by validation per
(cell, fraction, tau) (the plots then show those runs only); every run; the plots and notes on
plots left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlab.lab.grid import NLL, GridConfig, Metric, metric_for
from rnnlab.lab.plots import make_plots
from rnnlab.lab.results import (
    TABLE,
    GridResults,
    Row,
    SummaryRow,
    csv_columns,
    is_selected,
    selected_rates,
    summary_rows,
    value_text,
    write_csv,
)

SUMMARY = "summary.md"


def write_report(
    grid: GridConfig, out: Path, results: GridResults, *, level: str
) -> tuple[list[Path], list[str]]:
    """results.csv, the plots and summary.md in the grid directory ``out``, from the collected
    ``results``; return the files written and the notes (plots left out)."""
    metric = metric_for(level)
    rows = results.rows
    files = [write_csv(out / TABLE, rows, csv_columns(metric))]
    shown = [row for row in rows if is_selected(row, results.chosen) or row["status"] != "ok"]
    plots, notes = make_plots(shown, results.curves, grid, out, metric)
    if grid.searches_lr:
        notes = ["the plots show each cell's learning rate selected by validation", *notes]
    files += plots
    files.append(write_summary(out / SUMMARY, grid, rows, results.target, level, plots, notes))
    return files, notes


def write_summary(
    path: Path,
    grid: GridConfig,
    rows: Sequence[Row],
    target: float | None,
    level: str,
    plots: Sequence[Path],
    notes: Sequence[str],
) -> Path:
    """summary.md: settings, sizes, the mean ± std table, every run, plots and notes."""
    metric = metric_for(level)
    bpc = level == "char"  # bits per character: a column for character-level text
    summary = summary_rows(rows, metric)
    parts = [
        *_settings_section(grid, level, metric),
        *_sizes_section(grid, rows),
        *_summary_section(grid, summary, target, metric, bpc),
        *(_selected_section(rows, summary, metric) if grid.searches_lr else []),
        *_runs_section(grid, rows, metric, bpc),
        *_plots_section(plots, notes),
    ]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- sections
# Each section is a list of lines (a table is one item) and ends with an empty line.
def _settings_section(grid: GridConfig, level: str, metric: Metric) -> list[str]:
    """The title and the settings every run shares: data, budget, optimizer, loop."""
    t = grid.train
    source = (
        f"Piano rolls: {grid.data.describe()} (tokens are predicted time steps)"
        if metric is NLL
        else f"Text: {grid.data.describe()} ({level} level)"
    )
    extras = []
    if grid.optim.weight_noise:
        extras.append(f"weight noise {grid.optim.weight_noise:g}")
    if t.patience:
        extras.append(f"early stopping after {t.patience} epochs without improvement")
    settings = (
        f"{source}. Budget per run: {_budget_text(grid)}. "
        f"Optimizer {grid.optim.optimizer}, lr {grid.describe_rates()}, clip {grid.optim.clip:g}, "
        f"schedule {grid.optim.schedule}; batch {t.batch_size}; {grid.model.num_layers} layer(s)"
        + "".join(f"; {e}" for e in extras)
        + "."
    )
    return ["# rnnlab compare", "", settings, ""]


def _budget_text(grid: GridConfig) -> str:
    """The budget per run in words: "1000 steps, 5 minutes", or "N epochs" without a limit."""
    t = grid.train
    limits = (
        f"{t.max_steps} steps" if t.max_steps else "",
        f"{grid.max_tokens:,} tokens" if grid.max_tokens else "",
        f"{t.max_minutes:g} minutes" if t.max_minutes else "",
    )
    return ", ".join(s for s in limits if s) or f"{t.epochs} epochs"


def _sizes_section(grid: GridConfig, rows: Sequence[Row]) -> list[str]:
    """The size rule and, per cell, its hidden and embedding sizes and parameter counts."""
    budget = f" to a budget of {grid.params:,}." if grid.params else "; no budget: one hidden size."
    rule = (
        "Sizes are matched by the parameter count of the whole model (embedding + recurrent + "
        "decoder)" + budget
    )
    per_cell = {row["cell"]: row for row in rows}.values()  # each cell's last run
    table = _md_table(
        ["cell", "hidden", "embed", "params", "recurrent params", "vs budget"],
        [
            [r["cell"], r["hidden"], r["embed"], r["params"], r["recurrent_params"], _vs(r, grid)]
            for r in per_cell
        ],
    )
    return [rule, "", table, ""]


def _vs(row: Row, grid: GridConfig) -> str:
    """A run's parameter count relative to the budget, e.g. "+0.42%"."""
    return f"{(row['params'] - grid.params) / grid.params:+.2%}" if grid.params else "–"


def _summary_section(
    grid: GridConfig,
    summary: Sequence[SummaryRow],
    target: float | None,
    metric: Metric,
    bpc: bool,
) -> list[str]:
    """The target and the mean ± std over seeds of every (cell, fraction, tau, lr)."""
    target_rule = (
        "given"
        if grid.target_ppl is not None
        else f"the worst final validation {metric.name} of the grid"
    )
    about = (
        f"Target {metric.name} {value_text(target, 5)} ({target_rule}); time to target is the "
        "wall time (training plus the periodic validations) at the first logged validation at or "
        "below it. Std is the sample standard deviation (n/a for one seed); tokens/s counts "
        "training steps only."
    )
    k = metric.key
    columns = [("cell", "cell"), ("params", "params"), ("fraction", "data_fraction"), ("τ", "bptt")]
    columns += [("lr", "lr")] if grid.shows_lr else []
    columns += [("n", "n"), (f"valid {k}", "valid"), (f"test {k}", "test")]
    columns += [("test bpc", "test_bpc")] if bpc else []
    columns += [
        ("tokens/s", "tokens_per_s"),
        ("time to target (s)", "wall_time_to_target_s"),
        ("tokens to target", "tokens_to_target"),
    ]
    table = _summary_table(summary, columns)
    return ["## Summary: mean ± std over seeds", "", about, "", table, ""]


def _selected_section(
    rows: Sequence[Row], summary: Sequence[SummaryRow], metric: Metric
) -> list[str]:
    """Per (cell, fraction, tau) of a learning-rate search: the group at the selected rate."""
    chosen = selected_rates(rows, metric)
    picked = [s for s in summary if chosen.get(s.rate_key) == s.lr]
    k = metric.key
    columns = [("cell", "cell"), ("fraction", "data_fraction"), ("τ", "bptt"), ("lr", "lr")]
    columns += [("n", "n"), (f"valid {k}", "valid"), (f"test {k}", "test")]
    about = (
        f"Per cell, fraction and τ, the learning rate with the best mean validation "
        f"{metric.name}; its test figure is the result."
    )
    return ["## Selected by validation", "", about, "", _summary_table(picked, columns), ""]


def _runs_section(grid: GridConfig, rows: Sequence[Row], metric: Metric, bpc: bool) -> list[str]:
    """Every run, under its CSV column names."""
    cols = ["run_id", "params", "data_fraction", "bptt", "seed"] + (["lr"] if grid.shows_lr else [])
    cols += ["status", metric.valid_column, metric.test_column]
    cols += ["test_bpc"] if bpc else []
    cols += ["tokens_per_s", "wall_time_s", "tokens_to_target", "wall_time_to_target_s"]
    return ["## Every run", "", _md_table(cols, [[row[c] for c in cols] for row in rows]), ""]


def _plots_section(plots: Sequence[Path], notes: Sequence[str]) -> list[str]:
    """The plots as images, and the notes (plots left out, what the plots show)."""
    lines = ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] or ["(none)"]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return lines


# --------------------------------------------------------------------------- tables
def _summary_table(summary: Sequence[SummaryRow], columns: Sequence[tuple[str, str]]) -> str:
    """A table of summary rows; ``columns`` pairs each header with a :class:`SummaryRow` field."""
    header = [name for name, _ in columns]
    return _md_table(header, [[getattr(s, field) for _, field in columns] for s in summary])


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; values that are not text to 5 significant digits."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for r in rows:
        lines.append(
            "| " + " | ".join(v if isinstance(v, str) else value_text(v, 5) for v in r) + " |"
        )
    return "\n".join(lines)
