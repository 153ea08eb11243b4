"""Piano rolls end to end: the comparison grid on rolls (NLL columns, learning-rate search,
plots by epoch) and the command line (train, eval, compare, refusals)."""

import csv
import json

import pytest
import torch

from rnnlab.config.run import OptimConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.data.rolls import N_PITCHES, RollData
from rnnlab.errors import ConfigError
from rnnlab.lab.grid import NLL, GridConfig, plan_grid
from rnnlab.lab.results import selected_rates, valid_curve
from rnnlab.lab.runner import run_grid
from rnnlab.models.config import LanguageModelConfig

QUIET = ["--no-progress", "--threads", "1"]


def toy_rolls(seed=0) -> RollData:
    """Random sparse pieces of a few lengths (enough for a grid to train on)."""
    g = torch.Generator().manual_seed(seed)

    def split(lengths):
        return [(torch.rand(n, N_PITCHES, generator=g) < 0.05).float() for n in lengths]

    return RollData("toy", split([5, 17, 9, 23, 4, 12, 30, 8]), split([10, 7]), split([9, 13]))


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def roll_grid(**kw) -> GridConfig:
    settings = dict(
        data=DataConfig(corpus="jsb"),
        model=LanguageModelConfig(num_layers=1, embed_size=0),
        optim=OptimConfig(optimizer="rmsprop", lr=3e-3, clip=1.0, schedule="constant"),
        train=TrainConfig(batch_size=4, eval_batch_size=4, epochs=2),
        bptts=(8,),
        cells=("rnn", "lstm"),
        params=6000,
        seeds=(1, 2),
        lrs=(1e-3, 1e-2),
        eval_points=3,
    )
    settings.update(kw)
    return GridConfig(**settings)


# ------------------------------------------------------------------------- the grid on rolls
@pytest.fixture(scope="module")
def roll_grid_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollgrid")
    grid = roll_grid()
    return grid, out, run_grid(grid, out, data=toy_rolls())


def test_grid_on_rolls_matches_sizes_with_the_sigmoid_head():
    grid = roll_grid()
    runs = plan_grid(grid, toy_rolls())
    assert len(runs) == 2 * 2 * 2
    for run in runs:
        assert run.config.model.head == "sigmoid" and run.config.model.embed_size == 0
        assert abs(run.size.parameters - 6000) <= 0.02 * 6000
        assert "-lr" in run.run_id
    with pytest.raises(Exception, match="max-tokens"):
        plan_grid(roll_grid(max_tokens=1000), toy_rolls())


def test_roll_grid_reports_nll_per_step_not_perplexity(roll_grid_run):
    grid, out, report = roll_grid_run
    rows = read_csv(out / "results.csv")
    assert len(rows) == 8
    assert {"valid_nll", "test_nll", "target_nll", "lr"} <= set(rows[0])
    assert not any("ppl" in c or "bpc" in c for c in rows[0])
    for r in rows:
        assert r["status"] == "ok" and 0 < float(r["test_nll"]) < 88
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "Piano rolls" in summary and "valid nll" in summary and "perplexity" not in summary
    assert "## Selected by validation" in summary
    chosen = selected_rates(report.rows, NLL)
    assert set(chosen) == {("rnn", 1.0, 8), ("lstm", 1.0, 8)}
    names = {p.name for p in report.files}
    assert {"learning_curves_epochs.png", "learning_curves_time.png"} <= names


def test_roll_learning_curves_are_by_epoch(roll_grid_run):
    _, out, report = roll_grid_run
    curve = valid_curve(out / "runs" / report.rows[0]["run_id"])
    assert curve and all("epochs" in p and "valid_nll" in p for p in curve)
    assert curve[-1]["epochs"] == pytest.approx(2.0)


