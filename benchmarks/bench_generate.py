"""Generation speed: rnnlab's FastStepper against the naive per-step torch.nn.LSTM loop, same run.

Both contenders hold the same weights (a 2x512 character LSTM by default: vocabulary 65, embedding
128, as ``--preset char-shakespeare``) and run the same loop: feed one token per row, get the
next-token logits, draw the next token (softmax, multinomial). They differ only in the step:

* ``naive``: ``nn.Embedding -> nn.LSTM -> nn.Linear`` called once per step with a (1, B) input
  and the state carried, under ``torch.no_grad()`` (what a char-rnn sampling script does);
* ``model``: rnnlab's ``LanguageModel.forward`` called once per step (for reference);
* ``fast``: :class:`rnnlab.generation.fast_step.FastStepper` (weights pulled out once, a few fused ops),
  exact: the same distributions as the model;
* ``fast_bf16``: the same stepper holding weights and state in bfloat16 (approximate: the
  largest total-variation distance to the exact next-token distributions is recorded);
* ``fast_int8``: the same stepper with int8 weights and dynamically quantized activations
  (approximate, recorded the same way);
* ``sample_int8``: the library's own sampling loop, :func:`rnnlab.generation.sampling.sample_ids` on the
  int8 stepper (what ``rnnlab sample --precision int8`` runs): its draw is
  :func:`rnnlab.generation.sampling.pick` (inverse CDF, one uniform per row) instead of softmax and
  ``torch.multinomial``, and it writes the ids out as generation does;
* ``sample_int8_sharded`` (batch > 1, threads > 1): the same with ``workers`` = threads, the
  rows split into one batch per core, each on its own thread with one torch thread
  (``rnnlab sample --workers``).

With ``--run RUN_DIR`` the weights are a trained model's (e.g. ``--preset char-shakespeare``);
the distances to the exact distributions are then measured along a sequence the exact model
samples itself, which is the text generation actually produces.

Characters/s = B * steps / seconds (summed over the B rows). Repetitions are interleaved with a
rotating order so that load from other processes hits every contender alike; the median over
repetitions is reported, and the best (least disturbed) one too. Before timing, the fast
stepper's logits are checked against the naive loop's.

    python benchmarks/bench_generate.py                 # -> benchmarks/results/generate.json
    python benchmarks/bench_generate.py --quick         # a short smoke run
    python benchmarks/bench_generate.py --threads 1 2 --batches 1 64 --reps 5
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import torch
from _common import bench, machine_info, write_report
from torch import Tensor, nn

from rnnlab.generation.fast_step import FastStepper
from rnnlab.generation.sampling import SamplingConfig, sample_ids
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.runs.load import load_model

TARGETS = {1: 3_000.0, 64: 50_000.0}  # chars/s from issue 4 (2 CPU cores)


def _load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: how busy the machine was (other processes)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


class NaiveLM(nn.Module):
    """Embedding -> torch.nn.LSTM -> Linear, holding a LanguageModel's weights."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        c = model.config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_size)
        self.lstm = nn.LSTM(c.embed_size, c.hidden_size, c.num_layers)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        self.embedding.load_state_dict(model.embedding.state_dict())
        self.lstm.load_state_dict(model.rnn.state_dict())
        self.decoder.load_state_dict(model.decoder.state_dict())

    def forward(self, tokens: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple]:
        out, state = self.lstm(self.embedding(tokens), state)  # (1, B, H)
        return self.decoder(out), state  # (1, B, V)


def draw(logits: Tensor, generator: torch.Generator) -> Tensor:
    """The next token per row: softmax, then one multinomial draw."""
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


def naive_loop(naive: NaiveLM, batch: int, steps: int) -> Callable[[], None]:
    def run() -> None:
        gen = torch.Generator().manual_seed(0)
        x, state = torch.zeros(1, batch, dtype=torch.long), None
        with torch.no_grad():
            for _ in range(steps):
                logits, state = naive(x, state)
                x = draw(logits[0], gen).unsqueeze(0)

    return run


