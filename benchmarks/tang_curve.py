"""A Tang preset's test perplexity against minutes (issue 19): train it with snapshots, then
score every snapshot on the test poems.

``train``: runs ``rnnlab train --preset NAME --threads N --out RUN`` with ``--save-every K`` and
copies each new ``last.safetensors`` to ``RUN/snapshots/step-S.safetensors`` as it appears (the
copy is outside the training process, so the budget's clock is not charged for it). ``curve``:
evaluates each snapshot exactly on the run's own test split (titles, if the run was trained
with them, are read and not scored: perplexity per poem character) and writes
``benchmarks/results/tang_curve/NAME.json`` with the minutes and tokens each snapshot had
trained. Run both presets in the same conditions (the machine otherwise idle)::

    python benchmarks/tang_curve.py train --preset tang-hour --out runs/tang-hour --save-every 300
    python benchmarks/tang_curve.py train --preset tang-quatrains --out runs/tang-quatrains \\
        --save-every 500
    python benchmarks/tang_curve.py curve runs/tang-hour runs/tang-quatrains
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from rnnlab.data.dataset import load_data  # noqa: E402
from rnnlab.evaluation.text import evaluate  # noqa: E402
from rnnlab.runs.checkpoint import load_checkpoint  # noqa: E402
from rnnlab.runs.load import load_model, load_run_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tang_curve"


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    snaps = out / "snapshots"
    cmd = [
        sys.executable, "-m", "rnnlab", "train", "--preset", args.preset,
        "--threads", str(args.threads), "--save-every", str(args.save_every),
        "--out", str(out), "--no-progress", "--no-sample", *args.extra,
    ]  # fmt: skip
    log = open(f"{out}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    seen = 0.0
    while True:
        done = proc.poll() is not None
        last = out / "last.safetensors"
        try:
            mtime = last.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime > seen:
            time.sleep(1.0)  # written atomically; let a rename settle
            snaps.mkdir(parents=True, exist_ok=True)
            step = load_checkpoint(last).meta.get("progress", {}).get("step")
            shutil.copy2(last, snaps / f"step-{step}.safetensors")
            seen = mtime
        if done:
            break
        time.sleep(5.0)
    if proc.returncode != 0:
        raise SystemExit(f"training failed; see {out}.log")


def curve(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for run in map(Path, args.runs):
        config = load_run_config(run)
        model, vocab, _ = load_model(run)
        data = load_data(config.data, vocab=vocab, policy="recorded")
        test, unscored = data.split("test"), data.unscored.get("test")
        points = []
        snaps = sorted(
            (run / "snapshots").glob("step-*.safetensors"), key=lambda p: int(p.stem[5:])
        )
        if args.steps:
            snaps = [p for p in snaps if int(p.stem[5:]) in set(args.steps)]
        for snap in snaps:
            model, _, ckpt = load_model(snap)
            progress = ckpt.meta.get("progress", {})
            result = evaluate(model, test, batch_size=32, bptt=100, level="char", unscored=unscored)
            points.append(
                {
                    "step": progress.get("step"),
                    "minutes": round(progress.get("elapsed", 0.0) / 60, 2),
                    "tokens": progress.get("tokens"),
                    "test_loss": result.loss,
                    "test_ppl": result.perplexity,
                    "scored_tokens": result.tokens,
                }
            )
            print(run.name, points[-1], flush=True)
        report = {
            "run": run.name,
            "preset": config.preset,
            "machine": machine_info(),
            "threads_eval": args.threads,
            "vocabulary": len(vocab),
            # <unk> is scored as one token (the characters past the 5,000 most frequent)
            "test_unk_fraction": _unk_fraction(test, unscored, vocab.unk_id),
            "results": json.loads((run / "results.json").read_text()),
            "points": points,
        }
        out = RESULTS / f"{config.preset or run.name}.json"
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print("wrote", out)


def _unk_fraction(ids: torch.Tensor, unscored: torch.Tensor | None, unk: int) -> float:
    """The fraction of the scored test targets that are ``<unk>``."""
    scored = torch.ones_like(ids, dtype=torch.bool) if unscored is None else ~unscored
    scored[0] = False  # the first token is never a target
    return float((ids[scored] == unk).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(required=True)
    t = sub.add_parser("train")
    t.add_argument("--preset", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--save-every", type=int, required=True)
    t.add_argument("extra", nargs="*", help="more rnnlab train flags (after --)")
    t.set_defaults(func=train)
    c = sub.add_parser("curve")
    c.add_argument("runs", nargs="+")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",")],
        help="only the snapshots of these steps (e.g. the epochs' ends), comma-separated",
    )
    c.set_defaults(func=curve)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
