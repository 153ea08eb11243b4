"""Metrics rows log the learning rate as applied (issue 16, item 6a): under the cosine schedule
every train and valid row carries the rate of the last optimizer step, not the base rate."""

import json
import math

import pytest

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.models.config import LanguageModelConfig
from rnnlab.training.trainer import Trainer


def test_rows_log_the_applied_cosine_rate(fox_file, tmp_path):
    steps = 12
    cfg = RunConfig(
        data=DataConfig(text=str(fox_file)),
        model=LanguageModelConfig(embed_size=8, hidden_size=8, num_layers=1),
        optim=OptimConfig(optimizer="sgd", lr=2.0, clip=5.0, schedule="cosine"),
        train=TrainConfig(
            bptt=6,
            batch_size=3,
            epochs=1000,
            max_steps=steps,
            log_every=1,
            eval_every=4,
            threads=1,
        ),
    )
    trainer = Trainer(cfg, tmp_path / "run")
    applied = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        applied.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    assert trainer.applied_lr() == 2.0  # before any step: the first step's rate
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train = [r for r in rows if r["kind"] == "train"]
    valid = [r for r in rows if r["kind"] == "valid"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    assert [r["lr"] for r in train] == pytest.approx(applied, rel=1e-5)
    assert applied == pytest.approx(
        [2.0 * (1 + math.cos(math.pi * i / steps)) / 2 for i in range(steps)]
    )
    assert valid and all(r["lr"] == pytest.approx(applied[r["step"] - 1], rel=1e-5) for r in valid)
    assert len({r["lr"] for r in valid}) == len(valid)  # not the base rate on every row


def test_ptb_curve_rows_take_the_applied_rate(fox_file, tmp_path, monkeypatch):
    """benchmarks/ptb_curve.py's rnnlab curve, tiny: each row's rate is the applied one."""
    import sys
    from pathlib import Path

    benchmarks = Path(__file__).parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    sys.modules.pop("ptb_curve", None)
    import ptb_curve

    argv = ["--text", str(fox_file), "--layers", "1", "--hidden", "8", "--embed", "8"]
    argv += ["--bptt", "6", "--batch-size", "3", "--optimizer", "sgd", "--lr", "2"]
    argv += ["--schedule", "cosine", "--epochs", "3", "--threads", "1"]
    curve = ptb_curve.run_rnnlab([*argv, "--out", str(tmp_path / "run")])
    assert len(curve) == 3
    rates = [row["lr"] for row in curve]
    assert rates[0] < 2.0 and rates == sorted(rates, reverse=True)  # annealed, as applied
    assert rates[-1] < 0.01  # the last step of a cosine run: close to 0
