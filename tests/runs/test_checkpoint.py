"""Checkpoints: round trip, tied weights, atomic saves, and refusal of anything not ours."""

import errno
import json
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as st_save
from safetensors.torch import save_file

from rnnlab.data.vocab import build_vocab
from rnnlab.errors import CheckpointError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model

# ---------------------------------------------------------------------------------------- helpers


def tiny_model(tie: bool = False, cell: str = "lstm") -> tuple[LanguageModel, dict]:
    """A small model and the meta a checkpoint of it carries (model config, vocab, level)."""
    vocab = build_vocab(list("hello world, hello there\n"), level="char")
    size = 6
    cfg = LanguageModelConfig(
        vocab_size=len(vocab),
        cell=cell,
        embed_size=size,
        hidden_size=size if tie else 5,
        num_layers=2,
        tie_weights=tie,
    )
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    meta = {"model": cfg.to_dict(), "vocab": vocab.to_dict(), "level": "char", "note": "ünïcode ✓"}
    return model, meta


def model_checkpoint(model: LanguageModel, meta: dict) -> ck.Checkpoint:
    return ck.Checkpoint(
        meta=meta, tensors={f"model.{k}": v for k, v in model.state_dict().items()}
    )


@pytest.fixture
def saved(tmp_path):
    """A valid checkpoint file of a tiny model."""
    model, meta = tiny_model()
    path = tmp_path / "model.safetensors"
    ck.save_checkpoint(path, model_checkpoint(model, meta))
    return path


def dir_listing(path):
    return sorted(p.name for p in path.iterdir())


# ---------------------------------------------------------------------------------- round trip


def test_round_trip_meta_and_tensors(tmp_path):
    model, meta = tiny_model()
    extra = {
        "state.0": torch.randn(2, 3, 5),
        "ints": torch.arange(7),
        "half": torch.randn(4).half(),
    }
    ckpt = model_checkpoint(model, meta)
    ckpt.tensors.update(extra)
    path = tmp_path / "a.safetensors"
    ck.save_checkpoint(path, ckpt)
    back = ck.load_checkpoint(path)
    for key, value in meta.items():
        assert back.meta[key] == value
    assert back.meta["format"] == ck.FORMAT and back.meta["version"] == ck.VERSION
    assert back.tensors.keys() == ckpt.tensors.keys()
    for name, t in ckpt.tensors.items():
        assert back.tensors[name].dtype == t.dtype
        assert torch.equal(back.tensors[name], t), name
    assert back.group("state").keys() == {"0"}


def test_tied_weights_are_stored_once_and_relinked(tmp_path):
    model, meta = tiny_model(tie=True)
    assert model.decoder.weight is model.embedding.weight
    path = tmp_path / "tied.safetensors"
    ck.save_checkpoint(path, model_checkpoint(model, meta))
    with safe_open(str(path), framework="pt") as f:
        stored = set(f.keys())
    pair = {"model.embedding.weight", "model.decoder.weight"}
    assert len(stored & pair) == 1  # one copy on disk
    back = ck.load_checkpoint(path)
    emb, dec = back.tensors["model.embedding.weight"], back.tensors["model.decoder.weight"]
    assert emb is dec  # re-linked, not copied
    assert torch.equal(emb, model.embedding.weight.detach())
    loaded, _, _ = load_model(path)
    assert loaded.decoder.weight is loaded.embedding.weight
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name


def test_overlapping_views_are_saved_as_copies(tmp_path):
    flat = torch.arange(12, dtype=torch.float32)
    # overlapping views of one buffer (safetensors refuses shared memory), and a non-contiguous one
    tensors = {
        "a": flat[:8].view(2, 4),
        "b": flat[4:],
        "c": flat.view(3, 4).t(),
        "d": flat.view(4, 3),
        "e": flat[6:],
    }
    path = tmp_path / "views.safetensors"
    ck.save_checkpoint(path, ck.Checkpoint(meta={}, tensors=tensors))
    back = ck.load_checkpoint(path)
    for name, t in tensors.items():
        assert torch.equal(back.tensors[name], t), name


def test_run_directory_prefers_best_then_last(tmp_path, saved):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="holds no rnnlab checkpoint"):
        ck.load_checkpoint(run)
    (run / ck.LAST).write_bytes(saved.read_bytes())
    assert ck.checkpoint_in(run) == run / ck.LAST
    (run / ck.BEST).write_bytes(saved.read_bytes())
    assert ck.checkpoint_in(run) == run / ck.BEST
    assert ck.checkpoint_in(run, "last") == run / ck.LAST
    assert ck.load_checkpoint(run).meta["level"] == "char"


# ------------------------------------------------------------------------------ atomic saving


def fail_with(err):
    def fail(*args, **kwargs):
        raise err

    return fail


