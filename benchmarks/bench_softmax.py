"""Training speed of the adaptive softmax against the full softmax at the WikiText-2 shape.

Two contenders, each the real :class:`rnnlab.training.trainer.Trainer` loop (``bench_train.TrainerLoop``:
forward with the targets, backward, clip, optimizer step and the per-step bookkeeping), in one
process, same recurrent stack and token stream:

* ``softmax``: ``--head softmax``, the (T*B, H) x (H, V) decoder and a V-wide log-softmax;
* ``adaptive``: ``--head adaptive`` (Grave et al. 2017; torch's AdaptiveLogSoftmaxWithLoss),
  cutoffs (2000, 10000) by default: a head softmax over 2,002 outputs for every token, and a
  tail cluster's narrow softmax only for the tokens whose target falls in it.

Shape (issue 8: "WikiText-2 (33k words)"): vocabulary 33,278, a 2-layer LSTM with embedding and
hidden 256, batch 20, bptt 35, SGD. Data: a synthetic Zipf stream (exponent 1) over the
vocabulary, ids ordered by frequency as rnnlab's vocabularies are; the adaptive head's cost
depends on how often targets fall in the tail, so Zipf matters here, not just the shape (in a
Zipf-1 stream over 33,278 words about 28% of the tokens lie beyond id 2,000).

Repetitions of ``--steps`` windows are interleaved with a rotating order after one warm-up
repetition each; tokens/s from the median repetition, ``ratio`` = adaptive / softmax (also from
the best repetitions and per CPU second, as in bench_train). Exact-evaluation tokens/s
(:func:`rnnlab.evaluation.text.evaluate`, the targets path of each head) is measured the same way.

``--budget-minutes M`` (needs ``RNNLAB_DATA_DIR`` with WikiText-2) adds the issue's quality
comparison: each head trains on the real corpus for M minutes of training time (the trainer's
``max_minutes``; same seed and settings), and the report gives its tokens/s and the exact
validation and test perplexity at the end.

    python benchmarks/bench_softmax.py                        # -> benchmarks/results/softmax.json
    python benchmarks/bench_softmax.py --quick                # a smoke run of seconds
    python benchmarks/bench_softmax.py --threads 1 --steps 10 --reps 5
    RNNLAB_DATA_DIR=../shared/data python benchmarks/bench_softmax.py --budget-minutes 30
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _common import machine_info, write_report
from bench_train import (
    Timing,
    TrainerLoop,
    clock,
    interleave,
    keep_freed_memory,
    ratios,
    since,
    summarize,
)
from torch import Tensor

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig, LMData, load_data
from rnnlab.data.vocab import Vocab
from rnnlab.evaluation.text import evaluate
from rnnlab.models.config import LanguageModelConfig
from rnnlab.training.trainer import Trainer

SHAPE = {"vocab": 33_278, "hidden": 256, "layers": 2, "batch": 20, "bptt": 35, "dropout": 0.0}
HEADS = ("softmax", "adaptive")
LR, CLIP = 20.0, 0.25
EVAL_BATCH = 10


def zipf_data(vocab: int, n_train: int, n_eval: int, seed: int) -> LMData:
    """A Zipf (exponent 1) id stream, id 1 the most frequent (0 is <unk>, never drawn)."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.zeros(vocab, dtype=torch.float64)
    probs[1:] = 1.0 / torch.arange(1, vocab, dtype=torch.float64)
    words = Vocab(["<unk>"] + [f"w{i}" for i in range(1, vocab)], level="word")

    def draw(n: int) -> Tensor:
        return torch.multinomial(probs, n, replacement=True, generator=g)

    return LMData("synthetic-zipf", "word", words, draw(n_train), draw(n_eval), draw(n_eval))


