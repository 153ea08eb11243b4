"""``resume_config``: which flags a resumed run may change, the one-line refusal, and the saved
config with the allowed flags laid over it (no preset applied again)."""

import dataclasses

import pytest

from rnnlab.config.resolve import RESUME_FLAGS, resolve_config, resume_config
from rnnlab.errors import ConfigError

ALLOWED = (
    "(allowed: --device, --encoding, --epochs, --log-every, --max-minutes, --max-steps, "
    "--patience, --save-every, --threads)"
)


@pytest.fixture
def saved():
    return resolve_config("quick", {"model": {"hidden_size": 48}})


def test_allowed_flags_are_laid_over_the_saved_config(saved):
    resumed = resume_config(
        saved, {"train": {"max_steps": 9, "threads": 1}}, {"max_steps", "threads"}
    )
    assert resumed.train.max_steps == 9 and resumed.train.threads == 1
    assert resumed.model.hidden_size == 48 and resumed.preset == "quick"
    assert saved.train.max_steps is None  # a new config, the saved one untouched
    assert resumed == resolve_config(
        None, {"train": {"max_steps": 9, "threads": 1}}, base=saved, default_preset=None
    )


def test_nothing_given_resumes_the_saved_config_as_it_was(saved):
    assert resume_config(saved) == saved


def test_no_preset_is_applied_again():
    saved = resolve_config(None, {"data": {"text": "/x.txt"}, "model": {"hidden_size": 48}})
    assert saved.preset == "quick"  # a text file's default (issue 15)
    resumed = resume_config(saved, {"train": {"epochs": 3}}, {"epochs"})
    assert resumed.preset == "quick" and resumed.data.text == "/x.txt"
    assert resumed.model.hidden_size == 48 and resumed.train.epochs == 3


def test_every_flag_it_allows_is_a_loop_setting_or_the_encoding(saved):
    # the encoding: a text file saved again in another encoding is still the same text
    assert RESUME_FLAGS - {"encoding"} <= {f.name for f in dataclasses.fields(saved.train)}
    assert "encoding" in {f.name for f in dataclasses.fields(saved.data)}


def test_the_refusal_names_flags_sorted_then_preset_and_config(saved):
    with pytest.raises(ConfigError) as e:
        resume_config(
            saved,
            {"model": {"hidden_size": 32}},
            {"start_frame", "lr", "hidden", "max_steps"},
            preset="quick",
            file="x.toml",
        )
    assert str(e.value) == (
        "--resume continues a run with its saved settings; it cannot change --hidden, --lr, "
        f"--start-frame, --preset, --config {ALLOWED}"
    )


@pytest.mark.parametrize(
    "given,kwargs,named",
    [
        ({"cell"}, {}, "--cell"),
        ({"variable_bptt"}, {}, "--variable-bptt"),
        (set(), {"preset": "quick"}, "--preset"),
        (set(), {"file": {"train": {"epochs": 2}}}, "--config"),
    ],
)
def test_one_refused_flag(saved, given, kwargs, named):
    with pytest.raises(ConfigError, match=f"cannot change {named} \\(allowed: --device"):
        resume_config(saved, {}, given, **kwargs)


def test_refusal_comes_before_the_overrides_are_checked(saved):
    # an override that would itself be refused by the config classes: the flag refusal wins
    with pytest.raises(ConfigError, match="cannot change --hidden"):
        resume_config(saved, {"model": {"hidden_size": -1}}, {"hidden"})
