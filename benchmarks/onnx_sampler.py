"""Sampling speed without PyTorch: the onnxruntime sampler against rnnlab's own, same run.

The run's model is exported with ``rnnlab export --onnx`` (or ``--onnx FILE`` gives one already
exported) and sampled three ways, each the loop its command runs, from the same context (the
line boundary), for the same length, at each batch size and with the same intra-op threads
(torch's and onnxruntime's):

* ``onnx``: :func:`rnnlab.onnx_sampler.sample_ids` (``python -m rnnlab.onnx_sampler``): one
  onnxruntime call per step, the draw in NumPy;
* ``rnnlab_fp32``: :func:`rnnlab.generation.sampling.sample_ids` on the float32 stepper
  (``rnnlab sample``), the same distributions as the model;
* ``rnnlab_int8``: the same on the int8 stepper (``rnnlab sample --precision int8``;
  softmax-head models only, otherwise recorded as null with the reason).

Setup (loading the onnxruntime session, building a stepper) is timed apart and not counted in
chars/s = batch * length / seconds. Repetitions are interleaved with a rotating order; the
median and the best are reported. Before timing, the exported graph's log-probabilities are
compared with the PyTorch model's along a sampled path (the largest difference is recorded).

    python benchmarks/onnx_sampler.py --run runs/char-shakespeare
    python benchmarks/onnx_sampler.py --run RUN --threads 1 --batches 1 64 --length 200 --reps 5
    python benchmarks/onnx_sampler.py --run RUN --quick     # a short smoke run

Writes ``benchmarks/results/onnx_sampler/<run name>.json`` (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import bench, machine_info, write_report

from rnnlab.errors import RnnlabError
from rnnlab.export.onnx_file import export_onnx
from rnnlab.generation.fast_step import FastStepper, make_stepper
from rnnlab.generation.sampling import SamplingConfig, sample_ids
from rnnlab.onnx_sampler import OnnxLanguageModel, allowed_tokens
from rnnlab.onnx_sampler import sample_ids as onnx_sample_ids
from rnnlab.runs.load import load_text_model

RESULTS = Path("benchmarks/results/onnx_sampler")


def onnx_loop(lm: OnnxLanguageModel, context: list[int], batch: int, length: int) -> Callable:
    def run() -> None:
        onnx_sample_ids(lm, context, length=length, batch=batch, rng=np.random.default_rng(0))

    return run


def rnnlab_loop(
    stepper: object, context: list[int], batch: int, length: int, allowed: torch.Tensor | None
) -> Callable:
    def run() -> None:
        gen = torch.Generator().manual_seed(0)
        kw = dict(length=length, count=batch, cfg=SamplingConfig(), generator=gen)
        sample_ids(stepper, context, allowed=allowed, **kw)

    return run


def agreement(model: object, lm: OnnxLanguageModel, context: list[int], steps: int) -> float:
    """Largest |log p| difference between onnxruntime and the PyTorch model along ``steps``
    greedy steps after ``context`` (batch 1)."""
    stepper = make_stepper(model)
    logits, state = stepper.start(torch.tensor(context), 1)
    log_probs, onnx_state = lm.start(context, 1)
    worst = 0.0
    for _ in range(steps):
        reference = torch.log_softmax(logits.float(), -1).numpy()
        worst = max(worst, float(np.abs(log_probs - reference).max()))
        ids = logits.argmax(-1)
        logits, state = stepper.step(ids, state)
        log_probs, onnx_state = lm.step(ids.numpy(), onnx_state)
    return worst


def timed(fn: Callable) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained text run directory")
    parser.add_argument("--onnx", type=Path, help="its export (default: exported to a temp dir)")
    parser.add_argument("--out", type=Path, help="the JSON report (default: results folder)")
    parser.add_argument("--length", type=int, default=200, help="tokens sampled per row")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--quick", action="store_true", help="2 reps, length 20: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.length = 2, min(args.length, 20)
    torch.set_num_threads(args.threads)
    try:
        model, vocab, ckpt = load_text_model(args.run)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_file = args.onnx
            export_seconds = None
            if onnx_file is None:
                onnx_file = Path(tmp) / "model.onnx"
                _, export_seconds = timed(lambda: export_onnx(args.run, onnx_file))
            lm, load_seconds = timed(lambda: OnnxLanguageModel(onnx_file, threads=args.threads))
            file_bytes = Path(onnx_file).stat().st_size
    except RnnlabError as e:
        raise SystemExit(f"onnx_sampler benchmark: {e}") from None
    context = [lm.boundary_id]
    allowed_np = allowed_tokens(lm)
    allowed = None if allowed_np is None else torch.from_numpy(allowed_np)
    max_diff = agreement(model, lm, context, 50)
    print(f"onnxruntime vs PyTorch: largest log-prob difference {max_diff:.2e} over 50 steps")
    steppers: dict[str, object] = {}
    setup: dict[str, float | None] = {"export": export_seconds, "onnx_session": load_seconds}
    steppers["rnnlab_fp32"], setup["rnnlab_fp32"] = timed(lambda: make_stepper(model))
    int8_note = None
    if model.config.head != "softmax":
        int8_note = "rnnlab sample --precision int8 needs the softmax head"
    else:
        try:
            steppers["rnnlab_int8"], setup["rnnlab_int8"] = timed(
                lambda: FastStepper(model, dtype=torch.qint8)
            )
        except RnnlabError as e:  # a cell int8 decoding does not run (reset-before GRU)
            int8_note = str(e)
    rows = []
    for batch in args.batches:
        loops = {"onnx": onnx_loop(lm, context, batch, args.length)}
        for name, stepper in steppers.items():
            loops[name] = rnnlab_loop(stepper, context, batch, args.length, allowed)
        timing = bench(loops, args.reps, batch * args.length)
        row = {
            "batch": batch,
            "length": args.length,
            **{f"{name}_chars_per_s": t["chars_per_s"] for name, t in timing.items()},
            **{f"{name}_chars_per_s_best": t["chars_per_s_best"] for name, t in timing.items()},
            "ratio_onnx_over_rnnlab_fp32": timing["onnx"]["chars_per_s"]
            / timing["rnnlab_fp32"]["chars_per_s"],
            "ratio_onnx_over_rnnlab_int8": (
                timing["onnx"]["chars_per_s"] / timing["rnnlab_int8"]["chars_per_s"]
                if "rnnlab_int8" in timing
                else None
            ),
            "seconds": {name: t["seconds"] for name, t in timing.items()},
        }
        rows.append(row)
        print(
            f"batch {batch:3d}: "
            + "  ".join(f"{name} {t['chars_per_s']:.0f} chars/s" for name, t in timing.items())
        )
    config = model.config
    report = {
        "benchmark": "onnx_sampler",
        "run": str(args.run),
        "model": {
            "cell": config.cell,
            "head": config.head,
            "tie_weights": config.tie_weights,
            "num_layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "embed_size": config.embed_size,
            "vocab_size": len(vocab),
            "level": ckpt.meta["level"],
        },
        "onnx_file_bytes": file_bytes,
        "threads": args.threads,
        "reps": args.reps,
        "max_logprob_difference": max_diff,
        "setup_seconds": setup,
        "int8_note": int8_note,
        "results": rows,
        "onnxruntime": __import__("onnxruntime").__version__,
        "machine": machine_info(),
    }
    out = args.out or RESULTS / f"{args.run.resolve().name}.json"
    write_report(out, report)
    return report


if __name__ == "__main__":
    main()