def model_loop(model: LanguageModel, batch: int, steps: int) -> Callable[[], None]:
    def run() -> None:
        gen = torch.Generator().manual_seed(0)
        x, state = torch.zeros(1, batch, dtype=torch.long), model.init_state(batch)
        with torch.no_grad():
            for _ in range(steps):
                logits, state = model(x, state)
                x = draw(logits[0], gen).unsqueeze(0)

    return run


def fast_loop(stepper: FastStepper, batch: int, steps: int) -> Callable[[], None]:
    def run() -> None:
        gen = torch.Generator().manual_seed(0)
        x, state = torch.zeros(batch, dtype=torch.long), stepper.init_state(batch)
        with torch.inference_mode():
            for _ in range(steps):
                logits, state = stepper.step(x, state)
                x = draw(logits, gen)

    return run


def library_loop(
    stepper: FastStepper, batch: int, steps: int, workers: int = 1
) -> Callable[[], None]:
    def run() -> None:
        gen = torch.Generator().manual_seed(0)
        cfg = SamplingConfig()
        sample_ids(stepper, [0], length=steps, count=batch, cfg=cfg, generator=gen, workers=workers)

    return run


def sample_tokens(stepper: FastStepper, steps: int = 200, rows: int = 2) -> Tensor:
    """(steps, rows) tokens the exact stepper draws at temperature 1 (the path to compare on)."""
    gen = torch.Generator().manual_seed(1)
    x, state = torch.zeros(rows, dtype=torch.long), stepper.init_state(rows)
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            out.append(x)
            logits, state = stepper.step(x, state)
            x = draw(logits, gen)
    return torch.stack(out)


