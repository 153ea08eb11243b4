"""``rnnlab export --onnx``: for every cell and head the exported step and PyTorch give the same
log-probabilities, and the same tokens from the same uniform numbers, over 100 sampling steps;
the file carries what a sampler needs; bad input is one line and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnlab.export.onnx_file import export_onnx
from rnnlab.generation.fast_step import FastStepper, make_stepper
from rnnlab.generation.sampling import SamplingConfig, make_generator, pick
from rnnlab.onnx_sampler import REQUIRED_KEYS, OnnxLanguageModel, allowed_tokens, choose
from rnnlab.runs.load import load_text_model

CELLS = ("lstm", "gru", "rnn")
HEAD_NAMES = ("full", "adaptive", "tied-adaptive")
SETTINGS = [  # a different decoding setting per case: plain, top-k, top-p, all three
    SamplingConfig(),
    SamplingConfig(temperature=0.7, top_k=5),
    SamplingConfig(temperature=1.3, top_p=0.8),
    SamplingConfig(temperature=0.9, top_k=8, top_p=0.9),
]
STEPS = 100
BATCH = 3


def flat_state(state) -> np.ndarray:
    """A PyTorch stepper's state in the exported layout (N, B, H): h_0[, c_0], h_1, ..."""
    if isinstance(state, tuple) and len(state) == 2 and state[0].dim() == 3:  # model's (h, c)
        h, c = state
        return torch.stack([t for pair in zip(h, c, strict=True) for t in pair]).numpy()
    if isinstance(state, torch.Tensor):  # the model's (L, B, H)
        return state.numpy()
    width = max(t.size(-1) for t in state)  # FastStepper: (B, H_k) per layer, the same layout
    return torch.stack([torch.nn.functional.pad(t, (0, width - t.size(-1))) for t in state]).numpy()


def run_side_by_side(run_dir, onnx_file, cfg: SamplingConfig, prime: str = "the qu"):
    """Sample ``STEPS`` tokens with rnnlab's own stepper and ``pick``, and with the exported
    graph and :func:`choose`, both fed the same uniform numbers; compare every step."""
    model, vocab, _ = load_text_model(run_dir)
    stepper = make_stepper(model)
    lm = OnnxLanguageModel(onnx_file, threads=1)
    context = [lm.boundary_id] + lm.encode(lm.prime_tokens(prime))
    allowed_np = allowed_tokens(lm)
    allowed_t = None if allowed_np is None else torch.from_numpy(allowed_np)
    generator = make_generator(1234)
    logits, state = stepper.start(torch.tensor(context), BATCH)
    log_probs, onnx_state = lm.start(context, BATCH)
    for t in range(STEPS):
        reference = torch.log_softmax(logits.float(), dim=-1).numpy()
        np.testing.assert_allclose(log_probs, reference, rtol=1e-4, atol=2e-5, err_msg=f"step {t}")
        twin = torch.Generator()
        twin.set_state(generator.get_state())  # the uniform numbers pick() is about to draw
        uniforms = torch.rand((BATCH, 1), generator=twin, dtype=torch.float64)[:, 0].numpy()
        ids = pick(logits, cfg, generator, allowed_t)
        onnx_ids = choose(log_probs, uniforms, cfg.temperature, cfg.top_k, cfg.top_p, allowed_np)
        assert onnx_ids.tolist() == ids.tolist(), f"step {t}"
        logits, state = stepper.step(ids, state)
        log_probs, onnx_state = lm.step(onnx_ids, onnx_state)
    np.testing.assert_allclose(onnx_state, flat_state(state), rtol=1e-4, atol=2e-5)
    return stepper


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("cell", CELLS)
def test_exported_model_samples_exactly_like_pytorch(tmp_path, save_run, cell, head):
    run = save_run(tmp_path / "run", cell, head, seed=CELLS.index(cell))
    result = export_onnx(run, tmp_path / "model.onnx")
    assert result.path.stat().st_size == result.bytes and result.max_difference < 1e-4
    cfg = SETTINGS[(CELLS.index(cell) + HEAD_NAMES.index(head)) % len(SETTINGS)]
    stepper = run_side_by_side(run, tmp_path / "model.onnx", cfg)
    # the softmax head is compared with rnnlab's fast sampling path, the others with forward
    assert isinstance(stepper, FastStepper) == (head == "full")


@pytest.mark.parametrize("cell,head", [("lstm", "full"), ("gru", "tied-adaptive")])
def test_a_narrower_last_layer_exports_and_samples_like_pytorch(tmp_path, save_run, cell, head):
    narrow = {"last_hidden_size": 8, "embed_size": 8}  # AWD-LSTM's shape, tied where the head is
    run = save_run(tmp_path / "run", cell, head, layers=3, model=narrow)
    result = export_onnx(run, tmp_path / "model.onnx")
    assert "3x16 (the last 8)" in result.summary()
    lm = OnnxLanguageModel(tmp_path / "model.onnx", threads=1)
    assert json.loads(lm.meta["layer_sizes"]) == [16, 16, 8] and lm.hidden_size == 16
    run_side_by_side(run, tmp_path / "model.onnx", SETTINGS[1])


