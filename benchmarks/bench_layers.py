"""Forward+backward speed of rnnlab.RNN/GRU/LSTM (both impl paths) against torch.nn, same process.

For every shape and cell, the torch.nn layer and the rnnlab layers (``impl="fused"`` and
``impl="explicit"``) hold the same weights and run the same batch. Repetitions are interleaved
(and the order rotates each repetition) so that drifts in machine load hit every contender
alike; each reports tokens/s = T * B * iters / seconds from the median repetition, and the
ratio from the fastest repetitions too (``ratio_best``: on a shared machine, load from other
processes only ever slows a repetition down, so the minimum is the steadier estimate). A second,
identical torch.nn layer runs alongside as a control: ``control_ratio`` (ideally 1.0) shows how
far apart two equal contenders land, i.e. the noise floor of the run.

    python benchmarks/bench_layers.py                # full run -> benchmarks/results/layers.json
    python benchmarks/bench_layers.py --quick        # short smoke run
    python benchmarks/bench_layers.py --shapes word --cells lstm --reps 9
    python benchmarks/bench_layers.py --shapes ptb-small ptb-medium music --cells gru rnn \
        --threads 2 --out benchmarks/results/fused_cpu/layers.json     # issue 18's table

Shapes: "word" = 2 layers x 200 hidden, input 200, batch 20, 20 steps (Zaremba et al. small);
"char" = 2 layers x 512 hidden, input 512, batch 64, 128 steps. The matched-parameter shapes of
issue 18 are one layer each, with per-cell hidden sizes of about equal parameter count:
"ptb-small" = T 35, B 20, input 200, LSTM 200 / GRU 240 / RNN 400 units; "ptb-medium" = T 35,
B 20, input 650, 650 / 760 / 1300; "shakespeare" = T 35, B 32, input 64, 184 / 215 / 381 (the
200k-parameter models of the findings' Tiny Shakespeare grid); "music" = T 200, B 8, 88 inputs, 34 / 41 / 78 (Chung et al.
2014). For these, a GRU or RNN case also times ``nn.LSTM`` at its matched size in the same
interleaved run and reports ``time_vs_lstm`` (rnnlab's seconds / nn.LSTM's: 1.15 or less is
the target) and ``speedup_vs_torch`` (torch.nn's seconds / rnnlab's) for each rnnlab path.
Contenders: ``fused`` (torch's kernel), ``explicit`` (rnnlab's loop), ``cpu`` (rnnlab's
window kernel, :mod:`rnnlab.nn.fused_cpu`, with its numba-compiled time loops) and
``cpu_numba``, ``cpu_mixed`` and ``cpu_torch_loops`` (the same kernel with its time loops
forced to numba, to mixed (torch GEMM + compiled gates; reset-after GRU only, the other cells
run torch ops then) or to torch ops: ``RNNLAB_CPU_LOOPS``; ``cpu`` picks by size);
the LSTM has no rnnlab kernel, so the ``cpu*`` contenders are not run for it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import machine_info, write_report
from torch import Tensor, nn

import rnnlab.nn.recurrent as rr
from rnnlab.nn import fused_cpu

SHAPES = {
    "word": {"num_layers": 2, "hidden_size": 200, "input_size": 200, "batch": 20, "steps": 20},
    "char": {"num_layers": 2, "hidden_size": 512, "input_size": 512, "batch": 64, "steps": 128},
    "ptb-small": {
        "num_layers": 1,
        "hidden_size": {"lstm": 200, "gru": 240, "rnn": 400},
        "input_size": 200,
        "batch": 20,
        "steps": 35,
    },
    "ptb-medium": {
        "num_layers": 1,
        "hidden_size": {"lstm": 650, "gru": 760, "rnn": 1300},
        "input_size": 650,
        "batch": 20,
        "steps": 35,
    },
    "shakespeare": {
        "num_layers": 1,
        "hidden_size": {"lstm": 184, "gru": 215, "rnn": 381},
        "input_size": 64,
        "batch": 32,
        "steps": 35,
    },
    "music": {
        "num_layers": 1,
        "hidden_size": {"lstm": 34, "gru": 41, "rnn": 78},
        "input_size": 88,
        "batch": 8,
        "steps": 200,
    },
}
ITERS = {"word": 20, "char": 2, "ptb-small": 20, "ptb-medium": 3, "shakespeare": 20, "music": 20}
QUICK_ITERS = {"word": 5, "char": 1, "ptb-small": 3, "ptb-medium": 1, "shakespeare": 3, "music": 3}
CELLS = {"lstm": (rr.LSTM, nn.LSTM), "gru": (rr.GRU, nn.GRU), "rnn": (rr.RNN, nn.RNN)}
IMPLS = ("fused", "explicit", "cpu", "cpu_numba", "cpu_mixed", "cpu_torch_loops")


def hidden_for(shape: dict, cell: str) -> int:
    """The shape's hidden size for ``cell`` (matched-parameter shapes give one per cell)."""
    hidden = shape["hidden_size"]
    return hidden[cell] if isinstance(hidden, dict) else hidden


def make_step(
    model: nn.Module, x: Tensor, grad: Tensor, loops: str | None = None
) -> Callable[[], None]:
    """One forward+backward pass of ``model`` on ``x``, gradients dropped before each pass;
    ``loops`` sets ``RNNLAB_CPU_LOOPS`` (numba, mixed or torch) for the pass."""
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        if loops is not None:
            os.environ[fused_cpu.LOOPS_ENV] = loops
        try:
            output, _ = model(x)
            output.backward(grad)
        finally:
            os.environ.pop(fused_cpu.LOOPS_ENV, None)

    return step


