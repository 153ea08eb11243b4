"""The quick start against two baselines, in one session on one machine (issue 15).

Contenders, each trained on Tiny Shakespeare's first 90% of characters and scored on the last 10%
(nanoGPT's split, the one ``rnnlab train`` uses):

* ``quick``: ``rnnlab train`` with no arguments (the ``quick`` preset, 3 minutes), as a user
  runs it, in a subprocess; the validation figure is its exact one from ``results.json``;
* ``lstm512``: a plain one-layer 512-unit LSTM written here in plain PyTorch (embedding 64,
  ``nn.LSTM``, linear decoder), Adam at 2e-3 with the rate annealed to zero over the same
  minutes (cosine), windows of 128 characters, batches of 64, gradient norm clipped at 5 (the
  char-rnn defaults), scored exactly over the whole validation text as rnnlab scores it;
* ``nanogpt``: nanoGPT's CPU "baby GPT" recipe from its README (4 layers, width 128, block 64,
  batch 12, 2,000 iterations, no dropout), run from a checkout given with ``--nanogpt``.
  Its validation loss is nanoGPT's own estimate (``--eval-iters`` random batches, 200 here, not
  its README's 20); its wall time includes those estimates.

Every contender gets the same CPU threads (``--threads``); they run one after another, never
side by side. Raw outputs go under ``benchmarks/results/quick_start/``: the rnnlab run's
``results.json`` and ``metrics.jsonl``, the plain loop's curve, nanoGPT's log; the summary in
``benchmarks/results/quick_start.json``.

    python benchmarks/quick_start.py --nanogpt /path/to/nanoGPT --nanogpt-python /path/to/python
    python benchmarks/quick_start.py --only quick lstm512 --minutes 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_report  # noqa: E402

from rnnlab.data.corpora import load_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RAW = RESULTS / "quick_start"


def run_quick(minutes: float, threads: int, extra: list[str]) -> dict:
    """``rnnlab train`` as the README's first command runs it, timed from outside."""
    out = RAW / "quick-run"
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "rnnlab", "train", "--out", str(out), "--threads", str(threads)]
    argv += ["--no-progress", "--json", "--max-minutes", str(minutes), *extra]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"rnnlab train failed: {proc.stderr.strip()}")
    summary = json.loads(proc.stdout)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind") == "train"]
    for name in ("best.safetensors", "last.safetensors"):
        (out / name).unlink(missing_ok=True)  # weights are not results
    return {
        "valid_nats": summary["valid"]["loss"],
        "valid_bpc": summary["valid"]["bpc"],
        "train_minutes": summary["wall_time"] / 60,
        "wall_minutes_with_setup_and_eval": wall / 60,
        "tokens": train_rows[-1]["tokens"] if train_rows else None,
        "steps": summary["steps"],
        "sample": summary.get("sample"),
        "argv": ["rnnlab", *argv[3:]],
        "stderr_first_line": proc.stderr.splitlines()[0] if proc.stderr else "",
    }


class PlainLSTM(nn.Module):
    def __init__(self, vocab: int, embed: int = 64, hidden: int = 512) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state=None):
        out, state = self.lstm(self.embedding(x), state)
        return self.decoder(out), state


def columns(ids: torch.Tensor, batch: int) -> torch.Tensor:
    n = len(ids) // batch
    return ids[: n * batch].view(batch, n).t().contiguous()  # (n, batch)


@torch.no_grad()
def exact_nll(model: PlainLSTM, ids: torch.Tensor, batch: int = 32, window: int = 128) -> float:
    """Mean NLL per character over every predicted character of ``ids`` (columns, state carried)."""
    model.eval()
    data = columns(ids, batch)
    total, count, state = 0.0, 0, None
    for i in range(0, len(data) - 1, window):
        x, y = data[i : i + window], data[i + 1 : i + 1 + window]
        x = x[: len(y)]
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        count += y.numel()
    model.train()
    return float(total) / count


def run_lstm512(minutes: float, threads: int, seed: int = 1) -> dict:
    torch.manual_seed(seed)
    corpus = load_corpus("tinyshakespeare")
    chars = sorted(set(corpus.train) | set(corpus.valid))
    index = {c: i for i, c in enumerate(chars)}
    train = torch.tensor([index[c] for c in corpus.train])
    valid = torch.tensor([index[c] for c in corpus.valid])
    batch, window, lr = 64, 128, 2e-3
    model = PlainLSTM(len(chars))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = columns(train, batch)
    budget = minutes * 60
    curve, tokens, step, state = [], 0, 0, None
    start = time.perf_counter()
    done = False
    while not done:
        for i in range(0, len(data) - 1 - window, window):
            spent = time.perf_counter() - start
            if spent >= budget:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * spent / budget))
            x, y = data[i : i + window], data[i + 1 : i + 1 + window]
            if state is not None:
                state = tuple(s.detach() for s in state)
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            tokens += y.numel()
            step += 1
            if step % 50 == 0:
                curve.append(
                    {"step": step, "tokens": tokens, "seconds": spent, "loss": loss.item()}
                )
        state = None
    train_seconds = time.perf_counter() - start
    valid_nats = exact_nll(model, valid)
    (RAW / "lstm512_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    return {
        "valid_nats": valid_nats,
        "valid_bpc": valid_nats / math.log(2),
        "train_minutes": train_seconds / 60,
        "tokens": tokens,
        "steps": step,
        "threads": threads,
    }


def run_nanogpt(checkout: Path, python: str, threads: int, eval_iters: int) -> dict:
    """nanoGPT's README CPU recipe for Shakespeare characters, with its own data preparation
    (``data/shakespeare_char/prepare.py`` must have been run in the checkout)."""
    argv = [
        python, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
        f"--eval_iters={eval_iters}", "--log_interval=100", "--block_size=64", "--batch_size=12",
        "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000",
        "--dropout=0.0", "--eval_interval=500", "--out_dir=/tmp/nanogpt-quick-start",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (RAW / "nanogpt.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"nanoGPT failed:\n{log[-2000:]}")
    evals = [
        {"iter": int(m[1]), "train_nats": float(m[2]), "valid_nats": float(m[3])}
        for m in re.finditer(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", log)
    ]
    last = evals[-1]
    return {
        "valid_nats": last["valid_nats"],
        "valid_bpc": last["valid_nats"] / math.log(2),
        "wall_minutes_with_evals": wall / 60,
        "tokens": 2000 * 12 * 64,
        "iterations": 2000,
        "evals": evals,
        "eval_iters": eval_iters,
        "argv": argv,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=("quick", "lstm512", "nanogpt"))
    p.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout with prepared data")
    p.add_argument("--nanogpt-python", default=sys.executable)
    p.add_argument("--eval-iters", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS / "quick_start.json")
    p.add_argument("--quick-args", default="", help="extra rnnlab train flags (tuning)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    RAW.mkdir(parents=True, exist_ok=True)
    which = args.only or ["quick", "lstm512", "nanogpt"]
    report = {"machine": machine_info(), "minutes": args.minutes, "results": {}}
    for name in which:
        print(f"-- {name}", flush=True)
        if name == "quick":
            result = run_quick(args.minutes, args.threads, args.quick_args.split())
        elif name == "lstm512":
            result = run_lstm512(args.minutes, args.threads)
        else:
            if args.nanogpt is None:
                raise SystemExit("give --nanogpt DIR (a nanoGPT checkout) to run its recipe")
            result = run_nanogpt(args.nanogpt, args.nanogpt_python, args.threads, args.eval_iters)
        report["results"][name] = result
        print(json.dumps({k: v for k, v in result.items() if k != "evals"}, indent=1), flush=True)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
