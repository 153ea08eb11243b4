"""``rnnlab.onnx_sampler``: it runs where torch cannot be imported, draws as ``rnnlab sample``
draws, encodes primes with the run's tokenizer, and refuses bad files and options in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.export.onnx_file import export_onnx
from rnnlab.generation.sampling import SamplingConfig, make_generator, pick
from rnnlab.onnx_sampler import OnnxLanguageModel, choose, main, sample

SRC = Path(rnnlab.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def char_model(tmp_path_factory, save_run) -> Path:
    base = tmp_path_factory.mktemp("char")
    run = save_run(base / "run", "lstm", "full", layers=1)
    export_onnx(run, base / "char.onnx")
    return base / "char.onnx"


@pytest.fixture(scope="module")
def word_model(tmp_path_factory, save_run) -> Path:
    base = tmp_path_factory.mktemp("word")
    run = save_run(base / "run", "gru", "adaptive", level="word", layers=1)
    export_onnx(run, base / "word.onnx")
    return base / "word.onnx"


BLOCKED = textwrap.dedent(
    """
    import importlib.abc, json, runpy, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    import rnnlab.onnx_sampler as s

    lm = s.OnnxLanguageModel(sys.argv[1])
    texts = s.sample(lm, "the ", length=30, batch=2, seed=5, top_k=6)
    try:
        from rnnlab import LSTM  # noqa: F401
        message = None
    except ImportError as e:
        message = str(e)
    from rnnlab import RnnlabError  # noqa: F401  (the error classes need no torch)
    sys.argv = ["onnx_sampler", sys.argv[1], "--prime", "the", "--length", "12", "--seed", "2"]
    sys.argv += ["--batch", "3", "--json"]
    try:
        runpy.run_module("rnnlab.onnx_sampler", run_name="__main__")
    except SystemExit as e:
        code = e.code
    torch_modules = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"texts": texts, "message": message, "code": code, "torch": torch_modules}))
    """
)


def test_samples_where_torch_cannot_be_imported(char_model):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(char_model)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["torch"] == [] and result["code"] == 0
    assert "PyTorch" in result["message"] and "rnnlab.onnx_sampler" in result["message"]
    cli_texts = [row["text"] for row in json.loads(lines[-2])]
    assert len(cli_texts) == 3 and all(t.startswith("the") for t in cli_texts)
    # the same file, prime and seed give the same text with torch present
    lm = OnnxLanguageModel(char_model)
    assert result["texts"] == sample(lm, "the ", length=30, batch=2, seed=5, top_k=6)
    assert all(len(t) == len("the ") + 30 for t in result["texts"])


@pytest.mark.parametrize(
    "cfg",
    [
        SamplingConfig(),
        SamplingConfig(temperature=0),
        SamplingConfig(temperature=0.5, top_k=3),
        SamplingConfig(temperature=2.0, top_p=0.5),
        SamplingConfig(top_k=1),
        SamplingConfig(top_k=10, top_p=0.95),
    ],
)
def test_choose_draws_what_rnnlab_pick_draws(cfg):
    """Same logits and the same uniform numbers: the same ids, over 2000 rows."""
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2000, 40, generator=gen) * 3
    allowed = torch.rand(40, generator=gen) > 0.2
    generator = make_generator(11)
    twin = torch.Generator()
    twin.set_state(generator.get_state())
    uniforms = torch.rand((2000, 1), generator=twin, dtype=torch.float64)[:, 0].numpy()
    want = pick(logits, cfg, generator, allowed).numpy()
    got = choose(logits.numpy(), uniforms, cfg.temperature, cfg.top_k, cfg.top_p, allowed.numpy())
    assert (got == want).mean() > 0.999  # float32 rounding may move a draw on a boundary
    assert allowed.numpy()[got].all()


def test_seeded_batches_prime_and_unknowns(char_model):
    lm = OnnxLanguageModel(char_model, threads=1)
    a = sample(lm, "the quick", length=50, batch=4, seed=3, temperature=0.8)
    assert a == sample(lm, "the quick", length=50, batch=4, seed=3, temperature=0.8)
    assert a != sample(lm, "the quick", length=50, batch=4, seed=4, temperature=0.8)
    assert len(set(a)) > 1 and all(t.startswith("the quick") for t in a)
    assert all("<unk>" not in t for t in sample(lm, "€", length=200, batch=2, seed=0))
    greedy = sample(lm, "the", length=20, batch=2, temperature=0)
    assert greedy[0] == greedy[1]
    # an unknown character in the prime reads as <unk> and is written back as it was given
    assert sample(lm, "Ω", length=3, seed=1)[0].startswith("Ω")


def test_word_level_tokenizer(word_model):
    lm = OnnxLanguageModel(word_model)
    assert lm.level == "word" and lm.boundary_id == lm.stoi["<eos>"]
    assert lm.prime_tokens("the quick\nbrown fox") == ["the", "quick", "<eos>", "brown", "fox"]
    assert lm.prime_tokens("the fox\n") == ["the", "fox", "<eos>"]
    assert lm.encode(["the", "zebra"]) == [lm.stoi["the"], lm.unk_id]
    texts = sample(lm, "the quick", length=20, batch=2, seed=1)
    assert all(t.startswith("the quick") for t in texts)
    assert lm.detokenize(["a", "b", "<eos>", "c"]) == "a b\nc"


# ------------------------------------------------------------------------------ the command


def test_command_line(char_model, capsys):
    assert main([str(char_model), "--prime", "the", "--length", "10", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the") and len(out) == len("the") + 10 + 1
    assert main([str(char_model), "--length", "5", "--batch", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def sampler_error(capsys, argv, *mentions, code=2):
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m rnnlab.onnx_sampler: error:")
    for m in mentions:
        assert m in err, err


def test_command_line_errors(tmp_path, char_model, capsys):
    sampler_error(capsys, [tmp_path / "missing.onnx"], "no ONNX file", "rnnlab export")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model" * 10)
    sampler_error(capsys, [tmp_path / "junk.onnx"], "cannot load")
    sampler_error(capsys, [char_model, "--top-p", "1.5"], "top-p")
    sampler_error(capsys, [char_model, "--top-k", "0"], "top-k")
    sampler_error(capsys, [char_model, "--length", "0"], "length")
    sampler_error(capsys, [char_model, "--temperature", "-1"], "temperature")
    sampler_error(capsys, [char_model, "--threads", "0"], "--threads")
    sampler_error(capsys, [char_model, "--length", "ten"], "--length")


def test_a_foreign_onnx_file_is_refused(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "foreign.onnx")
    sampler_error(capsys, [tmp_path / "foreign.onnx"], "not an rnnlab export")


def test_state_layout_is_usable_directly(char_model):
    """A hand-written loop: zeros, feed, read log_probs; batch rows do not mix."""
    lm = OnnxLanguageModel(char_model)
    state = lm.init_state(2)
    tokens = np.array([lm.stoi["t"], lm.stoi["x"]])
    both, _ = lm.step(tokens, state)
    alone, _ = lm.step(tokens[:1], lm.init_state(1))
    np.testing.assert_allclose(both[:1], alone, atol=1e-6)
    assert not np.allclose(both[0], both[1])
