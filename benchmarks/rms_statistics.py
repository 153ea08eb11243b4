"""How many training windows should the rms update's gradient statistics come from? (issue 16)

Dynamic evaluation's rms step divides each gradient by its root mean square on the training
data (:func:`rnnlab.evaluation.adapt.gradient_rms`). rnnlab collects it over the first 100
windows; Krause et al. 2018 use a pass over the training set. This measures both on one run:
for each, a small grid of rates on the first 20,000 validation tokens, alone and with a fixed
cache (N 500, θ 0.3, λ 0.1), then the test split with the best of each. Read-only on the run.

    python benchmarks/rms_statistics.py runs/ptb-hour --out benchmarks/results/adaptation/ptb-hour-rms-statistics.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from rnnlab.evaluation.adapt import (  # noqa: E402
    CacheSettings,
    DynamicSettings,
    evaluate_adaptive,
    gradient_rms,
)
from rnnlab.evaluation.run import run_text_data  # noqa: E402
from rnnlab.runs.load import load_text_model  # noqa: E402

CACHE = CacheSettings(size=500, theta=0.3, lam=0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tune-tokens", type=int, default=20000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, vocab, ckpt = load_text_model(args.run_dir, "cpu", "eval")
    data = run_text_data(args.run_dir, ckpt, vocab)
    valid = data.valid[: args.tune_tokens + 1]

    def score(ids, dynamic, rms, cache=None):
        start = time.perf_counter()
        r = evaluate_adaptive(
            model, ids, cache=cache, dynamic=dynamic, rms=rms, batch_size=10, bptt=35
        )
        return r.result.perplexity, time.perf_counter() - start

    rows = []
    for windows in (100, 0):  # 0: the whole training split
        start = time.perf_counter()
        rms = gradient_rms(model, data.train, batch_size=10, bptt=35, windows=windows)
        seconds = time.perf_counter() - start
        grid = []
        for lr in (3e-4, 1e-3, 3e-3):
            for decay in (0.0, 0.02):
                s = DynamicSettings(lr=lr, decay=decay, stat_windows=windows)
                alone, _ = score(valid, s, rms)
                both, _ = score(valid, s, rms, CACHE)
                grid.append(
                    {"lr": lr, "decay": decay, "valid": alone, "valid_cache": both, "settings": s}
                )
                print(
                    json.dumps(
                        {"windows": windows, **s.to_dict(), "valid": alone, "valid_cache": both}
                    ),
                    flush=True,
                )
        best = min(grid, key=lambda g: g["valid"])
        joint = min(grid, key=lambda g: g["valid_cache"])
        test, t1 = score(data.test, best["settings"], rms)
        test_both, t2 = score(data.test, joint["settings"], rms, CACHE)
        rows.append(
            {
                "windows": windows or "all",
                "statistics_seconds": seconds,
                "grid": [{k: v for k, v in g.items() if k != "settings"} for g in grid],
                "test": {
                    "dynamic": {
                        "perplexity": test,
                        "lr": best["lr"],
                        "decay": best["decay"],
                        "seconds": t1,
                    },
                    "cache+dynamic": {
                        "perplexity": test_both,
                        "lr": joint["lr"],
                        "decay": joint["decay"],
                        "seconds": t2,
                    },
                },
            }
        )
        print(json.dumps({"windows": rows[-1]["windows"], "test": rows[-1]["test"]}), flush=True)
    report = {
        "run": args.run_dir,
        "machine": machine_info(),
        "cache": CACHE.to_dict(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
