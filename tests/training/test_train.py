"""The trainer: learning, exact resume, interruption, divergence, schedules, early stopping."""

import json
import math
import os

import pytest
import torch

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.errors import ConfigError, RnnlabError, TrainingDiverged
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.files import remove_stale_temp_files, trim_metrics
from rnnlab.runs.load import load_model
from rnnlab.training.memory_estimate import machine_memory, training_memory
from rnnlab.training.trainer import Trainer, make_optimizer


def config(text_file, cell="lstm", **train) -> RunConfig:
    t = dict(bptt=8, batch_size=4, eval_batch_size=2, epochs=2, log_every=5, seed=7)
    t.update(train)
    return RunConfig(
        data=DataConfig(text=str(text_file)),
        model=LanguageModelConfig(
            cell=cell, embed_size=16, hidden_size=24, num_layers=2, dropout=0.1
        ),
        optim=OptimConfig(optimizer="adam", lr=0.01, clip=1.0, schedule="constant"),
        train=TrainConfig(**t),
    )


def weights(run_dir, which="last"):
    return ck.load_checkpoint(run_dir / f"{which}.safetensors").group("model")


def test_loss_falls_and_results_are_written(fox_file, tmp_path):
    run = tmp_path / "run"
    result = Trainer(config(fox_file, epochs=3), run).fit()
    train_rows = [r for r in result.history if r["kind"] == "train"]
    assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"] - 0.5
    assert result.valid.perplexity < 10  # uniform guess would be ~ vocabulary size (30)
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["tokens"] == result.test.tokens
    assert (run / "best.safetensors").is_file() and (run / "run.json").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "train_loss", "tokens_per_s", "grad_norm", "lr", "wall_time"} <= set(
        rows[0]
    )
    assert any(r["kind"] == "valid" and "valid_ppl" in r for r in rows)


@pytest.mark.parametrize("cell,variable", [("lstm", False), ("gru", True)])
def test_resumed_run_ends_with_identical_weights(fox_file, tmp_path, cell, variable):
    full = tmp_path / "full"
    Trainer(config(fox_file, cell, variable_bptt=variable), full).fit()
    part = tmp_path / "part"
    Trainer(
        config(fox_file, cell, variable_bptt=variable, max_steps=13), part
    ).fit()  # stops mid-epoch 1
    cfg = config(fox_file, cell, variable_bptt=variable)
    Trainer(cfg, part, resume=True).fit()
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupt_saves_then_resume_matches(fox_file, tmp_path):
    full = tmp_path / "full"
    Trainer(config(fox_file), full).fit()
    run = tmp_path / "run"
    trainer = Trainer(config(fox_file), run)

    def ctrl_c(row):
        if row["kind"] == "train" and row["step"] == 10:
            trainer.request_stop()

    trainer.on_log = ctrl_c
    with pytest.raises(RnnlabError) as e:
        trainer.fit()
    assert e.value.exit_code == 130 and "--resume" in str(e.value)
    Trainer(config(fox_file), run, resume=True).fit()
    a, b = weights(full), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_before_first_checkpoint_starts_over(fox_file, tmp_path):
    run = tmp_path / "run"
    Trainer(config(fox_file), run)  # wrote run.json, died before any checkpoint
    assert not (run / "last.safetensors").exists()
    Trainer(config(fox_file), run, resume=True).fit()
    full = tmp_path / "full"
    Trainer(config(fox_file), full).fit()
    a, b = weights(full), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("last", ["damaged", "missing"])
def test_resume_from_best_when_last_is_lost(fox_file, tmp_path, last):
    """A run whose last checkpoint is damaged continues from best (asked for) or, when last is
    missing (killed between the two files of a save), by itself; both end as if never stopped."""
    full = tmp_path / "full"
    Trainer(config(fox_file), full).fit()
    part = tmp_path / "part"
    Trainer(config(fox_file, max_steps=13), part).fit()  # best = last = step 13
    if last == "missing":
        (part / "last.safetensors").unlink()
        Trainer(config(fox_file), part, resume=True).fit()
    else:
        (part / "last.safetensors").write_bytes(b"\0" * 100)
        with pytest.raises(ck.CheckpointError, match="--resume .*best.safetensors"):
            Trainer(config(fox_file), part, resume=True)
        Trainer(config(fox_file), part, resume=True, resume_from=ck.BEST).fit()
    a, b = weights(full), weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_final_evaluation_scores_valid_once(fox_file, tmp_path, monkeypatch):
    """The best checkpoint's weights were validated when it was saved: the final evaluation
    reuses that figure (the same number a fresh evaluation gives) and only scores test."""
    from rnnlab.evaluation.text import evaluate
    from rnnlab.training.strategies import TextTask

    calls = []
    real = TextTask.evaluate

    def counted(self, model, split, **kwargs):
        calls.append(split)
        return real(self, model, split, **kwargs)

    monkeypatch.setattr(TextTask, "evaluate", counted)
    run = tmp_path / "run"
    trainer = Trainer(config(fox_file, max_steps=9), run)
    result = trainer.fit()
    assert calls == ["valid", "test"]
    model, _, _ = load_model(run / "best.safetensors")
    cfg = trainer.config.train
    fresh = evaluate(
        model, trainer.data.valid, batch_size=cfg.eval_batch_size, bptt=max(cfg.bptt, 50)
    )
    assert result.valid.loss == fresh.loss
    assert json.loads((run / "results.json").read_text())["valid"]["loss"] == fresh.loss


