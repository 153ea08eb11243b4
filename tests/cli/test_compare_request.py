"""``rnnlab compare`` parses its flags into one CompareRequest and asks the library for the grid."""

from __future__ import annotations

from dataclasses import fields

import pytest

from rnnlab.cli import build_grid_config, compare_settings, make_parser
from rnnlab.cli.lab import compare_request
from rnnlab.errors import ConfigError
from rnnlab.lab.compare import CompareRequest, grid_config
from rnnlab.lab.compare import compare_settings as request_settings

# what the compare flags carry besides the grid: where to write it and how to print
NOT_THE_GRID = {"out", "no_progress", "json"}


def parse(*argv: str):
    return make_parser().parse_args(["compare", *argv, "--out", "o"])


def test_every_grid_flag_is_a_field_of_the_request_with_the_same_default():
    args = parse()
    flags = set(vars(args)) - {"command", "verbose", "func"} - NOT_THE_GRID
    assert flags == {f.name for f in fields(CompareRequest)}
    assert compare_request(args) == CompareRequest()


@pytest.mark.parametrize(
    ("argv", "request_"),
    [
        (["--text", "x.txt"], CompareRequest(text="x.txt")),
        (
            ["--corpus", "jsb", "--start-frame", "--cells", "rnn,lstm", "--params", "20000"],
            CompareRequest(corpus="jsb", start_frame=True, cells=("rnn", "lstm"), params=20000),
        ),
        (
            ["--preset", "ptb-hour", "--hidden", "64", "--tie", "--seeds", "2", "--epochs", "3"],
            CompareRequest(preset="ptb-hour", hidden=64, tie=True, seeds=2, epochs=3),
        ),
        (
            ["--text", "x.txt", "--bptt", "5,20", "--lr", "1e-3,3e-3", "--embed", "hidden"],
            CompareRequest(text="x.txt", bptt=(5, 20), lr=(1e-3, 3e-3), embed="hidden"),
        ),
        (
            ["--text", "x.txt", "--cells", "gru,lstm", "--lr", "gru=3e-3,lstm=1e-2"],
            CompareRequest(text="x.txt", cells=("gru", "lstm"), lr={"gru": 3e-3, "lstm": 1e-2}),
        ),
        (
            ["--text", "x.txt", "--data-fractions", "0.5,1", "--max-tokens", "900",
             "--max-minutes", "0.5", "--optimizer", "sgd", "--clip", "5", "--batch-size", "4",
             "--eval-every", "9", "--eval-points", "7", "--target-ppl", "3.5", "--device", "cpu"],
            CompareRequest(
                text="x.txt", data_fractions=(0.5, 1.0), max_tokens=900, max_minutes=0.5,
                optimizer="sgd", clip=5.0, batch_size=4, eval_every=9, eval_points=7,
                target_ppl=3.5, device="cpu",
            ),
        ),
    ],
)  # fmt: skip
def test_the_flags_make_the_request_and_the_grid(argv, request_):
    args = parse(*argv)
    assert compare_request(args) == request_
    assert build_grid_config(args) == grid_config(request_)
    assert compare_settings(args) == request_settings(request_)


def test_a_refused_request_is_refused_through_the_cli_too():
    with pytest.raises(ConfigError, match="--seeds must be at least 1, got 0"):
        build_grid_config(parse("--text", "x.txt", "--seeds", "0"))
    with pytest.raises(ConfigError, match="--embed takes a width or 'hidden', got 'wide'"):
        build_grid_config(parse("--text", "x.txt", "--embed", "wide", "--seeds", "0"))


def test_compare_refusals_are_one_line_with_exit_code_2(run_cli, tmp_path):
    code, out, err = run_cli(
        "compare", "--text", "x.txt", "--lr", "1e-3", "--lr-from", tmp_path, "--out", tmp_path
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["rnnlab: error: give --lr or --lr-from, not both"]