def time_once(step: Callable[[], None], iters: int, device: torch.device) -> float:
    """Seconds for ``iters`` calls of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_case(
    cell: str,
    shape: dict,
    reps: int,
    iters: int,
    warmup: int,
    device: torch.device,
    impls: tuple[str, ...] = IMPLS,
) -> list[dict]:
    """Time torch.nn and both rnnlab paths for one cell and shape, interleaved."""
    ours_cls, torch_cls = CELLS[cell]
    hidden = hidden_for(shape, cell)
    size = (shape["input_size"], hidden, shape["num_layers"])
    reference = torch_cls(*size).to(device)
    control = torch_cls(*size).to(device)  # a second torch.nn copy: shows the noise floor
    control.load_state_dict(reference.state_dict())
    contenders = {"torch": reference, "torch_control": control}
    impls = tuple(impl for impl in impls if cell != "lstm" or not impl.startswith("cpu"))
    for impl in impls:
        model = ours_cls(*size, impl=impl.split("_")[0]).to(device)
        model.load_state_dict(reference.state_dict())
        contenders[impl] = model
    x = torch.randn(shape["steps"], shape["batch"], shape["input_size"], device=device)
    grad = torch.randn(shape["steps"], shape["batch"], hidden, device=device)
    loops = {"cpu_numba": "numba", "cpu_mixed": "mixed", "cpu_torch_loops": "torch"}  # cpu: auto
    steps = {name: make_step(model, x, grad, loops.get(name)) for name, model in contenders.items()}
    matched = isinstance(shape["hidden_size"], dict) and cell != "lstm"
    if matched:  # nn.LSTM at its matched size, in the same interleaved run
        lstm_hidden = hidden_for(shape, "lstm")
        lstm = nn.LSTM(shape["input_size"], lstm_hidden, shape["num_layers"]).to(device)
        lstm_grad = torch.randn(shape["steps"], shape["batch"], lstm_hidden, device=device)
        steps["torch_lstm"] = make_step(lstm, x, lstm_grad)
    for step in steps.values():
        time_once(step, warmup, device)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(reps):
        shift = rep % len(names)  # rotate who goes first, so position effects cancel
        for name in names[shift:] + names[:shift]:
            seconds[name].append(time_once(steps[name], iters, device))
    tokens = shape["steps"] * shape["batch"] * iters
    rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    best = {name: tokens / min(s) for name, s in seconds.items()}
    median = {name: statistics.median(s) for name, s in seconds.items()}
    return [
        {
            "cell": cell,
            "impl": impl,
            "hidden_size": hidden,
            "speedup_vs_torch": median["torch"] / median[impl],
            **(
                {
                    "time_vs_lstm": median[impl] / median["torch_lstm"],
                    "time_vs_lstm_best": min(seconds[impl]) / min(seconds["torch_lstm"]),
                    "torch_time_vs_lstm": median["torch"] / median["torch_lstm"],
                    "lstm_hidden_size": hidden_for(shape, "lstm"),
                    "torch_lstm_seconds": seconds["torch_lstm"],
                    "ms_per_pass": {
                        name: 1e3 * median[name] / iters for name in ("torch_lstm", "torch", impl)
                    },
                }
                if matched
                else {}
            ),
            "rnnlab_tokens_per_s": rate[impl],
            "torch_tokens_per_s": rate["torch"],
            "ratio": rate[impl] / rate["torch"],
            "ratio_best": best[impl] / best["torch"],
            "control_ratio": rate["torch_control"] / rate["torch"],
            "rnnlab_seconds": seconds[impl],
            "torch_seconds": seconds["torch"],
            "torch_control_seconds": seconds["torch_control"],
        }
        for impl in impls
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/layers.json"))
    parser.add_argument("--quick", action="store_true", help="short smoke run (2 reps, few iters)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=list(CELLS))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--iters", type=int, default=0, help="passes per rep (0: per shape)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.reps, args.warmup = 2, 1
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    default_iters = QUICK_ITERS if args.quick else ITERS
    results = []
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        iters = args.iters or default_iters[shape_name]
        for cell in args.cells:
            rows = bench_case(cell, shape, args.reps, iters, args.warmup, device, tuple(args.impls))
            for row in rows:
                row = {"shape": shape_name, **row}
                results.append(row)
                print(
                    f"{shape_name:5s} {row['cell']:5s} {row['impl']:9s} "
                    f"rnnlab {row['rnnlab_tokens_per_s']:10.0f} tok/s  "
                    f"torch {row['torch_tokens_per_s']:10.0f} tok/s  ratio {row['ratio']:.3f} "
                    f"(best-of-reps {row['ratio_best']:.3f}; torch-vs-torch control "
                    f"{row['control_ratio']:.3f})"
                    + (
                        f"  time vs nn.LSTM {row['time_vs_lstm']:.2f} "
                        f"(torch.nn's {row['torch_time_vs_lstm']:.2f})"
                        if "time_vs_lstm" in row
                        else ""
                    ),
                    flush=True,
                )
    report = {
        "benchmark": "layers: forward+backward tokens/s, rnnlab vs torch.nn, same process",
        "command": "python benchmarks/bench_layers.py " + " ".join(argv or []),
        "machine": machine_info(device),
        "config": {
            "shapes": {name: SHAPES[name] for name in args.shapes},
            "cells": args.cells,
            "impls": args.impls,
            "reps": args.reps,
            "iters": args.iters or {name: default_iters[name] for name in args.shapes},
            "warmup": args.warmup,
            "quick": args.quick,
            "seed": args.seed,
            "statistic": "tokens/s from the median time over interleaved reps; ratio_best from the "
            "minimum times (less sensitive to load from other processes)",
        },
        "results": results,
    }
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
