"""How much the scoring convention moves a piano-roll model's NLL (the Piano-midi question of
the Chung et al. 2014 reproduction, docs/findings.md).

    python benchmarks/music_conventions.py --corpus pianomidi RUN_DIR [RUN_DIR ...] \
        --out benchmarks/results/chung2014/conventions-pianomidi.json

For each trained run and each split (train, valid, test), the NLL per step under:

- ``per_step``: rnnlab's figure: every predicted step (frames 2..T of each piece), each piece
  from the zero state, summed and divided by the number of steps;
- ``per_piece``: each piece's own per-step mean, then the mean over pieces;
- ``windows_200``: pieces cut into windows of 200 predictions, each window from the zero state
  (the same steps scored as ``per_step``; only the state is lost at each cut);
- ``start_frame``: an all-zero frame before every piece, so the first frame is scored too;
- ``one_stream``: every piece of the split joined into one sequence, the state carried across
  the joins (the first frame of each piece predicted from the last of the one before);
- ``padding_counted``: batches of 8 pieces in the split's order, zero-padded to the longest,
  and every position counted, the padding's easy all-silent steps included (the figure a
  missing mask would report; a model trained with that mask missing would score its padding
  even better).

And, model-free, the split's own difficulty: ``unigram`` (each note on with its training-split
frequency, independent of time) and notes per frame. All sums in float64.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _common import machine_info, write_report

from rnnlab.data.rolls import SPLITS, load_rolls, nll_sum, pad_pieces, with_start_frame
from rnnlab.evaluation.rolls import evaluate_rolls
from rnnlab.runs.load import load_model, set_threads

WINDOW = 200


def windows(pieces: list[torch.Tensor], length: int) -> list[torch.Tensor]:
    """Each piece cut into overlapping slices of ``length + 1`` frames, so the slices' predicted
    steps are exactly the piece's (frame k·length is the input that starts slice k)."""
    out = []
    for p in pieces:
        for start in range(0, p.size(0) - 1, length):
            out.append(p[start : start + length + 1])
    return out


def per_piece(model: torch.nn.Module, pieces: list[torch.Tensor]) -> float:
    means = [evaluate_rolls(model, [p], batch_size=1).loss for p in pieces]
    return sum(means) / len(means)


@torch.no_grad()
def padding_counted(model: torch.nn.Module, pieces: list[torch.Tensor], batch: int = 8) -> float:
    total, steps = 0.0, 0
    for start in range(0, len(pieces), batch):
        b = pad_pieces(pieces[start : start + batch])
        logits, _ = model(b.inputs, None)
        total += nll_sum(logits.double(), b.targets, torch.ones_like(b.mask)).item()
        steps += b.mask.numel()
    return total / steps


def unigram(train: list[torch.Tensor], pieces: list[torch.Tensor]) -> float:
    """NLL per step of independent notes at their training-split frequencies."""
    p = torch.cat(train).double().mean(0).clamp(1e-4, 1 - 1e-4)
    x = torch.cat([q[1:] for q in pieces]).double()
    return -(x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean().item()


def conventions(model: torch.nn.Module, data, start_data, split: str) -> dict[str, float]:
    pieces = data.split(split)
    return {
        "per_step": evaluate_rolls(model, pieces).loss,
        "per_piece": per_piece(model, pieces),
        "windows_200": evaluate_rolls(model, windows(pieces, WINDOW)).loss,
        "start_frame": evaluate_rolls(model, start_data.split(split)).loss,
        "one_stream": evaluate_rolls(model, [torch.cat(pieces)], batch_size=1).loss,
        "padding_counted": padding_counted(model, pieces),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    set_threads(args.threads)
    data = load_rolls(args.corpus)
    start_data = with_start_frame(data)
    report = {
        "corpus": args.corpus,
        "machine": machine_info(),
        "splits": {
            s: {
                "pieces": len(data.split(s)),
                "steps": data.num_steps(s),
                "notes_per_frame": torch.cat(data.split(s)).double().sum(1).mean().item(),
                "unigram": unigram(data.train, data.split(s)),
            }
            for s in SPLITS
        },
        "runs": {},
    }
    for run in args.runs:
        model, _, ckpt = load_model(run)
        report["runs"][run.name] = {
            "cell": ckpt.meta["model"]["cell"],
            "hidden": ckpt.meta["model"]["hidden_size"],
            **{s: conventions(model, data, start_data, s) for s in SPLITS},
        }
        print(run.name, json.dumps(report["runs"][run.name]["test"]))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
