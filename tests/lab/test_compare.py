"""lab/compare.py: a typed compare request becomes the grid ``rnnlab compare`` always ran.

The expected grids below were written out from what ``build_grid_config`` gave before the
request existed; the refusals keep their words and their order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnlab.config.run import OptimConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.lab.compare import (
    DEFAULT_COMPARE_STEPS,
    UNTIL_BUDGET,
    CompareRequest,
    compare_settings,
    grid_config,
)
from rnnlab.lab.grid import GridConfig
from rnnlab.models.config import LanguageModelConfig

SEARCH = (
    "run_id,cell,data_fraction,bptt,seed,lr,status,valid_ppl\n"
    "a,gru,1,35,1,0.001,ok,7.5\nb,gru,1,35,1,0.01,ok,7.0\n"
    "c,lstm,1,35,1,0.001,ok,6.5\nd,lstm,1,35,1,0.01,diverged,\n"
)


def searched(tmp_path: Path) -> Path:
    """A finished search's grid directory: gru chose 0.01, lstm 0.001, rnn nothing."""
    grid = tmp_path / "search"
    grid.mkdir()
    (grid / "results.csv").write_text(SEARCH, encoding="utf-8")
    return grid


def test_a_text_file_with_nothing_else_is_the_default_grid():
    expected = GridConfig(
        data=DataConfig(text="x.txt", min_count=1),
        model=LanguageModelConfig(embed_size=64, hidden_size=128, num_layers=1, dropout=0.0),
        optim=OptimConfig(optimizer="adam", lr=2e-3, clip=1.0, schedule="constant"),
        train=TrainConfig(epochs=UNTIL_BUDGET, max_steps=DEFAULT_COMPARE_STEPS),
    )
    assert grid_config(CompareRequest(text="x.txt")) == expected


def test_a_piano_roll_corpus_starts_from_its_preset():
    expected = GridConfig(
        data=DataConfig(corpus="nottingham", corpus_options={"start_frame": True}),
        model=LanguageModelConfig(embed_size=0, hidden_size=36, num_layers=1),
        optim=OptimConfig(
            optimizer="rmsprop", lr=1e-3, clip=1.0, schedule="constant", weight_noise=0.075
        ),
        train=TrainConfig(batch_size=8, eval_batch_size=32, epochs=2000, patience=20),
        bptts=(200,),
    )
    assert grid_config(CompareRequest(corpus="nottingham", start_frame=True)) == expected


def test_a_preset_gives_its_settings_but_not_its_tying():
    grid = grid_config(CompareRequest(preset="ptb-hour", hidden=64))
    expected = GridConfig(
        data=DataConfig(corpus="ptb"),
        model=LanguageModelConfig(
            embed_size=400,
            hidden_size=64,
            num_layers=2,
            dropout=0.0,
            dropout_input=0.4,
            dropout_hidden=0.3,
            dropout_output=0.4,
        ),
        optim=OptimConfig(optimizer="sgd", lr=20.0, clip=0.25, schedule="cosine"),
        train=TrainConfig(epochs=200),
    )
    assert grid == expected


def test_a_presets_awd_dropouts_reach_every_run():
    m = grid_config(CompareRequest(preset="awd-ptb", hidden=64)).model
    assert (m.dropout, m.dropout_input, m.dropout_hidden, m.dropout_output) == (0, 0.4, 0.3, 0.4)
    assert (m.dropout_embed, m.weight_drop) == (0.1, 0.5)
    # plain dropout between layers on top of the preset's locked dropout there: refused
    with pytest.raises(ConfigError, match="set one of them to 0"):
        grid_config(CompareRequest(preset="awd-ptb", dropout=0.2))
    assert grid_config(CompareRequest(text="x.txt")).model.awd_options() == {}


def test_tying_or_embed_hidden_make_the_embedding_follow_the_hidden_size():
    tied = grid_config(CompareRequest(text="x.txt", tie=True, embed="7"))
    assert tied.embed_follows_hidden and tied.model.tie_weights
    assert tied.model.embed_size == tied.model.hidden_size == 128
    follows = grid_config(CompareRequest(text="x.txt", embed="hidden", hidden=16))
    assert follows.embed_follows_hidden and not follows.model.tie_weights
    assert follows.model.embed_size == 16
    assert grid_config(CompareRequest(text="x.txt", embed="32")).model.embed_size == 32


