"""PTB test perplexity against wall time: an rnnlab preset beside the PyTorch example's recipe.

Two contenders, each run by this script on the real PTB (``RNNLAB_DATA_DIR`` must point at the
corpus mirror), each writing one JSON curve:

* ``example``: the PyTorch word-language-model example with its defaults, written here as a
  plain torch.nn loop (the model and training loop of ``bench_train.py``): a 2x200 LSTM,
  embedding 200, dropout 0.2, SGD at lr 20 divided by 4 whenever the validation loss does not
  improve, gradient norm clipped at 0.25, BPTT 35, batch 20, evaluation batch 10;
* ``rnnlab``: ``rnnlab train`` with the flags after ``--`` (e.g. ``--preset ptb-hour``), through
  the real :class:`rnnlab.training.trainer.Trainer` (its own schedule, validation and checkpoints).

Both validate on PTB valid at their own cadence (the example: once per epoch). At every
validation this script **also** evaluates the test split, for the curve only; the seconds that
extra test evaluation takes are taken off the clock, so the x axis is what a user of each
recipe waits: training plus its own validation (and, for rnnlab, checkpoint writing). The
final row of a curve is the figure a user would report at that time.

    RNNLAB_DATA_DIR=/work/shared/data python benchmarks/ptb_curve.py example --minutes 13 \\
        --out benchmarks/results/ptb_curve_example.json
    RNNLAB_DATA_DIR=/work/shared/data python benchmarks/ptb_curve.py rnnlab \\
        --out benchmarks/results/ptb_curve_hour.json -- --preset ptb-hour --out runs/ptb-hour
    python benchmarks/ptb_curve.py plot benchmarks/results/ptb_curve_*.json --png docs/figures/ptb-curve.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
from _common import machine_info, write_report
from bench_train import PlainLM, get_batch, plain_batchify, plain_evaluate, repackage_hidden
from torch import nn

from rnnlab.data.dataset import DataConfig, load_data

EXAMPLE = {"emsize": 200, "nhid": 200, "nlayers": 2, "dropout": 0.2, "lr": 20.0, "clip": 0.25}
EXAMPLE.update({"bptt": 35, "batch": 20, "eval_batch": 10, "init": 0.1, "anneal": 4.0})


def run_example(minutes: float, seed: int, max_epochs: int) -> list[dict]:
    """The example's main loop, with the budget checked after every training window."""
    e = EXAMPLE
    torch.manual_seed(seed)
    data = load_data(DataConfig(corpus="ptb", level="word"))
    model = PlainLM(len(data.vocab), e["emsize"], e["nhid"], e["nlayers"], e["dropout"])
    nn.init.uniform_(model.encoder.weight, -e["init"], e["init"])
    nn.init.uniform_(model.decoder.weight, -e["init"], e["init"])
    nn.init.zeros_(model.decoder.bias)
    train = plain_batchify(data.train, e["batch"])  # (T, B)
    criterion = nn.NLLLoss()
    lr, best_val = e["lr"], math.inf
    clock, curve = 0.0, []
    for epoch in range(1, max_epochs + 1):
        model.train()
        hidden = model.init_hidden(e["batch"])
        start = time.perf_counter()
        out_of_time = False
        for i in range(0, train.size(0) - 1, e["bptt"]):
            x, y = get_batch(train, i, e["bptt"])
            hidden = repackage_hidden(hidden)
            model.zero_grad()
            output, hidden = model(x, hidden)
            loss = criterion(output, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), e["clip"])
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            loss.item()
            if clock + time.perf_counter() - start > minutes * 60:
                out_of_time = True
                break
        val = plain_evaluate(model, data.valid, e["eval_batch"], e["bptt"])
        clock += time.perf_counter() - start  # training + validation, as the user waits
        test = plain_evaluate(model, data.test, e["eval_batch"], e["bptt"])  # off the clock
        curve.append(_row(epoch, clock, val, test, lr))
        print(f"example epoch {epoch} {clock / 60:.1f} min: {_fmt(curve[-1])}", flush=True)
        if val < best_val:
            best_val = val
        else:
            lr /= e["anneal"]
        if out_of_time:
            break
    return curve


