"""Fine-tuning (``--init-from``): the new run starts from the source's weights, vocabulary and
architecture with a fresh optimizer; the vocabulary policies; resume; the one-line refusals."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.data.rolls import N_PITCHES, RollData
from rnnlab.data.vocab import UNK
from rnnlab.errors import CheckpointError, ConfigError, DataError
from rnnlab.evaluation.run import evaluate_run
from rnnlab.models.config import LanguageModelConfig
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model
from rnnlab.training import init_from
from rnnlab.training.trainer import Trainer

QUIET = ["--no-progress", "--no-sample", "--threads", "1"]
# the fox pangram's letters in another order, and a line of the same letters: nothing new
SAME_LETTERS = "a lazy dog jumps over the quick brown fox.\n" * 30
NEW_LETTERS = "THE QUICK BROWN FOX 0123456789!\n" * 10 + "the quick brown fox\n" * 20


def source_config(text: Path, **model) -> RunConfig:
    m = dict(cell="gru", embed_size=8, hidden_size=12, num_layers=1)
    m.update(model)
    return RunConfig(
        data=DataConfig(text=str(text)),
        model=LanguageModelConfig(**m),
        optim=OptimConfig(optimizer="adam", lr=0.01, clip=1.0, schedule="constant"),
        train=TrainConfig(
            bptt=8, batch_size=4, eval_batch_size=2, epochs=1, max_steps=6, seed=3, device="cpu"
        ),
    )


def tuned_config(source: Path, text: Path, new_tokens: str = "refuse", **train) -> RunConfig:
    t = dict(bptt=8, batch_size=4, eval_batch_size=2, epochs=1, max_steps=4, seed=5)
    t.update(train)
    return RunConfig(
        data=DataConfig(text=str(text)),
        optim=OptimConfig(optimizer="sgd", lr=0.5, clip=1.0, schedule="constant"),
        train=TrainConfig(**t, init_from={"run": str(source), "new_tokens": new_tokens}),
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory, make_fox_file) -> Path:
    """A small trained GRU run on the fox text (Adam: its optimizer has state)."""
    root = tmp_path_factory.mktemp("source")
    run = root / "run"
    Trainer(source_config(make_fox_file(root)), run).fit()
    return run


@pytest.fixture
def same(tmp_path) -> Path:
    return write(tmp_path / "same.txt", SAME_LETTERS)


@pytest.fixture
def new(tmp_path) -> Path:
    return write(tmp_path / "new.txt", NEW_LETTERS)


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    line = err.strip()
    assert line.startswith("rnnlab: error: ") and "\n" not in line, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in line, line
    return line


# ------------------------------------------------------------------------------- the start
def test_weights_and_vocabulary_come_from_the_source(source, same, tmp_path):
    trainer = Trainer(tuned_config(source, same), tmp_path / "ft")
    model, vocab, ckpt = load_model(source)
    assert trainer.data.vocab == vocab
    start = trainer.model.state_dict()
    for name, w in model.state_dict().items():
        assert torch.equal(start[name], w), name
    # step 0 of the new run scores the new text exactly as the source does
    before = trainer.task.evaluate(trainer.model, "valid")
    t = trainer.config.train
    ref = evaluate_run(
        source, "valid", text=str(same), batch_size=t.eval_batch_size, bptt=max(t.bptt, 50)
    )
    assert before.tokens == ref.result.tokens
    assert before.loss == pytest.approx(ref.result.loss, rel=1e-6)


def test_the_optimizer_and_schedule_are_fresh_and_the_start_is_recorded(source, same, tmp_path):
    run = tmp_path / "ft"
    trainer = Trainer(tuned_config(source, same), run)
    assert isinstance(trainer.optimizer, torch.optim.SGD)  # the new run's own, not Adam's
    assert trainer.optimizer.state_dict()["state"] == {}
    assert trainer.progress.step == 0 and trainer.progress.lr == 0.5
    result = trainer.fit()
    assert result.progress.step == 4
    record = json.loads((run / "run.json").read_text())["train"]["init_from"]
    best = source / "best.safetensors"
    assert record == {
        "run": str(source.absolute()),
        "checkpoint": "best.safetensors",
        "step": ck.load_checkpoint(best).meta["progress"]["step"],
        "sha256": hashlib.sha256(best.read_bytes()).hexdigest(),
        "new_tokens": "refuse",
    }
    assert record["step"] > 0
    # the new run's checkpoint carries its own optimizer (SGD: no moments), not the source's
    saved = ck.load_checkpoint(run / "last.safetensors")
    assert saved.group("optim") == {}
    assert saved.meta["run"]["train"]["init_from"] == record


def test_the_architecture_is_the_sources(source, same, tmp_path):
    config = tuned_config(source, same)  # a default [model]: 2x200 LSTM
    trainer = Trainer(config, tmp_path / "ft")
    m = trainer.config.model
    assert (m.cell, m.num_layers, m.hidden_size, m.embed_size) == ("gru", 1, 12, 8)
    saved = json.loads((tmp_path / "ft" / "run.json").read_text())["model"]
    assert saved["cell"] == "gru" and saved["hidden_size"] == 12


def test_a_checkpoint_file_can_be_named(source, same, tmp_path):
    config = tuned_config(source, same)
    config.train.init_from = {"run": str(source / "last.safetensors")}
    trainer = Trainer(config, tmp_path / "ft")
    assert trainer.config.train.init_from["checkpoint"] == "last.safetensors"
    assert trainer.config.train.init_from["run"] == str(source.absolute())
    last = ck.load_checkpoint(source / "last.safetensors").group("model")
    for name, w in trainer.model.state_dict().items():
        assert torch.equal(w, last[name]), name


def test_a_changed_checkpoint_is_refused_when_the_record_names_its_digest(source, same):
    config = tuned_config(source, same)
    config.train.init_from = dict(config.train.init_from, sha256="0" * 64)
    with pytest.raises(ConfigError, match="has changed since this config was written"):
        init_from.apply_source(config)


# ------------------------------------------------------------------------- the vocabulary
def test_new_tokens_are_refused_by_default_most_frequent_first(source, new, tmp_path):
    with pytest.raises(DataError) as e:
        Trainer(tuned_config(source, new), tmp_path / "ft")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("the training text has 26 tokens the source vocabulary lacks: ")
    # 15 capitals, 10 digits and "!"; O (in BROWN and FOX) is the most frequent
    listed = message.split("lacks: ")[1]
    assert listed.startswith("'O' (")  # O occurs twice per line (BROWN, FOX)
    assert "and 16 more" in message and "--unk" in message and "--grow-vocab" in message
    assert not (tmp_path / "ft" / "run.json").exists()


def test_unk_maps_new_tokens_to_unk(source, new, tmp_path):
    trainer = Trainer(tuned_config(source, new, "unk"), tmp_path / "ft")
    vocab = load_model(source)[1]
    assert trainer.data.vocab == vocab
    assert (trainer.data.train == vocab.stoi[UNK]).sum() > 0
    trainer.fit()


def test_grow_appends_rows_that_start_rare(source, new, tmp_path):
    trainer = Trainer(tuned_config(source, new, "grow"), tmp_path / "ft")
    model, vocab, _ = load_model(source)
    grown = trainer.data.vocab
    n = len(vocab)
    assert grown.itos[:n] == vocab.itos and len(grown) == n + 26
    assert grown.itos[n] == "O"  # the most frequent new token first
    old, new_w = model.state_dict(), trainer.model.state_dict()
    assert torch.equal(new_w["embedding.weight"][:n], old["embedding.weight"])
    assert torch.allclose(
        new_w["embedding.weight"][n:], old["embedding.weight"].mean(0).expand(26, -1)
    )
    assert torch.allclose(new_w["decoder.weight"][n:], old["decoder.weight"].mean(0).expand(26, -1))
    low = torch.quantile(old["decoder.bias"], init_from.NEW_BIAS_QUANTILE)
    assert torch.allclose(new_w["decoder.bias"][n:], low.expand(26))
    assert torch.equal(new_w["decoder.bias"][:n], old["decoder.bias"])
    trainer.fit()
    assert load_model(tmp_path / "ft")[1] == grown


@pytest.mark.parametrize("head,tie", [("softmax", True), ("adaptive", True), ("adaptive", False)])
def test_grow_keeps_tied_weights_tied_and_works_for_the_adaptive_head(
    head, tie, new, tmp_path, make_fox_file
):
    src = tmp_path / "src"
    embed = 12 if tie else 8
    config = source_config(make_fox_file(tmp_path), embed_size=embed, tie_weights=tie, head=head)
    Trainer(config, src).fit()
    trainer = Trainer(tuned_config(src, new, "grow"), tmp_path / "ft")
    model = trainer.model
    assert trainer.model_config.vocab_size == len(load_model(src)[1]) + 26
    assert trainer.model_config.cutoffs == load_model(src)[0].config.cutoffs
    if tie:
        assert model.decoder.weight is model.embedding.weight
    before = trainer.task.evaluate(model, "valid")
    assert math.isfinite(before.loss)
    if head == "adaptive":  # the grown head is still a distribution over the grown vocabulary
        total = model(torch.zeros(1, 1, dtype=torch.long))[0].exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-5)
    trainer.fit()
    reloaded, vocab, _ = load_model(tmp_path / "ft")
    assert len(vocab) == len(trainer.data.vocab) == reloaded.config.vocab_size


def test_new_tokens_only_in_valid_or_test_are_unk_as_in_any_run(source, tmp_path):
    text = "the quick brown fox jumps over the lazy dog.\n" * 40 + "QQQ\n" * 3
    trainer = Trainer(tuned_config(source, write(tmp_path / "t.txt", text)), tmp_path / "ft")
    assert (trainer.data.test == trainer.data.vocab.unk_id).any()


# --------------------------------------------------------------------------------- resume
def test_resume_continues_the_fine_tuned_run_without_its_source(source, same, tmp_path):
    full = tmp_path / "full"
    Trainer(tuned_config(source, same, max_steps=8), full).fit()
    src = tmp_path / "src-copy"
    shutil.copytree(source, src)
    part = tmp_path / "part"
    Trainer(tuned_config(src, same, max_steps=4), part).fit()
    shutil.rmtree(src)  # a resumed run never reads its source again
    saved = RunConfig.from_dict(json.loads((part / "run.json").read_text()))
    saved.train.max_steps = 8
    Trainer(saved, part, resume=True).fit()
    a = ck.load_checkpoint(full / "last.safetensors").group("model")
    b = ck.load_checkpoint(part / "last.safetensors").group("model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_before_the_first_checkpoint_starts_from_the_source_again(source, same, tmp_path):
    run = tmp_path / "ft"
    Trainer(tuned_config(source, same), run)  # wrote run.json, no checkpoint yet
    saved = RunConfig.from_dict(json.loads((run / "run.json").read_text()))
    trainer = Trainer(saved, run, resume=True)
    weights = load_model(source)[0].state_dict()
    for name, w in trainer.model.state_dict().items():
        assert torch.equal(w, weights[name]), name


# ------------------------------------------------------------------------ piano rolls
def toy_rolls(seed: int = 0) -> RollData:
    """Random sparse pieces (no corpus needed)."""
    g = torch.Generator().manual_seed(seed)

    def split(lengths):
        return [(torch.rand(n, N_PITCHES, generator=g) < 0.05).float() for n in lengths]

    return RollData("toy", split([5, 17, 9, 23, 4, 12, 30, 8]), split([10, 7]), split([9, 13]))


def roll_config(**train) -> RunConfig:
    t = dict(batch_size=4, eval_batch_size=4, bptt=8, epochs=1, max_steps=3, seed=2)
    t.update(train)
    return RunConfig(
        data=DataConfig(corpus="jsb"),
        model=LanguageModelConfig(num_layers=1, embed_size=0, hidden_size=8),
        optim=OptimConfig(optimizer="rmsprop", lr=3e-3, clip=1.0, schedule="constant"),
        train=TrainConfig(**t),
    )


@pytest.fixture(scope="module")
def roll_source(tmp_path_factory):
    run = tmp_path_factory.mktemp("rolls") / "run"
    Trainer(roll_config(), run, data=toy_rolls()).fit()
    return run


def test_a_piano_roll_run_fine_tunes_on_piano_rolls(roll_source, tmp_path):
    config = roll_config(init_from={"run": str(roll_source)})
    trainer = Trainer(config, tmp_path / "ft", data=toy_rolls(seed=1))
    weights = load_model(roll_source)[0].state_dict()
    for name, w in trainer.model.state_dict().items():
        assert torch.equal(w, weights[name]), name
    assert trainer.fit().progress.step == 3


def test_piano_rolls_and_text_do_not_mix(roll_source, source, run_cli, fox_file, tmp_path):
    code, _, err = run_cli("train", "--init-from", roll_source, "--text", fox_file, *QUIET)
    one_line_error(code, err, "is a piano-roll run", "is text")
    code, _, err = run_cli("train", "--init-from", source, "--corpus", "jsb", *QUIET)
    one_line_error(code, err, "is a text model and jsb holds piano rolls")
    code, _, err = run_cli("config", "--init-from", roll_source, "--corpus", "jsb", "--unk")
    one_line_error(code, err, "piano-roll runs have none: drop --unk")


# ------------------------------------------------------------------------- command line
def test_train_prints_the_start_and_config_shows_the_resolved_settings(
    source, same, run_cli, tmp_path
):
    code, out, _ = run_cli(
        "config", "--init-from", source, "--text", same, "--json", "--dropout", "0.25"
    )
    assert code == 0
    config = json.loads(out)
    assert config["model"]["cell"] == "gru" and config["model"]["hidden_size"] == 12
    assert config["model"]["dropout"] == 0.25  # dropout may change
    assert config["optim"]["optimizer"] == "adam"  # the source's settings are the defaults
    assert config["train"]["max_steps"] == 6
    assert config["train"]["device"] == "auto"  # the machine's, not the source's "cpu"
    assert config["train"]["init_from"]["checkpoint"] == "best.safetensors"
    code, out, _ = run_cli("config", "--init-from", source, "--text", same, "--lr", "0.001")
    assert code == 0 and "lr = 0.001" in out and 'checkpoint = "best.safetensors"' in out
    code, out, err = run_cli(
        "train", "--init-from", source, "--text", same, "--out", tmp_path / "ft",
        "--max-steps", "2", *QUIET,
    )  # fmt: skip
    assert code == 0, err
    first = err.splitlines()[0]
    assert first.startswith("rnnlab: run directory") and first.endswith(
        f"fine-tuned from {source.absolute() / 'best.safetensors'} (step 6)"
    )
    # the run's own run.json reproduces it: same source, digest checked
    code, out, _ = run_cli("config", "--config", tmp_path / "ft" / "run.json", "--json")
    assert code == 0 and json.loads(out)["train"]["init_from"]["step"] == 6


def test_architecture_flags_that_disagree_are_refused(source, same, run_cli, tmp_path):
    code, _, err = run_cli(
        "config", "--init-from", source, "--text", same, "--hidden", "64", "--cell", "lstm"
    )
    one_line_error(code, err, "--cell lstm (the source's is gru)", "--hidden 64")
    code, _, err = run_cli("config", "--init-from", source, "--text", same, "--hidden", "12")
    assert code == 0, err  # the same value is no conflict
    code, _, err = run_cli("config", "--init-from", source, "--text", same, "--level", "word")
    one_line_error(code, err, "drop --level word")
    # a config file counts as given: the source's own run.json agrees, another size does not
    code, _, err = run_cli("config", "--init-from", source, "--text", same, "--config", source)
    assert code == 0, err
    toml = write(tmp_path / "big.toml", "[model]\nhidden_size = 64\ndropout = 0.5\n")
    code, _, err = run_cli("config", "--init-from", source, "--text", same, "--config", toml)
    one_line_error(code, err, "--hidden 64 (the source's is 12)")


def test_bad_sources_are_one_line_errors(source, same, run_cli, tmp_path):
    def refused(where, *needles):
        code, _, err = run_cli("train", "--init-from", where, "--text", same, *QUIET)
        return one_line_error(code, err, *needles)

    refused(tmp_path / "nowhere", "no such run directory or file")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "not a run directory")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((source / "best.safetensors").read_bytes()[:2000])
    refused(truncated, "truncated")
    torn = tmp_path / "torn.safetensors"  # header intact, tensors cut short
    blob = (source / "best.safetensors").read_bytes()
    torn.write_bytes(blob[: len(blob) - 100])
    refused(torn, "corrupt or truncated")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    refused(foreign, "not an rnnlab checkpoint")
    not_a_run = write(tmp_path / "x.json", '{"data": {}}')
    refused(not_a_run, "not a run directory or a checkpoint (.safetensors) file")
    assert not any(p.name == "runs" for p in tmp_path.iterdir())


def test_init_from_with_resume_and_policies_without_a_source_are_refused(
    source, same, run_cli, tmp_path
):
    run = tmp_path / "ft"
    code, _, err = run_cli(
        "train", "--init-from", source, "--text", same, "--out", run, "--max-steps", "1", *QUIET
    )
    assert code == 0, err
    code, _, err = run_cli("train", "--resume", run, "--init-from", source, *QUIET)
    one_line_error(code, err, "--init-from starts a new run", "--resume continues a run")
    code, _, err = run_cli("train", "--resume", run, "--grow-vocab", *QUIET)
    one_line_error(code, err, "cannot change --grow-vocab")
    code, _, err = run_cli("config", "--text", same, "--unk")
    one_line_error(code, err, "give --init-from RUN")
    code, _, err = run_cli("config", "--init-from", source)
    one_line_error(code, err, "needs the text to fine-tune on")
    code, _, err = run_cli("train", "--init-from", source, "--text", same, "--unk", "--grow-vocab")
    assert code == 2 and "not allowed with argument" in err


def test_init_from_table_is_checked(source):
    with pytest.raises(ConfigError, match="unknown key 'path' in train.init_from"):
        TrainConfig(init_from={"path": "x"})
    with pytest.raises(ConfigError, match="new_tokens must be refuse, unk"):
        TrainConfig(init_from={"run": "x", "new_tokens": "drop"})
    with pytest.raises(ConfigError, match="step must be a int"):
        TrainConfig(init_from={"run": "x", "step": "7"})
    assert TrainConfig(init_from={"run": "x"}).init_from == {
        "run": "x",
        "checkpoint": None,
        "step": None,
        "sha256": None,
        "new_tokens": "refuse",
    }
    with pytest.raises(CheckpointError, match="no such run directory"):
        init_from.load_source(Path(source) / "missing")
