"""Fine-tuning measured (issue 15): a Tang model fine-tuned on one poet, against the base
model and against a model trained on that poet alone for the same minutes.

Three models, scored exactly on the poet's held-out test poems (``--corpus tang --poet NAME``:
the poet's poems keep the whole corpus's split, so the test poems were never trained on, not by
the base either), with the same vocabulary (the base run's; characters outside it count as
``<unk>`` for all three alike):

* ``base``: the given whole-corpus run (e.g. ``rnnlab train --preset tang-quatrains``);
* ``fine-tuned``: ``rnnlab train --init-from BASE --corpus tang --poet NAME --unk`` for
  ``--minutes``, Adam at ``--lr`` annealed to zero over the minutes (cosine);
* ``poet alone``: the same command from a run of the same architecture and vocabulary that has
  taken one step at a learning rate of 1e-12 (so its weights are the initial ones; the step is
  bounded by ``--max-minutes``, not ``--max-steps``, which a fine-tuned run would inherit): the
  poet's poems alone, from scratch, with the same settings and minutes.

The two trainings run side by side, one thread each, so both meet the same machine load. Raw
outputs: the three runs' ``metrics.jsonl`` and ``results.json`` and the summary
``benchmarks/results/fine_tune.json``.

    python benchmarks/fine_tune.py --base runs/tang --poet 李白 --minutes 5
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_report  # noqa: E402

from rnnlab.data.dataset import DataConfig, load_data  # noqa: E402
from rnnlab.evaluation.text import evaluate  # noqa: E402
from rnnlab.runs.load import load_model, load_run_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def rnnlab(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen, what: str) -> str:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed: {err.strip()[-2000:]}")
    return out


def poet_test(run: Path, poet: str) -> dict:
    """Exact NLL per character of ``run``'s best weights on the poet's test poems."""
    model, vocab, ckpt = load_model(run)
    saved = load_run_config(run).data
    options = dict(saved.corpus_options or {}, poet=poet)
    data = load_data(DataConfig(corpus="tang", level="char", corpus_options=options), vocab=vocab)
    result = evaluate(model, data.test, batch_size=16, bptt=100, level="char")
    unk = float((data.test == vocab.unk_id).float().mean())
    return {
        "test_loss": result.loss,
        "test_ppl": math.exp(result.loss),
        "tokens": result.tokens,
        "unk_share": unk,
        "step": ckpt.meta.get("step"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=Path, required=True, help="a whole-Tang run directory")
    p.add_argument("--poet", default="李白")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--work", type=Path, default=Path("runs/fine-tune-bench"))
    p.add_argument("--out", type=Path, default=RESULTS / "fine_tune.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    init, tuned, alone = args.work / "init", args.work / "fine-tuned", args.work / "poet-alone"

    # a run with the base's architecture and vocabulary whose weights are the initial ones
    base_config = args.base / "run.json"
    finish(
        rnnlab(
            "train", "--config", str(base_config), "--max-minutes", "0.001", "--lr", "1e-12",
            "--threads", "1", "--no-progress", "--no-sample", "--out", str(init),
        ),
        "the initial run",
    )  # fmt: skip
    common = [
        "--corpus", "tang", "--poet", args.poet, "--unk", "--optimizer", "adam", "--lr",
        str(args.lr), "--schedule", "cosine", "--max-minutes", str(args.minutes), "--epochs",
        "1000", "--threads", "1", "--no-progress", "--no-sample", "--json",
    ]  # fmt: skip
    start = time.perf_counter()
    procs = {
        "fine-tuned": rnnlab("train", "--init-from", str(args.base), *common, "--out", str(tuned)),
        "poet alone": rnnlab("train", "--init-from", str(init), *common, "--out", str(alone)),
    }
    summaries = {name: json.loads(finish(proc, name)) for name, proc in procs.items()}
    wall = time.perf_counter() - start

    report = {
        "machine": machine_info(),
        "poet": args.poet,
        "minutes": args.minutes,
        "lr": args.lr,
        "wall_seconds_side_by_side": wall,
        "base_run": str(args.base),
        "results": {
            "base": poet_test(args.base, args.poet),
            "fine-tuned": poet_test(tuned, args.poet),
            "poet alone": poet_test(alone, args.poet),
        },
        "trained": {
            name: {"steps": s["steps"], "wall_time": s["wall_time"], "valid": s["valid"]}
            for name, s in summaries.items()
        },
    }
    raw = RESULTS / "fine_tune"
    raw.mkdir(parents=True, exist_ok=True)
    for name, run in (("fine-tuned", tuned), ("poet-alone", alone)):
        for file in ("metrics.jsonl", "results.json", "run.json"):
            shutil.copy(run / file, raw / f"{name}.{file}")
    for name, r in report["results"].items():
        print(
            f"{name:11s} test ppl {r['test_ppl']:8.1f}  ({r['tokens']:,} chars, unk {r['unk_share']:.1%})"
        )
    write_report(args.out, report)


if __name__ == "__main__":
    main()
