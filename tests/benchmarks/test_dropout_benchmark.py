"""``benchmarks/bench_dropout.py``: its two contenders are the dropouts it names, and a smoke run
writes the report the BENCHMARKS table is read from."""

from __future__ import annotations

import json

from rnnlab.cli import make_parser
from rnnlab.cli.train import build_run_config


def model_of(argv):
    return build_run_config(make_parser().parse_args(["train", *argv])).model


def test_the_contenders_differ_only_in_where_the_dropout_masks_are_drawn(bench):
    module = bench("bench_dropout")
    plain, locked = model_of(module.PLAIN), model_of(module.LOCKED)
    assert plain.dropout == 0.4
    assert (plain.dropout_input, plain.dropout_hidden, plain.dropout_output) == (0, 0, 0)
    assert locked.dropout == 0
    assert (locked.dropout_input, locked.dropout_hidden, locked.dropout_output) == (0.4,) * 3
    strip = {"dropout", "dropout_input", "dropout_hidden", "dropout_output"}
    assert {k: v for k, v in vars(plain).items() if k not in strip} == {
        k: v for k, v in vars(locked).items() if k not in strip
    }


def test_a_quick_run_writes_both_measurements(bench, tmp_path, monkeypatch):
    monkeypatch.delenv("RNNLAB_DATA_DIR", raising=False)
    out = tmp_path / "dropout.json"
    bench("bench_dropout").main(["--quick", "--threads", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["ops"]["ms"]["per_token"] > 0 and report["ops"]["ms"]["locked"] > 0
    loop = report["train_loop"]
    assert loop["data"] == "synthetic-zipf"
    assert loop["train"]["plain"]["tokens_per_s"] > 0
    assert (
        loop["ratio"]
        == loop["train"]["locked"]["tokens_per_s"] / (loop["train"]["plain"]["tokens_per_s"])
    )
