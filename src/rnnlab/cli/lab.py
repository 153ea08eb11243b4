"""The laboratory: ``rnnlab compare`` (the comparison grid) and ``rnnlab gradflow``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from rnnlab.cli.train import _add_data_args
from rnnlab.config.run import SCHEDULES
from rnnlab.lab.compare import DEFAULT_COMPARE_STEPS, CompareRequest, grid_config
from rnnlab.lab.compare import compare_settings as request_settings
from rnnlab.lab.grid import GridConfig
from rnnlab.nn.registry import cell_help


# ---------------------------------------------------------------------------------- compare
def _comma_list(kind: type, flag: str) -> Any:
    """An argparse type for comma-separated values, e.g. --bptt 5,20."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes comma-separated {kind.__name__}s, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{flag} needs at least one value")
        return values

    return parse


def _parse_lrs(text: str) -> tuple:
    """--lr: rates to search (``1e-3,3e-3``) or one rate per cell (``gru=3e-3,lstm=1e-2``);
    a tuple of floats, or a tuple holding one dict."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("--lr needs at least one value")
    named = ["=" in v for v in items]
    try:
        if all(named):
            pairs = [v.split("=", 1) for v in items]
            per_cell = {c.strip(): float(r) for c, r in pairs}
            if len(per_cell) != len(pairs):
                raise argparse.ArgumentTypeError(f"--lr names a cell twice: {text!r}")
            return (per_cell,)
        if any(named):
            raise argparse.ArgumentTypeError(
                f"--lr takes rates to search (1e-3,3e-3) or a rate per cell (gru=3e-3,lstm=1e-2), "
                f"not both: {text!r}"
            )
        return tuple(float(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--lr takes comma-separated numbers or cell=number pairs, got {text!r}"
        ) from None


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train a grid: cells x data fractions x BPTT windows x learning rates x seeds, "
        "equal parameter counts",
        description="Each run trains with the same trainer as `rnnlab train` in OUT/runs/<run-id>; "
        "re-running the command finishes an interrupted grid (finished runs are kept). Writes "
        "OUT/results.csv, OUT/summary.md and PNG plots. Settings not given come from --preset "
        "(a piano-roll corpus implies music-chung2014), else from the defaults shown.",
    )
    p.add_argument(
        "--preset",
        help="take the model, optimizer and loop settings of a named setup (flags override it)",
    )
    src = _add_data_args(p, encoding="auto", min_count=1)
    src.add_argument(
        "--start-frame",
        action="store_true",
        help="piano rolls: an all-zero frame before every piece, so every frame is scored",
    )
    _add_grid_args(p)
    _add_budget_args(p)
    _add_compare_optim_args(p)
    _add_report_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument(
        "--out", required=True, help="the grid directory (re-run with the same flags to resume)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result rows as JSON")
    p.set_defaults(func=cmd_compare)


def _add_grid_args(p: argparse.ArgumentParser) -> None:
    """The grid's axes: cells, sizes, data fractions, windows, rates, seeds."""
    g = p.add_argument_group("grid")
    g.add_argument(
        "--cells",
        type=_comma_list(str, "--cells"),
        default=("rnn", "gru", "lstm"),
        help=f"comma list of {cell_help()} (default rnn,gru,lstm)",
    )
    g.add_argument(
        "--params",
        type=int,
        help="parameter budget of the whole model (embedding + recurrent + decoder); each cell's "
        "hidden size is solved to land within 2%% of it",
    )
    g.add_argument(
        "--hidden",
        type=int,
        help="hidden size of every cell when no --params (default 128)",
    )
    g.add_argument(
        "--embed",
        help="embedding width, or 'hidden' for the same as the hidden size (default 64; piano "
        "rolls: 0, the frames feed the recurrent layer directly)",
    )
    g.add_argument("--layers", type=int, help="(default 1)")
    g.add_argument(
        "--tie", action="store_true", help="tie decoder and embedding (implies --embed hidden)"
    )
    g.add_argument("--dropout", type=float, help="(default 0)")
    g.add_argument(
        "--data-fractions",
        type=_comma_list(float, "--data-fractions"),
        default=(1.0,),
        help="fractions of the training text (or pieces), e.g. 0.1,0.3,1 (default 1)",
    )
    g.add_argument(
        "--bptt",
        type=_comma_list(int, "--bptt"),
        help="BPTT windows, e.g. 3,5,10,20,35 (default 35; piano rolls 200)",
    )
    g.add_argument(
        "--lr",
        type=_parse_lrs,
        help="learning rate, or a comma list to search: each cell keeps the rate with the best "
        "validation (default 2e-3; piano rolls 1e-3); or one rate per cell: gru=3e-3,lstm=1e-2",
    )
    g.add_argument(
        "--lr-from",
        metavar="GRID",
        help="give each cell the rate an earlier grid's search chose for it (GRID/results.csv): "
        "search on a small grid, then run the large one",
    )
    g.add_argument("--seeds", type=int, default=1, help="seeds 1..N per grid point (default 1)")


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    """How long each run of the grid trains."""
    b = p.add_argument_group("budget per run")
    b.add_argument("--max-steps", type=int)
    b.add_argument(
        "--max-tokens", type=int, help="training tokens per run (steps = tokens / (batch x tau))"
    )
    b.add_argument("--max-minutes", type=float)
    b.add_argument(
        "--epochs",
        type=int,
        help=f"(default: until the budget ends; {DEFAULT_COMPARE_STEPS} steps without one)",
    )
    b.add_argument(
        "--patience", type=int, help="stop a run after N epochs without validation improvement"
    )


