"""Adapting to the text being evaluated, measured (issue 16): the neural cache and dynamic
evaluation of a trained text run, tuned on the validation split, scored on the test split.

Steps, all exact and deterministic (the machine's load changes the times, not the figures):

1. ``--tune-adaptation`` on the validation split (its first ``--tune-tokens`` tokens, if
   given): the cache grid and the dynamic rates (:mod:`rnnlab.evaluation.tuning`), written to
   ``RUN/adaptation.json``. **This writes into the run directory: point it at a copy.**
2. The test split four ways with those settings: static, ``--cache``, ``--dynamic``, both.

The report, ``benchmarks/results/adaptation/<name>.json``, holds each figure with the settings
it used, the tuning grid and the times.

    cp -r runs/tang-hour /tmp/th
    python benchmarks/adaptation.py /tmp/th --name tang-hour --batch-size 32 --bptt 64 \\
        --tune-tokens 30000 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_report  # noqa: E402

from rnnlab.evaluation.adapt import AdaptationRequest  # noqa: E402
from rnnlab.evaluation.run import evaluate_run  # noqa: E402
from rnnlab.evaluation.tuning import describe, read_settings, tune_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "adaptation"

VARIANTS = {
    "static": AdaptationRequest(),
    "cache": AdaptationRequest(cache=True),
    "dynamic": AdaptationRequest(dynamic=True),
    "cache+dynamic": AdaptationRequest(cache=True, dynamic=True),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a COPY of the run (tuning writes adaptation.json into it)")
    p.add_argument("--name", required=True, help="report name: results/adaptation/NAME.json")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--tune-tokens", type=int, help="tune on this many validation tokens")
    p.add_argument("--method", choices=["rms", "sgd"], default="rms")
    p.add_argument(
        "--stat-windows",
        type=int,
        default=100,
        help="rms: training windows of the gradient statistics (0: the whole training split)",
    )
    p.add_argument("--skip-tuning", action="store_true", help="use the run's adaptation.json")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="report path (default results/adaptation/NAME.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = {"batch_size": args.batch_size, "bptt": args.bptt, "device": args.device}
    report: dict = {
        "run": str(args.run_dir),
        "layout": {"batch_size": args.batch_size, "bptt": args.bptt},
        "machine": machine_info(torch.device(args.device)),
    }
    if not args.skip_tuning:
        t0 = time.perf_counter()
        tuned = tune_run(
            args.run_dir,
            method=args.method,
            tokens=args.tune_tokens,
            progress=True,
            stat_windows=args.stat_windows,
            **layout,
        )
        report["tuning"] = dict(tuned.to_dict(), seconds=time.perf_counter() - t0)
        print("\n".join(tuned.lines()), flush=True)
    else:
        report["tuning"] = {"settings_file": read_settings(args.run_dir), "seconds": None}
    report["test"] = {}
    for name in args.variants:
        request = VARIANTS[name]
        if args.method != "rms" and request.dynamic:
            request = AdaptationRequest(
                cache=request.cache, dynamic=True, dynamic_method=args.method
            )
        t0 = time.perf_counter()
        e = evaluate_run(args.run_dir, "test", adaptation=request, progress=True, **layout)
        row = dict(e.to_dict(), seconds=time.perf_counter() - t0)
        report["test"][name] = row
        named = f" with {describe(e.adaptation)}" if e.adaptation else ""
        print(f"test {name}: perplexity {e.result.perplexity:.2f}{named}", flush=True)
    write_report(args.out or RESULTS / f"{args.name}.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
