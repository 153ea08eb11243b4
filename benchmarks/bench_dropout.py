"""What dropout costs in training speed: per-token masks against locked (one per sequence).

``ptb-hour`` (then with per-token dropout 0.4) trained 31% more tokens per second with its
dropout moved to AWD-LSTM's locked masks (BENCHMARKS.md), in runs on different days of a
shared machine; the preset has carried locked dropout since. This measures the difference
in one process, interleaved, so drifts in machine load hit both alike:

* ``ops``: the dropout operation alone, forward and backward, on the tensor ``ptb-hour`` drops
  (bptt x batch x hidden): ``torch.nn.functional.dropout`` (a fresh Bernoulli draw per element,
  T*B*H of them) against :func:`rnnlab.nn.variational.locked_dropout` (B*H draws, broadcast over
  the T steps);
* ``train``: the real Trainer loop (``bench_train.TrainerLoop``: forward, backward, clip, SGD
  step, the per-step bookkeeping) of each contender, built from ``rnnlab train`` arguments:
  ``--preset ptb-hour`` with plain dropout 0.4 (``--dropout 0.4``, the locked rates 0) and with
  locked dropout 0.4 (``--dropout 0 --dropout-input 0.4 --dropout-hidden 0.4 --dropout-output
  0.4``). Same seed, same token stream, same model otherwise.

Repetitions are interleaved with a rotating order after one warm-up repetition each; tokens/s
from the median repetition, ``ratio`` = locked / plain (also from the best repetitions and per
CPU second).

Data: PTB when ``RNNLAB_DATA_DIR`` points at the corpus mirror, else a synthetic Zipf stream
(speed does not depend on which ids are drawn).

    python benchmarks/bench_dropout.py --threads 2      # -> benchmarks/results/dropout.json
    python benchmarks/bench_dropout.py --quick          # a smoke run of seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_info, write_report
from bench_train import (
    TrainerLoop,
    add_stream_args,
    interleave,
    load_stream,
    ratios,
    short_eval,
    summarize,
)

from rnnlab.cli import make_parser
from rnnlab.cli.train import build_run_config
from rnnlab.data.dataset import LMData
from rnnlab.nn.variational import locked_dropout
from rnnlab.training.trainer import Trainer

# both spelled out, so they hold whichever dropout the preset carries
PLAIN = [
    "--preset",
    "ptb-hour",
    "--dropout",
    "0.4",
    "--dropout-input",
    "0",
    "--dropout-hidden",
    "0",
]
PLAIN += ["--dropout-output", "0"]
LOCKED = ["--preset", "ptb-hour", "--dropout", "0", "--dropout-input", "0.4"]
LOCKED += ["--dropout-hidden", "0.4", "--dropout-output", "0.4"]


def time_op(fn, x: torch.Tensor, reps: int) -> float:
    """Median seconds of one forward and backward of ``fn(x)``."""
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(x).sum().backward()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def bench_ops(shape: tuple[int, int, int], p: float, reps: int) -> dict:
    """Milliseconds per forward+backward of each dropout on a (T, B, H) tensor, interleaved."""
    x = torch.randn(*shape, requires_grad=True)
    ops = {
        "per_token": lambda t: F.dropout(t, p, training=True),
        "locked": lambda t: locked_dropout(t, p, True),
    }
    ms: dict[str, list[float]] = {name: [] for name in ops}
    for fn in ops.values():  # warm-up
        time_op(fn, x, 3)
    for _ in range(5):
        for name, fn in ops.items():
            ms[name].append(1000 * time_op(fn, x, reps))
    median = {name: statistics.median(v) for name, v in ms.items()}
    return {
        "shape": list(shape),
        "p": p,
        "ms": median,
        "ms_all": ms,
        "per_token_over_locked": median["per_token"] / median["locked"],
    }


def trainer_of(argv: list[str], data: LMData, run_dir: Path, threads: int | None) -> Trainer:
    parsed = make_parser().parse_args(["train", *argv, "--out", str(run_dir)])
    config = build_run_config(parsed)
    config.train.threads = threads
    config.train.max_minutes = None  # the repetitions set max_steps; no budget schedule cut
    return Trainer(config, run_dir, data=short_eval(data))


def bench_train_loops(args: argparse.Namespace) -> dict:
    contenders = {"plain": PLAIN, "locked": LOCKED}
    bptt, batch = 35, 20
    data = load_stream(args, batch * (bptt * args.steps * (args.reps + 1) + 2))
    with tempfile.TemporaryDirectory() as tmp:
        loops = {}
        for name, argv in contenders.items():
            torch.manual_seed(args.seed)
            loops[name] = TrainerLoop(
                trainer_of(argv, data, Path(tmp) / name, args.threads or None)
            )
        runs = {name: (lambda loop=loop: loop.run(args.steps)) for name, loop in loops.items()}
        for run in runs.values():  # warm-up repetition
            run()
        seconds = interleave(runs, args.reps)
    tokens = args.steps * bptt * batch
    train = {k: summarize(s, tokens, 0.0) for k, s in seconds.items()}
    for row in train.values():
        del row["gflops"]
    return {
        "data": data.name,
        "contenders": {k: " ".join(v) for k, v in contenders.items()},
        "steps_per_rep": args.steps,
        "tokens_per_rep": tokens,
        "train": train,
        **ratios(train, "locked", "plain"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dropout.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--steps", type=int, default=50, help="windows per repetition")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    add_stream_args(parser, 1_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.synthetic = 2, 1, True
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "machine": machine_info(),
        "ops": bench_ops((35, 20, 400), 0.4, 3 if args.quick else 50),
        "train_loop": bench_train_loops(args),
    }
    ops, loop = report["ops"], report["train_loop"]
    print(
        f"dropout op (35x20x400, fwd+bwd): per-token {ops['ms']['per_token']:.2f} ms, "
        f"locked {ops['ms']['locked']:.2f} ms; train loop tokens/s: plain "
        f"{loop['train']['plain']['tokens_per_s']:,.0f}, locked "
        f"{loop['train']['locked']['tokens_per_s']:,.0f} (ratio {loop['ratio']:.3f}, "
        f"best {loop['ratio_best']:.3f}, cpu {loop['ratio_cpu']:.3f})"
    )
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