@pytest.mark.parametrize(
    "blow_up_lr,from_step,caught_by",
    [(1e6, 5, "loss"), (math.inf, 6, "the weights are no longer finite")],
    ids=["caught-by-loss", "caught-before-saving"],
)
def test_divergence_stops_and_keeps_last_good_checkpoint(
    fox_file, tmp_path, blow_up_lr, from_step, caught_by
):
    """The run learns for a few steps (a checkpoint every 3), then its learning rate jumps from
    step ``from_step`` on and it blows up at step 6: caught by the loss, or by the weights before
    step 6's checkpoint is written. The checkpoint of step 3 must stay as it was written."""
    run = tmp_path / "run"
    cfg = config(fox_file, save_every=3, log_every=1, epochs=1)
    cfg.optim = OptimConfig(optimizer="sgd", lr=1.0, clip=0.0, schedule="constant")
    cfg.model.cell = "rnn-relu"
    trainer = Trainer(cfg, run)
    saved, before_blow_up = {}, {}

    def blow_up(row):
        if row["kind"] != "train":
            return
        if row["step"] == 3:  # logged just before this step's checkpoint is written
            saved.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        if row["step"] == from_step - 1:  # the last step at the learning rate of 1
            before_blow_up.update(weights(run))  # read back: the checkpoint of step 3
            trainer.progress.lr = blow_up_lr

    trainer.on_log = blow_up
    with pytest.raises(
        TrainingDiverged, match=rf"at step 6 \({caught_by}.*last good checkpoint is kept"
    ):
        trainer.fit()
    assert (run / "last.safetensors").is_file()
    kept = ck.load_checkpoint(run / "last.safetensors")
    assert kept.meta["progress"]["step"] == 3
    kept = kept.group("model")
    assert saved and kept.keys() == saved.keys() == before_blow_up.keys()
    for k, v in kept.items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, saved[k]) and torch.equal(v, before_blow_up[k]), k


def test_decay_schedule_follows_zaremba(fox_file, tmp_path):
    cfg = config(fox_file, epochs=5)
    cfg.optim = OptimConfig(
        optimizer="sgd", lr=1.0, clip=5.0, schedule="decay", decay_start=2, decay_factor=0.5
    )
    result = Trainer(cfg, tmp_path / "run").fit()
    lrs = {}
    for r in result.history:
        if r["kind"] == "train":
            lrs.setdefault(r["epoch"], r["lr"])
    assert lrs == {1: 1.0, 2: 1.0, 3: 0.5, 4: 0.25, 5: 0.125}