def test_axes_rates_and_budgets():
    grid = grid_config(
        CompareRequest(
            text="x.txt",
            cells=("gru", "lstm"),
            data_fractions=(0.5, 1.0),
            bptt=(5, 20),
            lr=(1e-3, 3e-3),
            seeds=3,
            max_tokens=900,
        )
    )
    assert grid.cells == ("gru", "lstm") and grid.data_fractions == (0.5, 1.0)
    assert grid.bptts == (5, 20) and grid.seeds == (1, 2, 3)
    assert grid.lrs == (1e-3, 3e-3) and grid.optim.lr == 1e-3 and grid.cell_lrs == {}
    assert grid.max_tokens == 900 and grid.train.max_steps is None  # a budget: no default steps
    assert grid_config(CompareRequest(text="x.txt", lr=(3e-3,))).lrs == ()
    assert grid_config(CompareRequest(text="x.txt", epochs=2)).train.max_steps is None
    assert grid_config(CompareRequest(corpus="jsb", max_steps=5)).train.epochs == 2000


def test_a_rate_per_cell_or_the_rates_of_an_earlier_search(tmp_path):
    per_cell = grid_config(
        CompareRequest(text="x.txt", cells=("gru", "lstm"), lr={"gru": 3e-3, "lstm": 1e-2})
    )
    assert per_cell.cell_lrs == {"gru": 3e-3, "lstm": 1e-2} and per_cell.lrs == ()
    assert per_cell.optim.lr == 3e-3  # a placeholder: every run sets its cell's
    request = CompareRequest(text="x.txt", cells=("gru", "lstm"), lr_from=str(searched(tmp_path)))
    assert grid_config(request).cell_lrs == {"gru": 0.01, "lstm": 0.001}


def test_settings_are_read_from_the_resolved_config():
    music = compare_settings(CompareRequest(corpus="jsb"))
    assert music["hidden"] == 36 and music["embed"] == "0" and music["bptt"] == (200,)
    assert music["lr"] == (1e-3,) and music["epochs"] == 2000
    plain = compare_settings(CompareRequest(text="x.txt"))
    assert plain["corpus"] is None and plain["embed"] == "64" and plain["epochs"] is None
    rates = {"gru": 3e-3}
    assert compare_settings(CompareRequest(text="x.txt", lr=rates))["lr"] == (rates,)
    assert compare_settings(CompareRequest(text="x.txt", lr=(1e-3, 2e-3)))["lr"] == (1e-3, 2e-3)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        # the preset (or corpus) first, even when everything else is wrong too
        (CompareRequest(preset="nope", embed="bad", seeds=0), "unknown preset 'nope'"),
        (CompareRequest(corpus="nope", embed="bad"), "unknown corpus 'nope'"),
        # then embed, seeds, the rates, in that order
        (CompareRequest(text="x.txt", embed="bad", seeds=0), "--embed takes a width or 'hidden'"),
        (CompareRequest(text="x.txt", seeds=0, lr_from="nowhere"), "--seeds must be at least 1"),
        (CompareRequest(text="x.txt", lr=(1e-3,), lr_from="x", hidden=0), "not both"),
        (CompareRequest(text="x.txt", lr={"gru": 1e-3, "rnn": 1e-3}, cells=("gru",)), "not in"),
        # then the settings' values, then the grid's own checks
        (CompareRequest(text="x.txt", hidden=0, bptt=(0,)), "hidden_size must be a positive"),
        (CompareRequest(text="x.txt", bptt=(0,)), "BPTT windows must be positive"),
        (CompareRequest(text="x.txt", lr=(1e-3, 1e-3)), "learning rates repeat a value"),
        (CompareRequest(text="x.txt", lr={"gru": 1e-3}), r"no learning rate for cell\(s\) rnn"),
    ],
)
def test_refusals_come_in_their_order(request_, message):
    with pytest.raises(ConfigError, match=message):
        grid_config(request_)


def test_an_earlier_search_must_have_chosen_for_every_cell(tmp_path):
    request = CompareRequest(text="x.txt", cells=("rnn", "gru"), lr_from=str(searched(tmp_path)))
    with pytest.raises(ConfigError, match="chose no rate for rnn; search it there"):
        grid_config(request)