def run_rnnlab(train_argv: list[str]) -> list[dict]:
    """``rnnlab train`` with ``train_argv``, evaluating the test split at each validation."""
    from rnnlab.cli import make_parser
    from rnnlab.cli.train import build_run_config
    from rnnlab.training.trainer import Trainer

    args = make_parser().parse_args(["train", *train_argv])
    config = build_run_config(args)
    curve: list[dict] = []

    class CurveTrainer(Trainer):
        off_clock = 0.0  # seconds the curve's test evaluations took

        def _validate(self):  # noqa: ANN202 - the Trainer's own signature
            result = super()._validate()
            start = time.perf_counter()
            test = self.task.evaluate(self.model, "test")
            self.off_clock += time.perf_counter() - start
            curve.append(
                _row(
                    self.progress.epoch + 1,
                    self._seconds_spent(),
                    result.loss,
                    test.loss,
                    self.applied_lr(),
                    step=self.progress.step,
                )
            )
            print(f"rnnlab {curve[-1]['minutes']:.1f} min: {_fmt(curve[-1])}", flush=True)
            return result

        def _seconds_spent(self, now: float | None = None) -> float:
            # the curve's test evaluations are off the trainer's clock: its budget
            # (--max-minutes), its schedule and its logged wall time do not pay for them
            return super()._seconds_spent(now) - self.off_clock

    trainer = CurveTrainer(config, Path(args.out) if args.out else Path("runs/ptb-curve"))
    trainer.fit()
    trainer.close()
    return curve


def _row(epoch: int, seconds: float, val: float, test: float, lr: float, **extra) -> dict:
    return {
        "epoch": epoch,
        "seconds": seconds,
        "minutes": seconds / 60,
        "valid_ppl": math.exp(val),
        "test_ppl": math.exp(test),
        "lr": lr,
        **extra,
    }


def _fmt(row: dict) -> str:
    return f"valid {row['valid_ppl']:.2f} test {row['test_ppl']:.2f} (lr {row['lr']:g})"


def plot(paths: list[Path], png: Path) -> None:
    """Test perplexity against minutes, one line per curve file (labelled by its contender)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in paths:
        report = json.loads(path.read_text())
        curve = report["curve"]
        label = report["benchmark"].split(": ")[-1]
        if "train_argv" in report["config"]:
            label = "rnnlab " + " ".join(report["config"]["train_argv"][:2])
        ax.plot([r["minutes"] for r in curve], [r["test_ppl"] for r in curve], "o-", label=label)
    ax.set_xlabel("wall time (minutes: training + validation)")
    ax.set_ylabel("PTB test perplexity")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["plot"]:
        parser = argparse.ArgumentParser(description="plot curves written by this script")
        parser.add_argument("curves", type=Path, nargs="+")
        parser.add_argument("--png", type=Path, required=True)
        args = parser.parse_args(argv[1:])
        plot(args.curves, args.png)
        return
    own, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :])
        if "--" in argv
        else (
            argv,
            [],
        )
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["example", "rnnlab"])
    parser.add_argument("--minutes", type=float, default=60.0, help="example: training budget")
    parser.add_argument("--epochs", type=int, default=40, help="example: at most this many")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1111, help="example: the example's seed")
    parser.add_argument("--out", type=Path, required=True, help="the JSON curve")
    args = parser.parse_args(own)
    if not os.environ.get("RNNLAB_DATA_DIR"):
        raise SystemExit("set RNNLAB_DATA_DIR to the corpus mirror (PTB is needed)")
    torch.set_num_threads(args.threads)
    if args.which == "example":
        curve = run_example(args.minutes, args.seed, args.epochs)
        config: dict = {**EXAMPLE, "minutes": args.minutes, "seed": args.seed}
    else:
        if "--threads" not in rest:
            rest += ["--threads", str(args.threads)]
        curve = run_rnnlab(rest)
        config = {"train_argv": rest}
    report = {
        "benchmark": f"PTB test perplexity against wall time: {args.which}",
        "command": "python benchmarks/ptb_curve.py " + " ".join(argv),
        "machine": machine_info(),
        "config": config,
        "note": "test evaluated at every validation for the curve; its time is off the clock",
        "curve": curve,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main(sys.argv[1:])
