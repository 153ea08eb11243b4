"""``TrainResult.summary``: the end-of-run summary ``rnnlab train --json`` prints."""

import json
from pathlib import Path

from rnnlab.evaluation.text import EvalResult
from rnnlab.training.trainer import Progress, TrainResult


def test_summary_of_a_text_run():
    valid = EvalResult(loss=1.5, perplexity=4.48, tokens=100, bpc=2.16)
    test = EvalResult(loss=1.6, perplexity=4.95, tokens=90)
    progress = Progress(epoch=2, step=40, elapsed=12.3456)
    summary = TrainResult(Path("runs/r"), progress, valid, test, []).summary()
    assert summary == {
        "run_dir": "runs/r",
        "valid": {"loss": 1.5, "perplexity": 4.48, "tokens": 100, "bpc": 2.16},
        "test": {"loss": 1.6, "perplexity": 4.95, "tokens": 90},
        "steps": 40,
        "epochs": 2,
        "wall_time": 12.35,
    }
    assert list(summary) == ["run_dir", "valid", "test", "steps", "epochs", "wall_time"]
    json.dumps(summary)  # printable as JSON as it is


def test_summary_of_a_piano_roll_run():
    valid = EvalResult(loss=8.0, perplexity=None, tokens=30, unit="step")
    summary = TrainResult(Path("r"), Progress(step=3), valid, valid, []).summary()
    assert summary["valid"] == {"loss": 8.0, "nll_per_step": 8.0, "steps": 30}
    assert summary["epochs"] == 0 and summary["wall_time"] == 0.0


def test_summary_without_scores():
    """Ranks other than 0 of a distributed run have no final scores."""
    summary = TrainResult(Path("r"), Progress(step=5), None, None, []).summary()
    assert summary["valid"] is None and summary["test"] is None and summary["steps"] == 5