def run_config(head: str, args: argparse.Namespace, data: DataConfig | None = None) -> RunConfig:
    h = args.hidden
    adaptive = dict(cutoffs=tuple(args.cutoffs), div_value=args.div_value)
    return RunConfig(
        data=data or DataConfig(),
        model=LanguageModelConfig(
            cell="lstm",
            embed_size=h,
            hidden_size=h,
            num_layers=SHAPE["layers"],
            dropout=args.dropout,
            head=head,
            **(adaptive if head == "adaptive" else {}),
        ),
        optim=OptimConfig(optimizer="sgd", lr=LR, clip=CLIP, schedule="constant"),
        train=TrainConfig(
            bptt=SHAPE["bptt"],
            batch_size=SHAPE["batch"],
            eval_batch_size=EVAL_BATCH,
            epochs=1_000_000,
            device=args.device,
            threads=args.threads or None,
            seed=args.seed,
        ),
    )


def bench_speed(args: argparse.Namespace) -> dict:
    """Interleaved training and evaluation tokens/s of the two heads on the Zipf stream."""
    batch, bptt, steps = SHAPE["batch"], SHAPE["bptt"], args.steps
    windows = steps * (args.reps + 1)
    data = zipf_data(args.vocab, batch * (windows * bptt + 2), args.eval_tokens + 1, args.seed)
    short = LMData(data.name, data.level, data.vocab, data.train, data.valid[:1000], data.test)
    loops: dict[str, TrainerLoop] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for head in HEADS:
            trainer = Trainer(run_config(head, args), Path(tmp) / head, data=short)
            loops[head] = TrainerLoop(trainer)
        runs: dict[str, Callable[[], Timing]] = {
            head: (lambda loop=loop: loop.run(steps)) for head, loop in loops.items()
        }
        for run in runs.values():  # warm-up repetition
            run()
        warmup_loss = {head: loop.losses()[0] for head, loop in loops.items()}
        seconds = interleave(runs, args.reps)
        tokens = steps * bptt * batch
        train = {head: summarize(s, tokens, math.nan) for head, s in seconds.items()}
        for row in train.values():
            del row["gflops"]  # no FLOP model for the adaptive head's data-dependent work
        models = {head: loop.trainer.model for head, loop in loops.items()}
        cfg = loops["adaptive"].trainer.model_config
        result = {
            "shape": {**SHAPE, "vocab": args.vocab, "hidden": args.hidden},
            "cutoffs": list(cfg.cutoffs),
            "div_value": cfg.div_value,
            "tail_share": tail_share(data.train, cfg.cutoffs[0]),
            "parameters": {head: m.num_parameters() for head, m in models.items()},
            "steps_per_rep": steps,
            "tokens_per_rep": tokens,
            "train": train,
            **ratios(train, "adaptive", "softmax"),
            "warmup_loss": warmup_loss,
            "eval": bench_eval(models, data.valid, args),
        }
    return result


def tail_share(ids: Tensor, head_size: int) -> float:
    """Share of the tokens whose id lies beyond the adaptive head's shortlist."""
    return float((ids >= head_size).double().mean())


def bench_eval(models: dict, ids: Tensor, args: argparse.Namespace) -> dict:
    """Exact-evaluation tokens/s of each head (``evaluate``, batch 10, window 50)."""
    loss: dict[str, float] = {}

    def timed(head: str) -> Callable[[], Timing]:
        def run() -> Timing:
            start = clock()
            loss[head] = evaluate(models[head], ids, batch_size=EVAL_BATCH, bptt=50).loss
            return since(start)

        return run

    runs = {head: timed(head) for head in models}
    for run in runs.values():  # warm-up
        run()
    seconds = interleave(runs, args.reps)
    out: dict = {"tokens": ids.numel() - 1, "batch": EVAL_BATCH, "bptt": 50, "loss": loss}
    for head, s in seconds.items():
        row = summarize(s, ids.numel() - 1, math.nan)
        del row["gflops"]
        out[head] = row
    out.update(ratios(out, "adaptive", "softmax"))
    return out


