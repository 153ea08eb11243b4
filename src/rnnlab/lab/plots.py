"""The PNG plots of a comparison grid.

- ``learning_curves_tokens.png`` (piano rolls: ``learning_curves_epochs.png``, by epoch as
  Chung et al. 2014 draw them) and ``learning_curves_time.png``: the validation figure of every
  run against training tokens (epochs) and wall time, one panel per (data fraction, tau), the
  target as a dashed line;
- ``<key>_vs_data_fraction.png`` and ``<key>_vs_bptt.png`` (``key`` ``ppl`` or ``nll``): the final
  validation figure, mean ± std over seeds, against data fraction (one panel per tau) and
  against tau (one panel per fraction); left out, with a note, when the grid has a single value.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state); matplotlib is
imported only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlab.lab.grid import PERPLEXITY, GridConfig, Metric
from rnnlab.lab.results import Row, mean_std
from rnnlab.nn.registry import CELL_NAMES

Curves = dict[str, list[dict[str, Any]]]  # the logged validations of each run, by run id


def make_plots(
    rows: Sequence[Row],
    curves: Curves,
    grid: GridConfig,
    out: Path,
    metric: Metric = PERPLEXITY,
) -> tuple[list[Path], list[str]]:
    """Draw the PNG plots of a grid; return the files and notes on plots left out.

    Learning curves of the validation figure by tokens (text) or by epoch (piano rolls, as
    Chung et al. 2014 draw them) and by wall time; the final figure against data fraction and
    against tau.
    """
    ok = [r for r in rows if r["status"] == "ok" and r[metric.valid_column] is not None]
    files: list[Path] = []
    notes: list[str] = []
    if not ok:
        return files, ["no finished run yet: no plots"]
    if any(curves.get(r["run_id"]) for r in ok):
        first = (
            ("epochs", "epochs", "epoch")
            if metric.by_epoch
            else ("tokens", "tokens", "training tokens")
        )
        for axis, x_key, x_name in (first, ("time", "wall_time", "wall time (s)")):
            path = out / f"learning_curves_{axis}.png"
            files.append(_learning_curves(ok, curves, x_key, x_name, metric, path))
    else:
        notes.append("learning curves not drawn: no run logged a validation")
    fractions = sorted({r["data_fraction"] for r in ok})
    taus = sorted({r["bptt"] for r in ok})
    k = metric.key
    for axis, values, panel_key, panel_values, fname, label in (
        ("data_fraction", fractions, "bptt", taus, f"{k}_vs_data_fraction.png", "data fraction"),
        ("bptt", taus, "data_fraction", fractions, f"{k}_vs_bptt.png", "BPTT window τ"),
    ):
        if len(values) < 2:
            only = f"{values[0]:g}" if values else "none"
            notes.append(f"{fname} not drawn: the grid has a single {label} ({only})")
            continue
        files.append(
            _finals_against(
                ok, grid.cells, axis, values, panel_key, panel_values, label, metric, out / fname
            )
        )
    return files, notes


# --------------------------------------------------------------------------- learning curves
def _learning_curves(
    ok: Sequence[Row], curves: Curves, x_key: str, x_name: str, metric: Metric, path: Path
) -> Path:
    """One panel per (data fraction, tau): each run's validation curve against ``x_key``."""
    fractions = sorted({r["data_fraction"] for r in ok})
    taus = sorted({r["bptt"] for r in ok})
    target = ok[0].get(metric.target_column)
    fig, axes = _figure(len(fractions), len(taus))
    for i, f in enumerate(fractions):
        for j, tau in enumerate(taus):
            ax = axes[i][j]
            panel = [r for r in ok if r["data_fraction"] == f and r["bptt"] == tau]
            _draw_curves(ax, panel, curves, x_key, metric)
            if target is not None:
                ax.axhline(target, color="gray", linestyle="--", linewidth=0.8)
            _curve_y_axis(ax, panel, metric)
            ax.set_title(f"data fraction {f:g}, τ = {tau}", fontsize=9)
            ax.set_xlabel(x_name)
            ax.set_ylabel(f"validation {metric.name}")
            ax.legend(fontsize=7)
    fig.suptitle(f"Learning curves by {x_name}\n(dashed: target {metric.name})", fontsize=10)
    return _save(fig, path)