def test_reset_before_gru_and_word_level_export(tmp_path, save_run):
    run = save_run(tmp_path / "run", "gru-reset-before", "full", level="word", layers=1)
    export_onnx(run, tmp_path / "model.onnx")
    run_side_by_side(run, tmp_path / "model.onnx", SETTINGS[3], prime="the quick brown")


def test_the_file_holds_what_a_sampler_needs(tmp_path, save_run):
    run = save_run(tmp_path / "run", "lstm", "tied-adaptive", layers=2)
    export_onnx(run, tmp_path / "m.onnx")
    lm = OnnxLanguageModel(tmp_path / "m.onnx")
    _, vocab, _ = load_text_model(run)
    meta = lm.meta
    assert set(REQUIRED_KEYS) <= set(meta)
    assert json.loads(meta["vocab"]) == vocab.itos and lm.itos == vocab.itos
    assert meta["level"] == "char" and meta["unk_token"] == "<unk>"
    assert lm.boundary_id == vocab.stoi["\n"]
    assert (meta["cell"], meta["family"], meta["head"]) == ("lstm", "lstm", "adaptive")
    assert json.loads(meta["tie_weights"]) is True and json.loads(meta["cutoffs"]) == [8, 16]
    assert (meta["num_layers"], meta["hidden_size"], meta["states_per_layer"]) == ("2", "16", "2")
    assert json.loads(meta["state_names"]) == ["h_0", "c_0", "h_1", "c_1"]
    assert meta["rnnlab_version"]
    inputs = {i.name: i.shape for i in lm.session.get_inputs()}
    outputs = {o.name: o.shape for o in lm.session.get_outputs()}
    assert inputs["state"][0] == 4 and inputs["state"][2] == 16  # (N, batch, H)
    assert isinstance(inputs["tokens"][0], str)  # the batch is a named, dynamic dimension
    assert outputs["log_probs"][1] == len(vocab)
    for batch in (1, 7):  # any batch size runs; the distributions sum to one
        log_probs, state = lm.step(np.zeros(batch, dtype=np.int64), lm.init_state(batch))
        assert log_probs.shape == (batch, len(vocab)) and state.shape == (4, batch, 16)
        np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)


def test_cli_export_then_overwrite(tmp_path, save_run, run_cli):
    run = save_run(tmp_path / "run", "rnn", "full", layers=1)
    out = tmp_path / "sub" / "m.onnx"  # a missing folder is created
    code, stdout, err = run_cli("export", run, "--onnx", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout and "rnn 1x16, softmax head" in stdout
    assert "python -m rnnlab.onnx_sampler" in stdout and err == ""
    first = out.read_bytes()
    code, _, err = run_cli("export", run, "--onnx", out)  # replaced whole
    assert code == 0 and out.read_bytes() == first
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temp file left


# ------------------------------------------------------------------------------ bad input


def one_line_error(code, err, *mentions, exit_code=2):
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("rnnlab: error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    for m in mentions:
        assert m in lines[0], lines[0]


def test_not_a_run_directory(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "m.onnx"
    code, _, err = run_cli("export", tmp_path / "missing", "--onnx", out)
    one_line_error(code, err, "no checkpoint", "rnnlab train")
    code, _, err = run_cli("export", tmp_path / "empty", "--onnx", out)
    one_line_error(code, err, "holds no rnnlab checkpoint")
    assert not out.exists()


def test_corrupt_checkpoint_keeps_the_old_file(tmp_path, save_run, run_cli):
    run = save_run(tmp_path / "run", "lstm", "full", layers=1)
    blob = (run / "best.safetensors").read_bytes()
    (run / "best.safetensors").write_bytes(blob[: len(blob) // 2])
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    code, _, err = run_cli("export", run, "--onnx", out)
    one_line_error(code, err, "corrupt")
    assert out.read_bytes() == b"the previous export"


def test_unwritable_target(tmp_path, save_run, run_cli):
    run = save_run(tmp_path / "run", "gru", "full", layers=1)
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = run_cli("export", run, "--onnx", tmp_path / "a-file" / "m.onnx")
    one_line_error(code, err, "cannot write", "writable", exit_code=1)
    code, _, err = run_cli("export", run, "--onnx", tmp_path)  # a directory
    one_line_error(code, err, "is a directory")


def test_piano_roll_model_is_refused(tmp_path, save_roll_run, run_cli):
    run = save_roll_run(tmp_path / "roll")
    code, _, err = run_cli("export", run, "--onnx", tmp_path / "m.onnx")
    one_line_error(code, err, "piano-roll", "export")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_flag(tmp_path, run_cli):
    code, _, err = run_cli("export", tmp_path)
    one_line_error(code, err, "--onnx")
