"""End to end: ``rnnlab train``'s loop with a GRU/RNN on rnnlab's CPU window kernel against the
same run on torch's kernel, and the matched-parameter LSTM, same process, interleaved.

Issue 18: on the CPU torch fuses only the LSTM, so a GRU at the PTB-small shape trained slower
than an LSTM of the same parameter count. Each contender is a real
:class:`rnnlab.training.trainer.Trainer` (its loop, as ``benchmarks/bench_train.py`` times it:
the clock runs from entering the loop to the metrics row after the repetition's last window),
all on the same token stream from the same seed:

* ``gru_cpu``: ``--cell gru --impl cpu`` (:mod:`rnnlab.nn.fused_cpu`);
* ``gru_torch``: ``--cell gru --impl fused`` (torch's op-by-op GRU, what ``auto`` runs today);
* ``lstm_torch``: ``--cell lstm`` at its matched size (torch's oneDNN kernel);
* with ``--rnn`` also ``rnn_cpu`` and ``rnn_torch`` (tanh RNN at its matched size).

Shape "ptb-small" (default): 2 layers, embedding 200, bptt 35, batch 20, no dropout; LSTM 200 /
GRU 240 / RNN 400 units (about equal recurrent parameters). Reports tokens/s (median and best
repetition), ``ratio`` gru_cpu / gru_torch and ``time_vs_lstm`` (seconds per window of each
against the LSTM's). Data: PTB when ``RNNLAB_DATA_DIR`` names the mirror, else a synthetic
Zipf stream.

    python benchmarks/bench_fused_cpu.py --threads 2     # -> benchmarks/results/fused_cpu/train.json
    python benchmarks/bench_fused_cpu.py --quick          # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _common import machine_info, write_report
from bench_train import (
    Timing,
    TrainerLoop,
    add_stream_args,
    interleave,
    load_stream,
    make_trainer,
)

SHAPES = {
    "ptb-small": {
        "layers": 2,
        "embed": 200,
        "batch": 20,
        "bptt": 35,
        "dropout": 0.0,
        "hidden_by_cell": {"lstm": 200, "gru": 240, "rnn": 400},
    },
}
LR, CLIP = 1.0, 0.25  # a moderate SGD step: the loss stays finite, the cost does not change


def contenders(with_rnn: bool) -> dict[str, tuple[str, str]]:
    """name -> (cell, impl)."""
    runs = {
        "gru_cpu": ("gru", "cpu"),
        "gru_torch": ("gru", "fused"),
        "lstm_torch": ("lstm", "auto"),
    }
    if with_rnn:
        runs.update({"rnn_cpu": ("rnn", "cpu"), "rnn_torch": ("rnn", "fused")})
    return runs


def bench(args: argparse.Namespace) -> dict:
    shape = SHAPES[args.shape]
    steps = args.steps
    batch, bptt = shape["batch"], shape["bptt"]
    windows = steps * (args.reps + 1)
    data = load_stream(args, batch * (windows * bptt + 2))
    runs: dict[str, Callable[[], Timing]] = {}
    loops: dict[str, TrainerLoop] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cell, impl) in contenders(args.rnn).items():
            cell_shape = {**shape, "hidden": shape["hidden_by_cell"][cell]}
            torch.manual_seed(args.seed)
            trainer = make_trainer(
                cell_shape, data, Path(tmp) / name, "cpu", args.threads or None, cell, impl
            )
            trainer.config.optim.lr, trainer.config.optim.clip = LR, CLIP
            loops[name] = TrainerLoop(trainer)
            runs[name] = (lambda loop: lambda: loop.run(steps))(loops[name])
        for run in runs.values():  # warm-up repetition
            run()
        seconds = interleave(runs, args.reps)
    tokens = steps * bptt * batch
    wall = {name: [t[0] for t in timings] for name, timings in seconds.items()}
    median = {name: statistics.median(w) for name, w in wall.items()}
    rows = {
        name: {
            "cell": contenders(args.rnn)[name][0],
            "impl": contenders(args.rnn)[name][1],
            "hidden": shape["hidden_by_cell"][contenders(args.rnn)[name][0]],
            "tokens_per_s": tokens / median[name],
            "tokens_per_s_best": tokens / min(wall[name]),
            "time_vs_lstm": median[name] / median["lstm_torch"],
            "seconds": wall[name],
            "first_losses": loops[name].losses()[:2],
        }
        for name in runs
    }
    result = {
        "shape": {**shape, "steps_per_rep": steps, "tokens_per_rep": tokens},
        "data": data.name,
        "train": rows,
        "gru_ratio": rows["gru_cpu"]["tokens_per_s"] / rows["gru_torch"]["tokens_per_s"],
    }
    if args.rnn:
        result["rnn_ratio"] = rows["rnn_cpu"]["tokens_per_s"] / rows["rnn_torch"]["tokens_per_s"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fused_cpu/train.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ptb-small")
    parser.add_argument("--steps", type=int, default=20, help="windows per repetition")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--rnn", action="store_true", help="also the tanh RNN, both paths")
    add_stream_args(parser, 2_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.reps = 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(args)
    for name, row in result["train"].items():
        print(
            f"{name:10s} {row['tokens_per_s']:8.0f} tok/s (best {row['tokens_per_s_best']:8.0f})"
            f"  time vs nn.LSTM {row['time_vs_lstm']:.2f}",
            flush=True,
        )
    print(f"GRU: rnnlab's CPU kernel / torch's: {result['gru_ratio']:.2f}x tokens/s")
    report = {
        "benchmark": "fused_cpu train: rnnlab train loop tokens/s, GRU/RNN on rnnlab's CPU "
        "window kernel vs torch's kernel, and the matched LSTM",
        "command": "python benchmarks/bench_fused_cpu.py " + " ".join(argv or []),
        "machine": machine_info(torch.device("cpu")),
        "config": {"shape": args.shape, "steps": args.steps, "reps": args.reps, "seed": args.seed},
        "result": result,
    }
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