def _add_compare_optim_args(p: argparse.ArgumentParser) -> None:
    """The optimizer and loop settings every cell shares."""
    o = p.add_argument_group("optimization (the same for every cell)")
    o.add_argument(
        "--optimizer", choices=["sgd", "adam", "adamw", "rmsprop"], help="(default adam)"
    )
    o.add_argument("--clip", type=float, help="(default 1)")
    o.add_argument("--weight-noise", type=float, help="std of weight noise (default 0)")
    o.add_argument("--schedule", choices=list(SCHEDULES), help="(default constant)")
    o.add_argument("--batch-size", type=int, help="(default 20; piano rolls 8 pieces)")
    o.add_argument("--eval-batch-size", type=int, help="(default 10)")


def _add_report_args(p: argparse.ArgumentParser) -> None:
    """What the report measures: validations along the way, the target for 'time to target'."""
    r = p.add_argument_group("report")
    r.add_argument(
        "--eval-every", type=int, help="validate every N steps (default: 20 times per run)"
    )
    r.add_argument(
        "--eval-points", type=int, default=20, help="validations per run for the learning curves"
    )
    r.add_argument(
        "--target-ppl",
        type=float,
        help="perplexity (piano rolls: NLL per step) for 'time to target' (default: the worst "
        "final validation figure of the grid)",
    )


def compare_request(args: argparse.Namespace) -> CompareRequest:
    """The grid that the parsed compare flags describe, as the library's typed request (each
    field from the flag of the same name; ``--lr``'s per-cell form unwrapped to its mapping)."""
    values = {f.name: getattr(args, f.name) for f in fields(CompareRequest)}
    if values["lr"] and isinstance(values["lr"][0], dict):
        values["lr"] = values["lr"][0]
    return CompareRequest(**values)