# ------------------------------------------------------------------------- the command line
@pytest.mark.corpus
def test_cli_trains_and_evaluates_a_tiny_music_model(data_dir, tmp_path, run_cli):
    run = tmp_path / "run"
    code, out, err = run_cli(
        "train", "--corpus", "jsb", "--max-steps", "5", "--hidden", "8",
        "--out", run, "--json", *QUIET,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["test"]["steps"] == 4_725 - 77 and summary["sample"] is None
    assert "piano rolls" in err and "229 train pieces" in err
    saved = json.loads((run / "run.json").read_text())
    assert saved["preset"] == "music-chung2014"
    assert saved["optim"]["optimizer"] == "rmsprop" and saved["optim"]["weight_noise"] == 0.075
    code, out, err = run_cli("eval", run, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["corpus"] == "jsb" and result["split"] == "test"
    assert result["nll_per_step"] == pytest.approx(summary["test"]["nll_per_step"], rel=1e-6)
    code, out, _ = run_cli("eval", run, "--split", "valid")
    assert code == 0 and "nats per time step" in out and "4,526 steps" in out
    for args in (("sample", run), ("score", run, "--text", run / "run.json")):
        code, _, err = run_cli(*args)
        assert code == 2 and "piano-roll model" in err and "Traceback" not in err
    code, _, err = run_cli("eval", run, "--corpus", "ptb")
    assert code == 2 and "piano-roll" in err
    code, _, err = run_cli("train", "--resume", run, "--start-frame", *QUIET)
    assert code == 2 and "--start-frame" in err


@pytest.mark.corpus
def test_cli_start_frame_scores_every_frame(data_dir, tmp_path, run_cli):
    run = tmp_path / "run"
    code, out, err = run_cli(
        "train", "--corpus", "jsb", "--start-frame", "--max-steps", "2", "--hidden", "8",
        "--out", run, "--json", *QUIET,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["test"]["steps"] == 4_725  # every frame of the 77 test pieces
    saved = json.loads((run / "run.json").read_text())
    assert saved["data"]["corpus_options"] == {"start_frame": True}
    code, out, err = run_cli("eval", run, "--json")
    assert code == 0 and json.loads(out)["steps"] == 4_725


@pytest.mark.corpus
def test_cli_compare_on_jsb(data_dir, tmp_path, run_cli):
    out = tmp_path / "grid"
    code, stdout, err = run_cli(
        "compare", "--corpus", "jsb", "--cells", "rnn,lstm", "--params", "20000",
        "--max-steps", "3", "--eval-every", "3", "--out", out, *QUIET,
    )  # fmt: skip
    assert code == 0, err
    assert "valid nll" in stdout and "ppl" not in stdout
    rows = read_csv(out / "results.csv")
    assert [r["hidden"] for r in rows] == ["78", "34"]  # ~20k parameters, frames fed directly
    assert all(r["embed"] == "0" and r["bptt"] == "200" for r in rows)
    grid = json.loads((out / "grid.json").read_text())
    assert grid["optim"]["optimizer"] == "rmsprop" and grid["optim"]["weight_noise"] == 0.075


def test_cli_compare_defaults_for_text_are_unchanged():
    from rnnlab.cli import build_grid_config, make_parser

    args = make_parser().parse_args(["compare", "--text", "x.txt", "--out", "o"])
    grid = build_grid_config(args)
    assert grid.optim.optimizer == "adam" and grid.optim.lr == 2e-3 and grid.lrs == ()
    assert grid.bptts == (35,) and grid.model.embed_size == 64 and grid.train.batch_size == 20
    assert grid.train.max_steps == 1000 and grid.optim.weight_noise == 0.0
    args = make_parser().parse_args(
        ["compare", "--text", "x.txt", "--out", "o", "--lr", "1e-3,3e-3", "--embed", "hidden"]
    )
    grid = build_grid_config(args)
    assert grid.lrs == (1e-3, 3e-3) and grid.model.embed_size == grid.model.hidden_size


def test_a_text_model_is_not_evaluated_on_piano_rolls(tmp_path, run_cli, make_fox_file):
    text = make_fox_file(tmp_path, "t.txt", jugs=False)  # 40 foxes on one line, no jugs
    run = tmp_path / "run"
    code, _, err = run_cli(
        "train", "--text", text, "--max-steps", "2", "--hidden", "8", "--embed", "4",
        "--layers", "1", "--bptt", "8", "--batch-size", "4", "--out", run, "--no-sample", *QUIET,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("eval", run, "--corpus", "jsb")
    assert code == 2 and "text model" in err and "piano rolls" in err
    code, _, err = run_cli(
        "train", "--text", text, "--embed", "0", "--bptt", "8", "--batch-size", "4",
        "--out", tmp_path / "x",
    )  # fmt: skip
    assert code == 2 and "--embed N" in err


def test_cli_compare_takes_a_rate_per_cell_or_an_earlier_search(tmp_path):
    from rnnlab.cli import build_grid_config, make_parser

    base = ["compare", "--text", "x.txt", "--out", "o", "--cells", "gru,lstm"]
    grid = build_grid_config(make_parser().parse_args([*base, "--lr", "gru=3e-3,lstm=1e-2"]))
    assert grid.cell_lrs == {"gru": 3e-3, "lstm": 1e-2} and grid.lrs == ()
    assert grid.rates_for("gru") == (3e-3,) and grid.shows_lr and not grid.searches_lr
    search = tmp_path / "search"
    search.mkdir()
    (search / "results.csv").write_text(
        "run_id,cell,data_fraction,bptt,seed,lr,status,valid_ppl\n"
        "a,gru,1,35,1,0.001,ok,7.5\nb,gru,1,35,1,0.01,ok,7.0\n"
        "c,lstm,1,35,1,0.001,ok,6.5\nd,lstm,1,35,1,0.01,diverged,\n",
        encoding="utf-8",
    )
    grid = build_grid_config(make_parser().parse_args([*base, "--lr-from", str(search)]))
    assert grid.cell_lrs == {"gru": 0.01, "lstm": 0.001}
    refusals = [
        ([*base, "--lr-from", str(search), "--lr", "1e-3"], "not both"),
        ([*base, "--cells", "rnn,gru", "--lr-from", str(search)], "no rate for rnn"),
        ([*base, "--lr", "gru=1e-3,rnn=1e-3"], "not in --cells"),
        ([*base, "--lr", "gru=1e-3"], "no learning rate for cell(s) lstm"),
    ]
    for argv, message in refusals:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build_grid_config(make_parser().parse_args(argv))
    with pytest.raises(SystemExit):
        make_parser().parse_args([*base, "--lr", "gru=1e-3,2e-3"])