def compare(naive: NaiveLM, stepper: FastStepper, tokens: Tensor) -> tuple[float, float]:
    """Largest |logit difference| and largest total-variation distance between the next-token
    distributions of the naive loop and a stepper, along ``tokens`` (steps, rows)."""
    steps = tokens.size(0)
    logit_diff, tv, naive_state, state = 0.0, 0.0, None, stepper.init_state(tokens.size(1))
    with torch.no_grad():
        for t in range(steps):
            a, naive_state = naive(tokens[t : t + 1], naive_state)
            b, state = stepper.step(tokens[t], state)
            logit_diff = max(logit_diff, float((a[0] - b).abs().max()))
            p, q = torch.softmax(a[0].double(), -1), torch.softmax(b.double(), -1)
            tv = max(tv, float(0.5 * (p - q).abs().sum(-1).max()))
    return logit_diff, tv


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generate.json"))
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="torch threads to try")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--chars", type=int, default=0, help="steps per rep (0: per batch size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--run", type=Path, help="a trained LSTM run directory to take weights from"
    )
    args = parser.parse_args(argv)
    load_at_start = _load_average()
    if args.quick:
        args.reps = 2
    torch.manual_seed(args.seed)
    if args.run is not None:
        model = load_model(args.run)[0].eval()
        config = model.config
        if config.cell != "lstm":
            raise SystemExit("--run needs an LSTM model (the naive loop is torch.nn.LSTM)")
    else:
        config = LanguageModelConfig(
            vocab_size=args.vocab,
            cell="lstm",
            embed_size=args.embed,
            hidden_size=args.hidden,
            num_layers=args.layers,
        )
        model = LanguageModel(config).eval()
    naive = NaiveLM(model).eval()
    stepper = FastStepper(model)
    stepper_bf16 = FastStepper(model, dtype=torch.bfloat16)
    stepper_int8 = FastStepper(model, dtype=torch.qint8)
    path = sample_tokens(stepper)
    max_diff, _ = compare(naive, stepper, path)
    if max_diff > 1e-4:
        raise SystemExit(f"the fast stepper disagrees with torch.nn.LSTM by {max_diff}")
    bf16_diff, bf16_tv = compare(naive, stepper_bf16, path)
    int8_diff, int8_tv = compare(naive, stepper_int8, path)
    print(f"distance to the exact distributions: bf16 TV {bf16_tv:.2e}, int8 TV {int8_tv:.2e}")
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            steps = args.chars or (
                (60 if args.quick else 300) if batch == 1 else (10 if args.quick else 40)
            )
            loops = {
                "naive": naive_loop(naive, batch, steps),
                "model": model_loop(model, batch, steps),
                "fast": fast_loop(stepper, batch, steps),
                "fast_bf16": fast_loop(stepper_bf16, batch, steps),
                "fast_int8": fast_loop(stepper_int8, batch, steps),
                "sample_int8": library_loop(stepper_int8, batch, steps),
            }
            if batch > 1 and threads > 1:  # the rows split into one batch per core
                loops["sample_int8_sharded"] = library_loop(stepper_int8, batch, steps, threads)
            timing = bench(loops, args.reps, batch * steps)
            row = {
                "threads": threads,
                "batch": batch,
                "steps": steps,
                **{f"{name}_chars_per_s": t["chars_per_s"] for name, t in timing.items()},
                **{f"{name}_chars_per_s_best": t["chars_per_s_best"] for name, t in timing.items()},
                "ratio_fast_over_naive": timing["fast"]["chars_per_s"]
                / timing["naive"]["chars_per_s"],
                "ratio_fast_over_model": timing["fast"]["chars_per_s"]
                / timing["model"]["chars_per_s"],
                "ratio_fast_bf16_over_naive": timing["fast_bf16"]["chars_per_s"]
                / timing["naive"]["chars_per_s"],
                "ratio_fast_int8_over_naive": timing["fast_int8"]["chars_per_s"]
                / timing["naive"]["chars_per_s"],
                "ratio_sample_int8_over_naive": timing["sample_int8"]["chars_per_s"]
                / timing["naive"]["chars_per_s"],
                "ratio_sample_int8_sharded_over_naive": (
                    timing["sample_int8_sharded"]["chars_per_s"] / timing["naive"]["chars_per_s"]
                    if "sample_int8_sharded" in timing
                    else None
                ),
                "target_chars_per_s": TARGETS.get(batch),
                "seconds": {name: t["seconds"] for name, t in timing.items()},
            }
            results.append(row)
            rates = "  ".join(
                f"{name} {t['chars_per_s']:.0f} (best {t['chars_per_s_best']:.0f})"
                for name, t in timing.items()
            )
            print(
                f"threads {threads} batch {batch}: {rates} chars/s; fast/naive "
                f"{row['ratio_fast_over_naive']:.1f}x, bf16/naive "
                f"{row['ratio_fast_bf16_over_naive']:.1f}x, int8/naive "
                f"{row['ratio_fast_int8_over_naive']:.1f}x, sample_int8/naive "
                f"{row['ratio_sample_int8_over_naive']:.1f}x",
                flush=True,
            )
    report = {
        "benchmark": "generation chars/s: FastStepper vs per-step torch.nn.LSTM, same process",
        "note": "2 CPU cores shared with other jobs: numbers are noisy (see load_average)",
        "command": "python benchmarks/bench_generate.py " + " ".join(argv or []),
        "machine": {
            **machine_info(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": _load_average(),
        },
        "config": {
            "model": config.to_dict(),
            "reps": args.reps,
            "quick": args.quick,
            "seed": args.seed,
            "max_logit_difference_fast_vs_naive": max_diff,
            "max_logit_difference_fast_bf16_vs_naive": bf16_diff,
            "max_total_variation_fast_bf16_vs_naive": bf16_tv,
            "max_logit_difference_fast_int8_vs_naive": int8_diff,
            "max_total_variation_fast_int8_vs_naive": int8_tv,
            "weights": str(args.run) if args.run else "random (seeded init)",
            "statistic": "chars/s summed over the batch rows, from the median time over "
            "interleaved reps; *_best from the minimum time (less disturbed by other processes)",
        },
        "results": results,
    }
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
