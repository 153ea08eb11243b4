"""``benchmarks/torch_example_client.py``: pytorch/examples' word_language_model on rnnlab.

The fast tests check the one change it makes to the example (model.py) on a stand-in file;
the slow test runs the whole matrix when ``RNNLAB_EXAMPLES_DIR`` points at a checkout of
pytorch/examples and ``RNNLAB_DATA_DIR`` holds ``wikitext-2/{train,valid,test}.txt``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The lines of pytorch/examples' model.py the substitution rewrites (a stand-in, not a copy).
MODEL_PY = """import torch
import torch.nn as nn

class RNNModel(nn.Module):
    def __init__(self, rnn_type, ninp, nhid, nlayers, dropout):
        super().__init__()
        if rnn_type in ['LSTM', 'GRU']:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity='tanh', dropout=dropout)
        self.decoder = nn.Linear(nhid, 3)
"""


def test_model_py_substitution_builds_rnnlab_layers(bench) -> None:
    import torch.nn as nn

    import rnnlab

    text = bench("torch_example_client").rnnlab_model_py(MODEL_PY)
    assert "import rnnlab\n" in text
    assert "nn.Linear(nhid, 3)" in text  # everything else stays torch.nn
    namespace: dict = {}
    exec(compile(text, "model.py", "exec"), namespace)  # noqa: S102 - our own stand-in
    for rnn_type, layer in (("LSTM", rnnlab.LSTM), ("GRU", rnnlab.GRU), ("RNN", rnnlab.RNN)):
        model = namespace["RNNModel"](rnn_type, 4, 5, 2, 0.0)
        assert type(model.rnn) is layer
        assert isinstance(model.decoder, nn.Linear)


def test_model_py_substitution_refuses_a_changed_file(bench) -> None:
    with pytest.raises(ValueError, match="the example changed"):
        bench("torch_example_client").rnnlab_model_py(
            MODEL_PY.replace("getattr(nn, rnn_type)", "make_rnn")
        )


def test_last_error_line_finds_the_exception(bench) -> None:
    stderr = (
        "Traceback (most recent call last):\n  File 'main.py', line 3\n"
        "RuntimeError: Expected hidden size (2, 1, 5), got [1, 1, 5]\n"
        "  warnings.warn(\n"
    )
    client = bench("torch_example_client")
    assert client.last_error_line(stderr).startswith("RuntimeError: Expected hidden size")
    assert client.last_error_line("") == ""


@pytest.mark.slow
def test_the_example_runs_on_rnnlab_as_on_torch_nn(bench, data_dir: str, tmp_path: Path) -> None:
    examples = os.environ.get("RNNLAB_EXAMPLES_DIR")
    if not examples or not (Path(examples) / "word_language_model" / "main.py").is_file():
        pytest.skip("needs RNNLAB_EXAMPLES_DIR pointing at a checkout of pytorch/examples")
    wikitext = Path(data_dir) / "wikitext-2"
    if not (wikitext / "train.txt").is_file():
        pytest.skip(f"needs WikiText-2's train/valid/test.txt in {wikitext}")
    out = tmp_path / "results.json"
    code = bench("torch_example_client").main([examples, str(wikitext), "--out", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["summary"]["rnnlab_fails_where_torch_works"] == []
    assert code == 0
    for run in report["runs"]:
        assert run["rnnlab"]["status"] == "ok", run
        # same seed, same initialisation order, same kernel: the same perplexity
        assert run["rnnlab"]["test_ppl"] == pytest.approx(run["torch_nn"]["test_ppl"], rel=1e-3)
        if "onnx_runtime_comparison" in run:
            comparison = run["onnx_runtime_comparison"]
            assert comparison["status"] in ("ok", "skipped"), comparison
            if comparison["status"] == "ok":
                assert max(comparison["max_abs_difference_per_output"]) < 1e-4