def bench_budget(args: argparse.Namespace) -> dict:
    """Each head trained on WikiText-2 for ``--budget-minutes``; exact valid/test perplexity."""
    out: dict = {"minutes": args.budget_minutes, "corpus": "wikitext2"}
    data_cfg = DataConfig(corpus="wikitext2", level="word")
    data = load_data(data_cfg)
    if args.eval_tokens_budget:  # a shorter exact evaluation (smoke runs)
        n = args.eval_tokens_budget + 1
        data = LMData(data.name, data.level, data.vocab, data.train, data.valid[:n], data.test[:n])
    for head in HEADS:
        cfg = run_config(head, args, data_cfg)
        cfg.train.max_minutes = args.budget_minutes
        cfg.train.epochs = 1000
        with tempfile.TemporaryDirectory() as tmp:
            result = Trainer(cfg, Path(tmp) / head, data=data).fit()
        p = result.progress
        out[head] = {
            "steps": p.step,
            "tokens": p.tokens,
            "train_seconds": p.elapsed,
            "tokens_per_s": p.tokens / p.elapsed if p.elapsed else math.nan,
            "valid": result.valid.to_dict() if result.valid else None,
            "test": result.test.to_dict() if result.test else None,
        }
        print(
            f"budget {args.budget_minutes:g} min  {head:8s} {p.step} steps "
            f"{out[head]['tokens_per_s']:8.0f} tok/s  valid ppl "
            f"{result.valid.perplexity if result.valid else math.nan:.2f}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/softmax.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--steps", type=int, default=10, help="windows per repetition")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vocab", type=int, default=SHAPE["vocab"], help="vocabulary size")
    parser.add_argument("--hidden", type=int, default=SHAPE["hidden"], help="embed = hidden")
    parser.add_argument("--dropout", type=float, default=SHAPE["dropout"])
    parser.add_argument(
        "--cutoffs",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[2000, 10000],
        help="adaptive cutoffs (default 2000,10000)",
    )
    parser.add_argument("--div-value", type=float, default=4.0)
    parser.add_argument("--eval-tokens", type=int, default=20_000, help="eval stream length")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=0.0,
        help="also train each head this long on WikiText-2 (needs RNNLAB_DATA_DIR)",
    )
    parser.add_argument(
        "--eval-tokens-budget",
        type=int,
        default=0,
        help="budget mode: evaluate on the first N valid/test tokens only (0: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--malloc",
        choices=("default", "keep"),
        default="default",
        help="keep: no mmap / heap trimming in glibc (steadier ratios; see bench_train)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.eval_tokens = 2, 2, 2_000
    if args.budget_minutes and not os.environ.get("RNNLAB_DATA_DIR"):
        parser.error("--budget-minutes trains on WikiText-2: set RNNLAB_DATA_DIR")
    if args.malloc == "keep" and not keep_freed_memory():
        parser.error("--malloc keep needs glibc (libc.so.6)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    speed = bench_speed(args)
    tr, ev = speed["train"], speed["eval"]
    print(
        f"train  softmax {tr['softmax']['tokens_per_s']:7.0f} tok/s  adaptive "
        f"{tr['adaptive']['tokens_per_s']:7.0f} tok/s  ratio {speed['ratio']:.2f} (best-of-reps "
        f"{speed['ratio_best']:.2f}, per CPU s {speed['ratio_cpu']:.2f})",
        flush=True,
    )
    print(
        f"eval   softmax {ev['softmax']['tokens_per_s']:7.0f} tok/s  adaptive "
        f"{ev['adaptive']['tokens_per_s']:7.0f} tok/s  ratio {ev['ratio']:.2f}",
        flush=True,
    )
    report = {
        "benchmark": "softmax: training tokens/s of the adaptive softmax vs the full softmax "
        "(rnnlab's Trainer loop for both), WikiText-2 shape, same process, interleaved",
        "command": "python benchmarks/bench_softmax.py " + " ".join(argv or []),
        "machine": machine_info(torch.device(args.device)),
        "config": {
            "lr": LR,
            "clip": CLIP,
            "steps": args.steps,
            "reps": args.reps,
            "threads": args.threads or torch.get_num_threads(),
            "quick": args.quick,
            "seed": args.seed,
            "malloc": args.malloc,
            "data": "synthetic Zipf (exponent 1) over the vocabulary",
            "statistic": "tokens/s from the median time over interleaved reps; ratio = adaptive "
            "/ softmax; ratio_best from the minimum times; ratio_cpu from the median CPU "
            "seconds of the process",
        },
        "speed": speed,
    }
    if args.budget_minutes:
        report["budget"] = bench_budget(args)
    report["median_step_seconds"] = {
        head: statistics.median(tr[head]["seconds"]) / args.steps for head in HEADS
    }
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
