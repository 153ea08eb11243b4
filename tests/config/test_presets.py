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


@pytest.mark.parametrize("name,minutes", [("ptb-fast", 6.5), ("ptb-hour", 60.0)])
def test_budget_presets_anneal_over_their_budget(name, minutes):
    config = config_of("--preset", name)
    assert config.train.max_minutes == minutes and config.optim.schedule == "cosine"
    assert config.model.head == "adaptive" and config.data.corpus == "ptb"
    # the budget is a flag like any other: the schedule follows it
    assert config_of("--preset", name, "--max-minutes", "3").train.max_minutes == 3
    assert config.model.tie_weights == (name == "ptb-hour")


def test_flags_override_the_preset_and_unknown_presets_are_refused():
    assert config_of("--preset", "ptb-small", "--hidden", "64").model.hidden_size == 64
    with pytest.raises(ConfigError, match="unknown preset"):
        config_of("--preset", "no-such-preset")