def test_cosine_schedule_anneals_over_the_step_budget(fox_file, tmp_path):
    steps = 12
    cfg = config(fox_file, epochs=1000, max_steps=steps)
    cfg.optim = OptimConfig(optimizer="sgd", lr=2.0, clip=5.0, schedule="cosine")
    trainer = Trainer(cfg, tmp_path / "run")
    seen = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    trainer.fit()
    expected = [2.0 * (1 + math.cos(math.pi * i / steps)) / 2 for i in range(steps)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_schedule_follows_the_clock(fox_file, tmp_path, monkeypatch):
    cfg = config(fox_file, epochs=1000, max_steps=10**6)
    cfg.train.max_minutes = 1.0
    cfg.optim = OptimConfig(optimizer="sgd", lr=1.0, schedule="cosine")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer._clock = (100.0, 15.0)  # started at t=100 s, 15 s spent in an earlier session
    monkeypatch.setattr("rnnlab.training.trainer.time.perf_counter", lambda: 115.0)
    assert trainer._schedule_factor() == pytest.approx((1 + math.cos(math.pi * 0.5)) / 2)


def test_early_stopping_on_plateau(fox_file, tmp_path):
    cfg = config(fox_file, epochs=50, patience=1)
    cfg.optim = OptimConfig(optimizer="sgd", lr=1e-9, clip=1.0, schedule="constant")
    result = Trainer(cfg, tmp_path / "run").fit()
    assert result.progress.epoch < 50


def test_checkpoint_is_self_describing(fox_file, tmp_path):
    run = tmp_path / "run"
    Trainer(config(fox_file, max_steps=5), run).fit()
    model, vocab, ckpt = load_model(run)
    assert ckpt.meta["level"] == "char" and len(vocab) == model.config.vocab_size
    assert math.isfinite(ckpt.meta["progress"]["best_saved"])


# ---------------------------------------------------------------- crash safety and hostile sizes


def test_best_is_written_before_last(fox_file, tmp_path, monkeypatch):
    trainer = Trainer(config(fox_file, max_steps=3), tmp_path / "run")
    written = []
    real = ck.save_checkpoint
    monkeypatch.setattr(
        ck, "save_checkpoint", lambda path, c: (written.append(path.name), real(path, c))
    )
    trainer.save(best=True)
    assert written == ["best.safetensors", "last.safetensors"]  # a crash between: last is older


def test_weights_that_are_not_finite_are_never_saved(fox_file, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(config(fox_file), run)
    trainer.save()
    before = (run / "last.safetensors").read_bytes()
    with torch.no_grad():
        trainer.model.decoder.bias[0] = math.inf
    with pytest.raises(TrainingDiverged, match="no longer finite.*last good checkpoint is kept"):
        trainer.save(best=True)
    assert (run / "last.safetensors").read_bytes() == before
    assert not (run / "best.safetensors").exists()


def test_resume_trims_metrics_written_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"kind": "train", "step": s}) for s in (1, 2, 3, 4, 5)]
    path.write_text("\n".join(rows) + '\n{"kind": "train", "st')  # cut off by a crash
    trim_metrics(path, 3)
    assert path.read_text().splitlines() == rows[:3]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    trim_metrics(tmp_path / "missing.jsonl", 3)  # nothing to trim


def test_stale_temporary_files_of_killed_processes_are_removed(tmp_path):
    mine = f".last.safetensors.tmp-{os.getpid()}"
    names = [".last.safetensors.tmp-99999999", ".run.json.tmp-1", ".notes.tmp-1", mine, "keep.txt"]
    for name in names:
        (tmp_path / name).write_text("x")
    remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".notes.tmp-1", mine, "keep.txt"])


@pytest.mark.parametrize(
    "optim,slots",
    [
        (OptimConfig(optimizer="adam", lr=0.01), 2),
        (OptimConfig(optimizer="sgd", lr=1.0, momentum=0.9), 1),
        (OptimConfig(optimizer="sgd", lr=1.0), 0),
    ],
)
def test_memory_estimate_of_the_state_is_exact(optim, slots):
    """Without activations (batch 0) the estimate is exactly the bytes of the weights, their
    gradients and the optimizer's tensors after a step."""
    cfg = LanguageModelConfig(vocab_size=11, cell="gru", embed_size=6, hidden_size=7, num_layers=2)
    model = LanguageModel(cfg)
    opt = make_optimizer(model.parameters(), optim)
    logits, _ = model(torch.randint(11, (5, 3)))
    logits.sum().backward()
    opt.step()
    held = [p for p in model.parameters()] + [p.grad for p in model.parameters()]
    held += [t for s in opt.state.values() for k, t in s.items() if k != "step"]
    assert training_memory(cfg, optim, batch_size=0, bptt=0) == sum(4 * t.numel() for t in held)
    assert sum(4 * t.numel() for t in held) == 4 * model.num_parameters() * (2 + slots)
    assert training_memory(cfg, optim, batch_size=4, bptt=8) > training_memory(cfg, optim, 0, 0)


def test_too_big_a_model_is_refused_before_it_is_built(fox_file, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr("rnnlab.training.memory_estimate.machine_memory", lambda device: 10**4)
    monkeypatch.setattr("rnnlab.training.trainer.build_model", never)
    with pytest.raises(ConfigError, match=r"would need at least .* more than the 9\.8 KiB"):
        Trainer(config(fox_file), tmp_path / "run")
    memory = machine_memory(torch.device("cpu"))
    assert memory is None or memory > 2**20


def test_memory_estimate_counts_only_the_adaptive_head_cluster():
    optim = OptimConfig(optimizer="sgd")
    full = LanguageModelConfig(vocab_size=30000, embed_size=8, hidden_size=16, num_layers=1)
    adaptive = LanguageModelConfig(
        vocab_size=30000,
        embed_size=8,
        hidden_size=16,
        num_layers=1,
        head="adaptive",
        cutoffs=(2000, 10000),
    )
    per_token = 10 * 4 * 16 + 2 * 8  # gates of one LSTM layer, embeddings
    act_full = training_memory(full, optim, 1, 1) - training_memory(full, optim, 0, 0)
    act_adaptive = training_memory(adaptive, optim, 1, 1) - training_memory(adaptive, optim, 0, 0)
    assert act_full == 4 * (3 * 30000 + per_token)
    assert act_adaptive == 4 * (3 * 2002 + per_token)