def compare_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The compare settings of these flags (:func:`rnnlab.lab.compare.compare_settings`)."""
    return request_settings(compare_request(args))


def build_grid_config(args: argparse.Namespace) -> GridConfig:
    """The GridConfig that the compare flags (and a preset) describe."""
    return grid_config(compare_request(args))


def cmd_compare(args: argparse.Namespace) -> int:
    from rnnlab.lab.grid import metric_for
    from rnnlab.lab.results import summary_rows
    from rnnlab.lab.runner import load_grid_data, run_grid

    grid = build_grid_config(args)
    data = load_grid_data(grid)
    if data.vocab is None:
        what = f"{data.name} (piano rolls), {len(data.train):,} train pieces"
    else:
        what = (
            f"{data.name} ({data.level}), {len(data.train):,} train tokens, "
            f"vocabulary {len(data.vocab):,}"
        )
    print(f"rnnlab: {what}; grid in {args.out}", file=sys.stderr)

    def on_run(i: int, n: int, run: Any, status: str) -> None:
        words = {
            "done": "finished earlier, kept",
            "resume": "resuming from its checkpoint",
            "start": "training",
        }
        size = f"hidden {run.size.hidden_size}, {run.size.parameters:,} parameters"
        print(f"rnnlab: [{i}/{n}] {run.run_id} ({size}): {words[status]}", file=sys.stderr)

    report = run_grid(grid, args.out, data=data, progress=not args.no_progress, on_run=on_run)
    metric = metric_for(data.level)
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(args.out),
                    f"target_{metric.key}": report.target_ppl,
                    "rows": report.rows,
                    "files": [str(f) for f in report.files],
                }
            )
        )
        return 0
    k = metric.key
    several = grid.shows_lr
    for s in summary_rows(report.rows, metric):
        extra = f", {s.diverged} diverged" if s.diverged else ""
        rate = f"lr {s.lr:<8g} " if several else ""
        print(
            f"{s.cell:<16} fraction {s.data_fraction:<5g} tau {s.bptt:<4} {rate}"
            f"valid {k} {s.valid}  test {k} {s.test}  (n={s.n}{extra})"
        )
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(str(f) for f in report.files)}")
    return 0


# ---------------------------------------------------------------------------------- gradflow
def _add_gradflow(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradflow",
        help="how far gradients reach back in time (||dL_T/dh_t||) and gate statistics",
        description="Measures ||dL_T/dh_{T-d}|| for d = 0..K (loss at the last step only) for "
        "trained runs (RUN_DIR) or, without one, for freshly initialised cells; plus gate "
        "statistics on held-out text.",
    )
    p.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="trained runs (default: models at initialisation)",
    )
    p.add_argument(
        "--cell",
        type=_comma_list(str, "--cell"),
        help="cells at initialisation, comma list (default rnn,gru,lstm,lstm-fb1)",
    )
    p.add_argument("--steps", type=int, default=50, help="K: how many steps back (default 50)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"cell": ..., "norms": [...]} (a list if several)',
    )
    p.add_argument("--plot", help="write the plot (PNG, log scale) to this file")
    p.add_argument(
        "--with-init",
        action="store_true",
        help="with RUN_DIR: also a fresh model of the same config",
    )
    src = p.add_argument_group(
        "held-out text (default: the run's validation split; random tokens at init)"
    )
    src.add_argument("--corpus")
    src.add_argument("--text")
    src.add_argument("--level", choices=["char", "word"])
    src.add_argument(
        "--encoding", default="auto", help="of --text (default auto: UTF-8, else detected)"
    )
    m = p.add_argument_group("models at initialisation")
    m.add_argument("--hidden", type=int, default=128)
    m.add_argument("--embed", type=int, default=64)
    m.add_argument("--layers", type=int, default=1)
    m.add_argument(
        "--vocab-size", type=int, default=64, help="vocabulary of the random tokens (no text given)"
    )
    x = p.add_argument_group("measurement")
    x.add_argument("--batch", type=int, default=32, help="sequences averaged over")
    x.add_argument("--warmup", type=int, default=20, help="tokens run before the measured window")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--no-gates", action="store_true", help="skip the gate statistics")
    x.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=cmd_gradflow)


def cmd_gradflow(args: argparse.Namespace) -> int:
    from rnnlab.data.dataset import DataConfig
    from rnnlab.lab.gradflow import gradflow, plot_gradflow
    from rnnlab.runs.load import set_threads

    set_threads(args.threads)
    data = None
    if args.corpus or args.text:
        data = DataConfig(
            corpus=args.corpus, text=args.text, level=args.level, encoding=args.encoding
        )
    flows = gradflow(
        args.run_dirs,
        cells=args.cell,
        with_init=args.with_init,
        data=data,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden,
        embed_size=args.embed,
        num_layers=args.layers,
        steps=args.steps,
        batch=args.batch,
        warmup=args.warmup,
        seed=args.seed,
        gates=not args.no_gates,
    )
    if args.plot:
        plot_gradflow(flows, args.plot)
        print(f"rnnlab: wrote {args.plot}", file=sys.stderr)
    if args.json:
        out = [f.to_dict() for f in flows]
        print(json.dumps(out[0] if len(out) == 1 else out))
        return 0
    k = args.steps
    print(
        f"{'cell':<18} {'source':<24} {'|dL/dh_T|':>10} {f'|dL/dh_T-{k}|':>12} {'x per step':>10}"
    )
    for f in flows:
        src = "init" if f.source == "init" else Path(f.source).name
        print(f"{f.cell:<18} {src:<24} {f.norms[0]:>10.3g} {f.norms[-1]:>12.3g} {f.decay:>10.3f}")
    for f in flows:
        for layer, gates in enumerate(f.gates):
            for name, s in gates.items():
                src = "init" if f.source == "init" else Path(f.source).name
                print(
                    f"{f.cell} ({src}) layer {layer} {name} gate: mean {s['mean']:.3f}, "
                    f"saturated {s['saturated']:.1%} (>0.95 {s['above_0.95']:.1%}, "
                    f"<0.05 {s['below_0.05']:.1%})"
                )
    print(f"text: {flows[0].text}")
    return 0
