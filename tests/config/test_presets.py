"""Every preset builds a valid run configuration, and the presets say what their sources say."""

import pytest

from rnnlab.cli import make_parser
from rnnlab.cli.train import build_run_config
from rnnlab.config.presets import PRESETS, get_preset
from rnnlab.errors import ConfigError


def config_of(*argv):
    return build_run_config(make_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_valid_run_config(name):
    config = config_of("--preset", name)
    assert config.preset == name
    assert get_preset(name).description and get_preset(name).source


def test_zaremba_presets_are_in_mean_loss_units():
    small = config_of("--preset", "ptb-small")
    # their lr 1 on the loss summed over 20 steps, clip 5: lr 20 and clip 5/20 on the mean
    assert small.optim.lr == 20 and small.optim.clip == pytest.approx(0.25)
    medium = config_of("--preset", "ptb-medium")
    assert medium.model.hidden_size == 650 and medium.optim.lr == 35


@pytest.mark.parametrize(
    "name,minutes,corpus",
    [("ptb-fast", 6.5, "ptb"), ("ptb-hour", 60.0, "ptb"), ("wt2-hour", 60.0, "wikitext2")],
)
def test_budget_presets_anneal_over_their_budget(name, minutes, corpus):
    config = config_of("--preset", name)
    assert config.train.max_minutes == minutes and config.optim.schedule == "cosine"
    assert config.model.head == "adaptive" and config.data.corpus == corpus
    # the budget is a flag like any other: the schedule follows it
    assert config_of("--preset", name, "--max-minutes", "3").train.max_minutes == 3
    # tied where the vocabulary is small; WikiText-2's 33,278 words untied (twice the tokens/s)
    assert config.model.tie_weights == (name == "ptb-hour")
    # the cutoffs follow the vocabulary (resolved when it is known): none is fixed here
    assert config.model.cutoffs == ()


def test_flags_override_the_preset_and_unknown_presets_are_refused():
    assert config_of("--preset", "ptb-small", "--hidden", "64").model.hidden_size == 64
    with pytest.raises(ConfigError, match="unknown preset"):
        config_of("--preset", "no-such-preset")


def test_a_presets_switches_can_be_turned_off():
    assert config_of("--preset", "ptb-hour").model.tie_weights
    # ptb-hour's dropout is locked (one mask per sequence), AWD-LSTM's three rates
    hour = config_of("--preset", "ptb-hour").model
    assert (hour.dropout, hour.dropout_input, hour.dropout_hidden, hour.dropout_output) == (
        0,
        0.4,
        0.3,
        0.4,
    )
    # plain dropout on top of it is refused between layers, and allowed once that rate is 0
    with pytest.raises(ConfigError, match="set one of them to 0"):
        config_of("--preset", "ptb-hour", "--dropout", "0.4")
    assert config_of("--preset", "ptb-hour", "--dropout", "0.4", "--dropout-hidden", "0").model
    assert not config_of("--preset", "ptb-hour", "--no-tie").model.tie_weights
    assert config_of("--preset", "wt2-hour", "--tie").model.tie_weights  # its first form, tied
    assert config_of("--preset", "awd-ptb").train.variable_bptt
    assert not config_of("--preset", "awd-ptb", "--no-variable-bptt").train.variable_bptt
    # not given: the preset's value stands (the flag's default is no override)
    assert config_of("--preset", "ptb-small", "--tie").model.tie_weights


def test_awd_presets_carry_the_papers_settings():
    ptb = config_of("--preset", "awd-ptb")
    m, o, t = ptb.model, ptb.optim, ptb.train
    assert ptb.data.corpus == "ptb" and ptb.data.level == "word"
    assert (m.cell, m.num_layers, m.hidden_size, m.tie_weights) == ("lstm", 3, 1150, True)
    assert (m.embed_size, m.layer_sizes()) == (400, [1150, 1150, 400])  # the last layer is 400
    assert m.dropout == 0.0
    assert (m.dropout_input, m.dropout_hidden, m.dropout_output) == (0.4, 0.3, 0.4)
    assert (m.dropout_embed, m.weight_drop) == (0.1, 0.5)
    assert (o.optimizer, o.lr, o.clip, o.weight_decay) == ("sgd", 30.0, 0.25, 1.2e-6)
    assert (o.schedule, o.ar, o.tar, o.asgd, o.nonmono) == ("constant", 2.0, 1.0, "nt", 5)
    assert (t.bptt, t.variable_bptt, t.batch_size, t.epochs) == (70, True, 40, 500)
    wt2 = config_of("--preset", "awd-wt2")
    assert wt2.data.corpus == "wikitext2" and wt2.model.dropout_input == 0.65
    assert (wt2.train.batch_size, wt2.train.epochs) == (80, 750)
    assert wt2.model.dropout_hidden == 0.3 and wt2.optim.asgd == "nt"
    assert wt2.model.layer_sizes() == [1150, 1150, 400] and wt2.model.embed_size == 400


def test_awd_flags_reach_the_config():
    config = config_of(
        "--preset", "awd-ptb", "--weight-drop", "0.2", "--dropout-input", "0.1",
        "--dropout-hidden", "0", "--dropout-output", "0.05", "--dropout-embed", "0",
        "--ar", "0.5", "--tar", "0", "--asgd", "off", "--nonmono", "3",
    )  # fmt: skip
    m, o = config.model, config.optim
    assert (m.weight_drop, m.dropout_input, m.dropout_hidden) == (0.2, 0.1, 0.0)
    assert (m.dropout_output, m.dropout_embed) == (0.05, 0.0)
    assert (o.ar, o.tar, o.asgd, o.nonmono) == (0.5, 0.0, "off", 3)
    with pytest.raises(ConfigError, match="--asgd nt averages SGD"):
        config_of("--preset", "awd-ptb", "--optimizer", "adam")
    with pytest.raises(ConfigError, match="--weight-drop must be in"):
        config_of("--preset", "awd-ptb", "--weight-drop", "1.5")