@pytest.mark.parametrize(
    "where,code",
    [("os.replace", errno.ENOSPC), ("os.fsync", errno.ENOSPC), ("os.replace", errno.EACCES)],
)
def test_failed_save_keeps_the_old_file_and_no_temp(tmp_path, saved, monkeypatch, where, code):
    before = saved.read_bytes()
    listing = dir_listing(tmp_path)
    model, meta = tiny_model(cell="gru")  # a different checkpoint
    monkeypatch.setattr(where, fail_with(OSError(code, os.strerror(code))))
    with pytest.raises(CheckpointError) as e:
        ck.save_checkpoint(saved, model_checkpoint(model, meta))
    message = str(e.value)
    assert "\n" not in message
    assert os.strerror(code) in message and "previous checkpoint is kept" in message
    assert "--resume" in message
    monkeypatch.undo()
    assert saved.read_bytes() == before  # byte-identical
    assert dir_listing(tmp_path) == listing  # no temporary file left behind
    assert ck.load_checkpoint(saved).meta["model"]["cell"] == "lstm"


def test_interrupted_save_leaves_no_temp(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()
    model, meta = tiny_model(cell="gru")
    monkeypatch.setattr("os.fsync", fail_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(saved, model_checkpoint(model, meta))
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert dir_listing(tmp_path) == [saved.name]


def test_save_into_unwritable_directory(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    model, meta = tiny_model()
    try:
        with pytest.raises(CheckpointError, match="could not save checkpoint.*permissions"):
            ck.save_checkpoint(locked / "last.safetensors", model_checkpoint(model, meta))
        assert dir_listing(locked) == []
    finally:
        locked.chmod(0o700)


def test_successful_save_replaces_the_file(tmp_path, saved):
    model, meta = tiny_model(cell="gru")
    ck.save_checkpoint(saved, model_checkpoint(model, meta))
    assert ck.load_checkpoint(saved).meta["model"]["cell"] == "gru"
    assert dir_listing(tmp_path) == [saved.name]


def test_write_json_atomic_failure_keeps_old(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    ck.write_json_atomic(path, {"a": 1})
    before = path.read_bytes()
    monkeypatch.setattr("os.replace", fail_with(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(CheckpointError, match="could not write"):
        ck.write_json_atomic(path, {"a": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and dir_listing(tmp_path) == ["run.json"]
    assert json.loads(path.read_text()) == {"a": 1}


# ------------------------------------------------------------------- refusing what is not ours


def assert_refused(path, *words):
    with pytest.raises(CheckpointError) as e:
        ck.load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message
    return message


def test_missing_file_and_directory(tmp_path):
    assert_refused(tmp_path / "nope.safetensors", "no checkpoint")
    assert_refused(tmp_path / "nope", "no checkpoint", "rnnlab train")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert_refused(path, "empty")


@pytest.mark.parametrize("keep", [3, 8, 40, "header", "half", -1])
def test_truncated_file(tmp_path, saved, keep):
    blob = saved.read_bytes()
    header_end = 8 + int.from_bytes(blob[:8], "little")
    n = {"header": header_end, "half": (header_end + len(blob)) // 2}.get(keep, keep)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(blob[:n])
    message = assert_refused(path)
    assert "truncated" in message or "corrupt" in message


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(random.Random(1).randbytes(4096))
    assert_refused(path, "not an rnnlab checkpoint")


class _Marker:
    """Unpickling this would create a marker file: the checkpoint loader must never do it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_is_refused_without_being_executed(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model": _Marker(marker)}))
    # the payload works: unpickling it really would create the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Marker(probe))).close()
    assert probe.exists()
    assert_refused(path, "not an rnnlab checkpoint", "pickle")
    assert not marker.exists()
    torch_file = tmp_path / "torch.pt"
    torch.save({"w": torch.zeros(2), "m": _Marker(marker)}, torch_file)
    marker.unlink(missing_ok=True)
    assert_refused(torch_file, "not an rnnlab checkpoint")
    assert not marker.exists()


def test_foreign_safetensors_is_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3)}, str(plain))
    assert_refused(plain, "not an rnnlab checkpoint")
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    assert_refused(other, "not an rnnlab checkpoint")


@pytest.mark.parametrize(
    "description,words",
    [
        ("{not json", ["corrupt"]),
        ("[1, 2]", ["corrupt"]),
        (json.dumps({"version": 99}), ["newer", "upgrade"]),
        (json.dumps({"version": "one"}), ["corrupt"]),
        (json.dumps({"aliases": {"b": "missing"}}), ["tied tensor"]),
    ],
)
def test_bad_description_is_refused(tmp_path, description, words):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(
        st_save({"a": torch.zeros(2)}, metadata={"format": ck.FORMAT, "rnnlab": description})
    )
    assert_refused(path, *words)


# ------------------------------------------------------------- consistency with the config


def resave(path, ckpt):
    ck.save_checkpoint(path, ckpt)
    return path


def test_load_model_accepts_a_consistent_checkpoint(saved):
    model, vocab, ckpt = load_model(saved)
    original, _ = tiny_model()
    for name, t in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], t)
    assert len(vocab) == model.config.vocab_size and not model.training


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda c: c.meta["model"].update(hidden_size=7), ["shape", "inconsistent"]),
        (lambda c: c.meta["model"].update(num_layers=3), ["lacks"]),
        (
            lambda c: c.meta["model"].update(vocab_size=c.meta["model"]["vocab_size"] + 1),
            ["vocabulary"],
        ),
        (lambda c: c.meta["vocab"]["itos"].pop(), ["vocabulary"]),
        (lambda c: c.tensors.pop("model.decoder.bias"), ["lacks", "decoder.bias"]),
        (lambda c: c.tensors.update({"model.decoder.bias": torch.zeros(3)}), ["shape"]),
        (lambda c: c.meta["model"].update(cell="nope"), ["invalid description"]),
        (lambda c: c.meta.pop("vocab"), ["invalid description"]),
        (lambda c: c.meta.update(level="byte"), ["invalid description"]),
        (lambda c: c.meta["vocab"].update(itos=[1, 2]), ["vocabulary"]),
    ],
)
def test_load_model_refuses_inconsistent_checkpoints(tmp_path, saved, change, words):
    ckpt = ck.load_checkpoint(saved)
    change(ckpt)
    path = resave(tmp_path / "changed.safetensors", ckpt)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


# ------------------------------------------------------------------ optimizer and RNG state


# ------------------------------------------------------- a damaged checkpoint: what to use


def run_with_checkpoints(tmp_path, saved, best_step=10, last_step=20):
    """A run directory with run.json and best/last checkpoints recording those steps."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ck.RUN_CONFIG).write_text("{}")
    for name, step in ((ck.BEST, best_step), (ck.LAST, last_step)):
        ckpt = ck.load_checkpoint(saved)
        ckpt.meta["progress"] = {"step": step}
        ck.save_checkpoint(run / name, ckpt)
    return run


def damage(path, keep=0.5):
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.99])
def test_damaged_best_names_the_readable_last(tmp_path, saved, keep):
    run = run_with_checkpoints(tmp_path, saved)
    damage(run / ck.BEST, keep)
    with pytest.raises(ck.CorruptCheckpoint) as e:
        ck.load_checkpoint(run)  # a run directory: its best checkpoint
    message = str(e.value)
    assert f"{run / ck.BEST} is" in message
    assert f"give {run / ck.LAST} instead" in message, message
    assert ck.load_checkpoint(run / ck.LAST).meta["progress"]["step"] == 20  # which works


def test_damaged_last_file_names_the_readable_best(tmp_path, saved):
    run = run_with_checkpoints(tmp_path, saved)
    damage(run / ck.LAST)
    message = assert_refused(run / ck.LAST, "corrupt or truncated", f"give {run / ck.BEST}")
    assert "best checkpoint" in message


def test_zero_filled_checkpoint_is_damaged_not_foreign(tmp_path, saved):
    run = run_with_checkpoints(tmp_path, saved)
    (run / ck.LAST).write_bytes(bytes(len((run / ck.LAST).read_bytes())))
    with pytest.raises(ck.CorruptCheckpoint, match="zero bytes.*best checkpoint reads whole"):
        ck.load_checkpoint(run / ck.LAST)


@pytest.mark.parametrize("other", ["damaged", "missing"])
def test_no_readable_checkpoint_says_start_over(tmp_path, saved, other):
    run = run_with_checkpoints(tmp_path, saved)
    damage(run / ck.BEST)
    if other == "damaged":
        damage(run / ck.LAST, 0.3)
    else:
        (run / ck.LAST).unlink()
    state = "is damaged too" if other == "damaged" else "does not exist"
    assert_refused(run, f"last.safetensors {state}", f"rnnlab train --config {run / ck.RUN_CONFIG}")


def test_resume_point():
    assert ck.resume_point("runs/a") == (Path("runs/a"), ck.LAST)
    assert ck.resume_point("runs/a/best.safetensors") == (Path("runs/a"), ck.BEST)
    assert ck.resume_point("runs/a/last.safetensors") == (Path("runs/a"), ck.LAST)


def test_resume_point_refuses_another_file(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no rnnlab run; --resume takes a run directory"):
        ck.resume_point(saved)


def test_resume_from_damaged_last_gives_the_command_for_best(tmp_path, saved):
    run = run_with_checkpoints(tmp_path, saved)
    damage(run / ck.LAST)
    with pytest.raises(CheckpointError) as e:
        ck.load_resume_checkpoint(run)
    message = str(e.value)
    assert "(step 10)" in message and "dropped" in message
    assert message.endswith(f"rnnlab train --resume {run / ck.BEST}")
    assert ck.load_resume_checkpoint(run, ck.BEST).meta["progress"]["step"] == 10


def test_resume_from_best_is_refused_while_last_is_whole(tmp_path, saved):
    run = run_with_checkpoints(tmp_path, saved)
    with pytest.raises(CheckpointError, match="step 20.*step 10.*away.*--resume"):
        ck.load_resume_checkpoint(run, ck.BEST)
    (tmp_path / "same").mkdir()
    run = run_with_checkpoints(tmp_path / "same", saved, best_step=20)  # the same point: fine
    assert ck.load_resume_checkpoint(run, ck.BEST).meta["progress"]["step"] == 20


def test_resume_from_damaged_best_gives_the_command_for_last(tmp_path, saved):
    run = run_with_checkpoints(tmp_path, saved)
    damage(run / ck.BEST)
    with pytest.raises(CheckpointError) as e:
        ck.load_resume_checkpoint(run, ck.BEST)
    assert str(e.value).endswith(f"rnnlab train --resume {run}")
    (run / ck.BEST).unlink()
    with pytest.raises(CheckpointError, match="does not exist.*rnnlab train --resume"):
        ck.load_resume_checkpoint(run, ck.BEST)


def test_resume_with_both_damaged_says_start_over(tmp_path, saved):
    run = tmp_path / "my run"  # a path the command must quote
    run_with_checkpoints(tmp_path, saved).rename(run)
    damage(run / ck.LAST)
    damage(run / ck.BEST, 0.2)
    for name in (ck.LAST, ck.BEST):
        with pytest.raises(CheckpointError) as e:
            ck.load_resume_checkpoint(run, name)
        message = str(e.value)
        assert "damaged too" in message and "nothing can be resumed" in message
        assert message.endswith(f"rnnlab train --config '{run / ck.RUN_CONFIG}'")


def test_resume_without_last_continues_from_best(tmp_path, saved):
    run = run_with_checkpoints(tmp_path, saved)
    (run / ck.LAST).unlink()  # killed between the two files of its first save
    assert ck.load_resume_checkpoint(run).meta["progress"]["step"] == 10
    (run / ck.BEST).unlink()  # killed before its first save: start over
    assert ck.load_resume_checkpoint(run) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4),
        lambda p: torch.optim.SGD(p, lr=0.1),  # momentum 0: no tensors, a None buffer or none
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99)),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    ],
)
def test_optimizer_state_round_trip(tmp_path, make):
    model, meta = tiny_model()
    opt = make(model.parameters())
    x = torch.randint(
        0, model.config.vocab_size, (5, 3), generator=torch.Generator().manual_seed(0)
    )

    def step(m, o):
        o.zero_grad()
        logits, _ = m(x)
        F.cross_entropy(logits[:-1].reshape(-1, logits.size(-1)), x[1:].reshape(-1)).backward()
        o.step()

    for _ in range(3):
        step(model, opt)
    optim_meta, optim_tensors = ck.optimizer_to_checkpoint(opt.state_dict())
    ckpt = model_checkpoint(model, dict(meta, optimizer=optim_meta))
    ckpt.tensors.update(optim_tensors)
    path = tmp_path / "opt.safetensors"
    ck.save_checkpoint(path, ckpt)

    back = ck.load_checkpoint(path)
    model2, _, _ = load_model(path)
    model2.train()
    opt2 = make(model2.parameters())
    opt2.load_state_dict(ck.optimizer_from_checkpoint(back))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for pid, entries in a["state"].items():
        assert entries.keys() == b["state"][pid].keys()
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b["state"][pid][key]), (pid, key)
            else:
                assert value == b["state"][pid][key]
    assert json.loads(json.dumps(a["param_groups"])) == json.loads(json.dumps(b["param_groups"]))
    # the restored optimizer takes exactly the same next step
    step(model, opt)
    step(model2, opt2)
    for (name, p), p2 in zip(model.named_parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, p2), name


def test_checkpoint_without_optimizer_cannot_resume(saved):
    with pytest.raises(CheckpointError, match="no optimizer state"):
        ck.optimizer_from_checkpoint(ck.load_checkpoint(saved))


def test_rng_round_trip(tmp_path):
    torch.manual_seed(123)
    ckpt = ck.Checkpoint(meta={}, tensors=ck.rng_to_checkpoint())
    expected = torch.rand(5)
    path = tmp_path / "rng.safetensors"
    ck.save_checkpoint(path, ckpt)
    torch.rand(100)
    ck.rng_from_checkpoint(ck.load_checkpoint(path))
    assert torch.equal(torch.rand(5), expected)
