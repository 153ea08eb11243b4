"""Tasks: the one training loop on piano rolls (windows, state resets, loss, exact resume) and
the text task's layout."""

import json
import math

import pytest
import torch

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.data.rolls import N_PITCHES, RollData
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.pianoroll import PianoRollModel
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model
from rnnlab.training.strategies import RollTask, make_task, steps_per_epoch
from rnnlab.training.trainer import Trainer


def toy_rolls(seed=0) -> RollData:
    """Pieces with structure to learn: a chord that moves up one semitone per step."""
    g = torch.Generator().manual_seed(seed)

    def piece(n):
        start = int(torch.randint(30, 50, (1,), generator=g))
        x = torch.zeros(n, N_PITCHES)
        for t in range(n):
            for k in (0, 4, 7):
                x[t, (start + t + k) % N_PITCHES] = 1
        return x

    def split(lengths):
        return [piece(n) for n in lengths]

    return RollData(
        "toy",
        split([5, 17, 9, 23, 4, 12, 30, 8, 15, 6, 11, 19]),
        split([10, 7, 14]),
        split([9, 13, 6]),
    )


def config(**train) -> RunConfig:
    t = dict(bptt=6, batch_size=3, eval_batch_size=2, epochs=3, log_every=2, seed=3)
    t.update(train)
    return RunConfig(
        data=DataConfig(corpus="jsb"),  # recorded only: the tests pass the data in
        model=LanguageModelConfig(cell="lstm", embed_size=0, hidden_size=9, num_layers=1),
        optim=OptimConfig(
            optimizer="rmsprop", lr=3e-3, clip=1.0, schedule="constant", weight_noise=0.075
        ),
        train=TrainConfig(**t),
    )


def weights(run_dir, which="last"):
    return ck.load_checkpoint(run_dir / f"{which}.safetensors").group("model")


def test_windows_cover_every_step_once_and_reset_at_each_batch():
    data = toy_rolls()
    task = RollTask(data, config(), torch.device("cpu"))
    windows = list(task.windows(0))
    assert [w.index for w in windows] == list(range(task.num_windows(0)))
    assert sum(w.count for w in windows) == data.num_steps("train")
    assert all(int(w.mask.sum()) == w.count and w.length <= 6 for w in windows)
    # a new batch starts from the zero state; the windows of one batch carry it
    starts = [w.index for w in windows if w.reset]
    assert len(starts) == math.ceil(len(data.train) / 3) and starts[0] == 0
    assert steps_per_epoch(data, 3, 6, seed=3) == len(windows)
    # a resumed epoch rebuilds the same windows from any index
    later = list(task.windows(0, start=5))
    assert [w.index for w in later] == list(range(5, len(windows)))
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(windows[5:], later, strict=True))


def test_roll_task_sets_the_sigmoid_head_and_refuses_text_only_options():
    task = make_task(toy_rolls(), config(), torch.device("cpu"))
    assert isinstance(task, RollTask)
    model = task.model_config(config().model)
    assert model.head == "sigmoid" and model.vocab_size == N_PITCHES
    with pytest.raises(ConfigError, match="variable-bptt"):
        RollTask(toy_rolls(), config(variable_bptt=True), torch.device("cpu"))


def test_training_on_rolls_learns_and_reports_nll_per_step(tmp_path):
    run = tmp_path / "run"
    result = Trainer(config(epochs=15), run, data=toy_rolls()).fit()
    assert isinstance(Trainer(config(), tmp_path / "other", data=toy_rolls()).model, PianoRollModel)
    train = [r for r in result.history if r["kind"] == "train"]
    valid = [r for r in result.history if r["kind"] == "valid"]
    assert train[-1]["train_loss"] < train[0]["train_loss"] - 10
    assert "train_ppl" not in train[0] and "valid_ppl" not in valid[0]
    assert valid[-1]["valid_nll"] == valid[-1]["valid_loss"] and valid[-1]["epochs"] == 15
    assert result.valid.unit == "step" and result.valid.perplexity is None
    assert result.valid.loss < 88 * math.log(2) / 2
    results = json.loads((run / "results.json").read_text())
    assert set(results["test"]) == {"loss", "nll_per_step", "steps"}
    assert results["test"]["steps"] == sum(p.size(0) - 1 for p in toy_rolls().test)
    model, vocab, ckpt = load_model(run)
    assert vocab is None and isinstance(model, PianoRollModel)
    assert ckpt.meta["level"] == "pianoroll" and ckpt.meta["vocab"] is None


@pytest.mark.parametrize("stop_at", [4, 9])
def test_resumed_music_run_ends_with_identical_weights(tmp_path, stop_at):
    """Stopped mid-epoch (step 4: inside a batch, the state carried; step 9: elsewhere) and
    resumed, a run with weight noise ends bit for bit where an uninterrupted one does."""
    full = tmp_path / "full"
    Trainer(config(), full, data=toy_rolls()).fit()
    part = tmp_path / "part"
    Trainer(config(max_steps=stop_at), part, data=toy_rolls()).fit()
    saved = ck.load_checkpoint(part / "last.safetensors")
    assert saved.meta["progress"]["step"] == stop_at
    Trainer(config(), part, resume=True, data=toy_rolls()).fit()
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_carried_state_is_saved_inside_a_batch(tmp_path):
    task = RollTask(toy_rolls(), config(), torch.device("cpu"))
    windows = list(task.windows(0))
    inside = next(w.index for w in windows if not w.reset)  # a window that continues a batch
    run = tmp_path / "run"
    Trainer(config(max_steps=inside), run, data=toy_rolls()).fit()
    assert ck.load_checkpoint(run / "last.safetensors").group("state")


def test_interrupt_then_resume_matches(tmp_path):
    full = tmp_path / "full"
    Trainer(config(), full, data=toy_rolls()).fit()
    run = tmp_path / "run"
    trainer = Trainer(config(), run, data=toy_rolls())

    def ctrl_c(row):
        if row["kind"] == "train" and row["step"] == 6:
            trainer.request_stop()

    trainer.on_log = ctrl_c
    with pytest.raises(RnnlabError):
        trainer.fit()
    Trainer(config(), run, resume=True, data=toy_rolls()).fit()
    a, b = weights(full), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = config(epochs=200, patience=2)
    cfg.optim.lr = 0.3  # too high: validation stops improving soon
    result = Trainer(cfg, run, data=toy_rolls()).fit()
    assert result.progress.epoch < 200 and result.progress.done
    valid = [r["valid_nll"] for r in result.history if r["kind"] == "valid"]
    assert result.valid.loss == pytest.approx(min(valid), rel=1e-5)


def test_piano_rolls_refuse_torchrun_and_text_commands(tmp_path):
    with pytest.raises(ConfigError, match="one process"):
        RollTask(toy_rolls(), config(), torch.device("cpu"), dist=object())  # type: ignore[arg-type]
    from rnnlab.lab.gradflow import gradflow_of_run

    run = tmp_path / "run"
    Trainer(config(max_steps=2), run, data=toy_rolls()).fit()
    with pytest.raises(ConfigError, match="piano-roll model"):
        gradflow_of_run(run)