def _draw_curves(ax: Any, panel: Sequence[Row], curves: Curves, x_key: str, metric: Metric) -> None:
    """The validation curve of each run of ``panel`` that logged one; one legend entry per cell."""
    seen: set[str] = set()
    for r in panel:
        if not curves.get(r["run_id"]):
            continue
        curve = [c for c in curves[r["run_id"]] if x_key in c]
        label = None if r["cell"] in seen else r["cell"]
        seen.add(r["cell"])
        xs, ys = [c[x_key] for c in curve], [c[metric.valid_column] for c in curve]
        ax.plot(xs, ys, color=_color(r["cell"]), alpha=0.8, marker=".", label=label)


def _curve_y_axis(ax: Any, panel: Sequence[Row], metric: Metric) -> None:
    """A log axis with plain labels, or (linear) one that shows where the curves converge, not
    the first epochs' drop."""
    if metric.log_scale:
        ax.set_yscale("log")
        _plain_log_ticks(ax, "y")
        return
    finals = [r[metric.valid_column] for r in panel]
    if finals:
        high = min(ax.get_ylim()[1], max(finals) + 0.5 * max(finals) ** 0.5 + 1)
        ax.set_ylim(min(finals) - 0.1 * (high - min(finals)), high)


# --------------------------------------------------------------------------- final figures
def _finals_against(
    ok: Sequence[Row],
    cells: Sequence[str],
    axis: str,
    values: Sequence[Any],
    panel_key: str,
    panel_values: Sequence[Any],
    label: str,
    metric: Metric,
    path: Path,
) -> Path:
    """The final validation figure (mean ± std over seeds) of each cell against the column
    ``axis``, one panel per value of the column ``panel_key``."""
    from matplotlib.ticker import NullFormatter

    fig, axes = _figure(1, len(panel_values))
    for j, pv in enumerate(panel_values):
        ax = axes[0][j]
        for cell in cells:
            group = [r for r in ok if r["cell"] == cell and r[panel_key] == pv]
            xs, ys, es = _means_along(group, axis, values, metric)
            if xs:
                ax.errorbar(xs, ys, yerr=es, color=_color(cell), marker="o", capsize=3, label=cell)
        ax.set_xscale("log")
        if metric.log_scale:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation {metric.name} (mean ± std)")
        other = "τ" if panel_key == "bptt" else "data fraction"
        ax.set_title(f"{other} = {pv:g}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Final validation {metric.name}\nagainst {label}", fontsize=10)
    return _save(fig, path)


def _means_along(
    group: Sequence[Row], axis: str, values: Sequence[Any], metric: Metric
) -> tuple[list[Any], list[float], list[float]]:
    """Per value of ``axis`` that ``group`` has runs at: the value, the mean final validation
    figure and its std (0 for one run)."""
    xs, ys, es = [], [], []
    for v in values:
        finals = [r[metric.valid_column] for r in group if r[axis] == v]
        if finals:
            mean, std = mean_std(finals)
            xs.append(v)
            ys.append(mean)
            es.append(std or 0.0)
    return xs, ys, es


# --------------------------------------------------------------------------- figure helpers
def _figure(nrows: int, ncols: int) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg canvas (no pyplot, no global state) and its axes grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(4.2 * ncols, 24), min(3.3 * nrows, 18)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _plain_log_ticks(ax: Any, which: str) -> None:
    """Label a log axis with plain numbers (25, not 2.5x10^1); minor labels only within a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if hi / max(lo, 1e-12) < 10 else NullFormatter())


def _color(cell: str) -> str:
    """The cell's colour, the same in every plot."""
    return f"C{CELL_NAMES.index(cell) % 10}"


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path
