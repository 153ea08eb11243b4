"""One config path: strict config classes, presets as data, one resolution function shared by
train, compare and --resume, ``rnnlab train --config FILE`` and ``rnnlab config``."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnlab.cli import build_grid_config, build_run_config, compare_settings, make_parser
from rnnlab.config.config_file import parse_toml, read_config_file, to_toml
from rnnlab.config.presets import PRESETS, Preset
from rnnlab.config.resolve import choose_preset, resolve_config
from rnnlab.config.run import SECTIONS, RunConfig, section_keys
from rnnlab.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample"]


def one_line_error(code, err, *mentions):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error:"), err
    for m in mentions:
        assert m in lines[0], lines[0]
    return lines[0]


def train_config(*argv):
    return build_run_config(make_parser().parse_args(["train", *map(str, argv)]))


# --------------------------------------------------------------------- strict config classes


@pytest.mark.parametrize("section", list(SECTIONS))
def test_an_unknown_key_in_any_section_is_refused_naming_it_and_the_known_ones(section):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({section: {"hiden_size": 3}})
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"unknown key 'hiden_size' in [{section}]; known: ")
    assert message.endswith(", ".join(section_keys(section)))


def test_the_error_names_a_model_key_as_the_brief_shows():
    with pytest.raises(ConfigError, match=r"unknown key 'hiden_size' in \[model\]; known: .*cell"):
        RunConfig.from_dict({"model": {"hiden_size": 3}})


def test_an_unknown_section_is_refused():
    with pytest.raises(ConfigError, match="unknown section 'optimizer'; known: data, model"):
        RunConfig.from_dict({"optimizer": {"lr": 1.0}})


@pytest.mark.parametrize(
    "d,mention",
    [
        ({"model": {"hidden_size": "many"}}, "[model] hidden_size must be an integer"),
        ({"model": {"hidden_size": 1.5}}, "[model] hidden_size must be an integer"),
        ({"model": {"tie_weights": 1}}, "[model] tie_weights must be true or false"),
        ({"optim": {"lr": "fast"}}, "[optim] lr must be a number"),
        ({"data": {"min_count": "2"}}, "[data] min_count must be an integer"),
        ({"data": {"encoding": None}}, "[data] encoding must be a string"),
        ({"data": {"corpus_options": [1]}}, "[data] corpus_options must be a table"),
        ({"train": {"seed": True}}, "[train] seed must be an integer"),
        ({"model": "big"}, "[model] must be a table"),
        ({"preset": 3}, "preset must be a name"),
    ],
)
def test_values_of_the_wrong_type_are_one_line_errors(d, mention):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    assert mention in str(e.value) and "\n" not in str(e.value)


def test_integers_are_taken_where_numbers_are_declared():
    config = RunConfig.from_dict(
        {"optim": {"lr": 20}, "model": {"head": "adaptive", "cutoffs": [5, 9]}}
    )
    assert config.optim.lr == 20.0 and isinstance(config.optim.lr, float)
    assert config.model.cutoffs == (5, 9)


def with_new_defaults(saved: dict) -> dict:
    """A run.json of run-v0 with the keys added since at their defaults: init_from, AWD-LSTM's
    regularisers and NT-ASGD (all off), and the last layer's own width (0: the others')."""
    awd_model = dict.fromkeys(
        ("dropout_input", "dropout_hidden", "dropout_output", "dropout_embed", "weight_drop"), 0.0
    )
    awd_optim = {"ar": 0.0, "tar": 0.0, "asgd": "off", "nonmono": 5}
    return dict(
        saved,
        train=dict(saved["train"], init_from=None),
        model=dict(saved["model"], **awd_model, last_hidden_size=0),
        optim=dict(saved["optim"], **awd_optim),
    )


def test_a_run_json_written_before_today_still_loads():
    saved = json.loads((FIXTURES / "run-v0" / "run.json").read_text())
    config = RunConfig.from_dict(saved)
    # the keys added after it was written take their defaults
    assert config.to_dict() == with_new_defaults(saved)
    # no key was ever removed from the config classes; keys added since (the adaptive head,
    # weight noise, eval_every, threads) may be missing from an older run.json
    for section, key in [
        ("model", "head"),
        ("model", "cutoffs"),
        ("model", "div_value"),
        ("optim", "weight_noise"),
        ("train", "eval_every"),
        ("train", "threads"),
    ]:
        del saved[section][key]
    older = RunConfig.from_dict(saved)
    assert older.model.head == "softmax" and older.optim.weight_noise == 0.0
    assert older.train.threads is None and older.train.eval_every is None


def test_a_run_json_with_an_unknown_key_is_refused_on_resume(tmp_path, run_cli):
    run = shutil.copytree(FIXTURES / "run-v0", tmp_path / "run")
    saved = json.loads((run / "run.json").read_text())
    saved["train"]["max_step"] = 5
    (run / "run.json").write_text(json.dumps(saved))
    code, _, err = run_cli("train", "--resume", run, *QUIET)
    one_line_error(code, err, "unknown key 'max_step' in [train]")


# ------------------------------------------------------------------------ presets as data


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves_through_the_one_function(name):
    config = resolve_config(name)
    assert config.preset == name
    assert config == train_config("--preset", name)
    for section, values in PRESETS[name].overrides.items():
        for key, value in values.items():
            got = getattr(getattr(config, section), key)
            assert got == (tuple(value) if isinstance(value, list) else value), (section, key)


def test_a_preset_with_a_bad_key_fails_with_one_line(monkeypatch):
    bad = Preset("bad", "a typo", "a test", {"model": {"hiden_size": 64}})
    monkeypatch.setitem(PRESETS, "bad", bad)
    with pytest.raises(ConfigError) as e:
        resolve_config("bad")
    assert str(e.value).startswith("preset 'bad': unknown key 'hiden_size' in [model]; known: ")
    monkeypatch.setitem(PRESETS, "bad", Preset("bad", "x", "y", {"trian": {"epochs": 2}}))
    with pytest.raises(ConfigError, match="preset 'bad': unknown section 'trian'"):
        resolve_config("bad")


# -------------------------------------------------------------------- the resolution function


def test_the_preset_is_chosen_in_one_place():
    assert resolve_config().preset == "quick"
    assert resolve_config(default_preset=None).preset is None
    assert resolve_config(overrides={"data": {"corpus": "jsb"}}).preset == "music-chung2014"
    assert resolve_config(overrides={"data": {"corpus": "ptb"}}).preset is None
    # a text file of the user's own starts from the model that fits it (issue 15), not from
    # RunConfig's PTB-word defaults; compare (default_preset=None) keeps its own defaults
    text = resolve_config(overrides={"data": {"text": "/x.txt"}})
    assert text.preset == "quick" and text.data.level == "char" and text.data.corpus is None
    assert text.optim.optimizer == "adam" and text.model.num_layers == 1
    words = resolve_config(overrides={"data": {"text": "/x.txt", "level": "word"}})
    assert words.preset == "words" and words.data.max_vocab == 10_000
    assert words.model.head == "adaptive" and words.data.level == "word"
    assert resolve_config(overrides={"data": {"text": "/x"}}, default_preset=None).preset is None
    assert choose_preset("ptb-small", {"preset": "quick"}, {"data": {"corpus": "jsb"}}) == (
        "ptb-small"
    )
    assert choose_preset(None, {"preset": "quick"}, {"data": {"corpus": "jsb"}}) == "quick"
    assert choose_preset(None, {"preset": None}, None) is None  # a run.json's null: none
    assert choose_preset(None, {"data": {"corpus": "jsb"}}, None) == "music-chung2014"
    with pytest.raises(ConfigError, match="unknown corpus"):
        choose_preset(None, None, {"data": {"corpus": "nope"}})


def test_layers_apply_in_order_and_a_source_replaces_the_one_below():
    file = {"preset": "quick", "model": {"hidden_size": 32}, "train": {"epochs": 2}}
    config = resolve_config(None, {"train": {"epochs": 5}}, file=file)
    assert config.preset == "quick" and config.model.hidden_size == 32
    assert config.train.epochs == 5 and config.model.embed_size == 64  # quick's
    moved = resolve_config("quick", {"data": {"text": "/t.txt"}})
    assert moved.data.text == "/t.txt" and moved.data.max_chars is None
    merged = resolve_config(
        "tang-quatrains", {"data": {"corpus_options": {"start_frame": True}}}
    ).data.corpus_options
    assert merged == {"script": "simplified", "start_frame": True}


def test_resume_lays_its_flags_over_the_saved_config_without_a_preset():
    saved = resolve_config("quick", {"model": {"hidden_size": 48}})
    resumed = resolve_config(None, {"train": {"max_steps": 9}}, base=saved, default_preset=None)
    assert resumed.model.hidden_size == 48 and resumed.preset == "quick"
    assert resumed.train.max_steps == 9 and saved.train.max_steps is None  # a new config
    with pytest.raises(ConfigError, match="max-steps must be a positive integer"):
        resolve_config(None, {"train": {"max_steps": 0}}, base=saved, default_preset=None)


def test_flags_are_checked_as_a_layer_too():
    with pytest.raises(ConfigError, match=r"unknown key 'hidden' in \[model\]"):
        resolve_config(overrides={"model": {"hidden": 3}})


def test_compare_settings_come_from_a_resolved_config():
    def settings(*argv):
        return compare_settings(make_parser().parse_args(["compare", *argv, "--out", "o"]))

    music = settings("--corpus", "jsb")
    assert music["corpus"] == "jsb" and music["hidden"] == 36 and music["embed"] == "0"
    assert music["bptt"] == (200,) and music["lr"] == (1e-3,) and music["optimizer"] == "rmsprop"
    assert music["weight_noise"] == 0.075 and music["patience"] == 20 and music["epochs"] == 2000
    plain = settings("--text", "x.txt")
    assert plain["corpus"] is None and plain["hidden"] == 128 and plain["embed"] == "64"
    assert plain["epochs"] is None and plain["schedule"] == "constant"
    assert settings("--preset", "ptb-small", "--text", "x.txt")["corpus"] is None
    assert settings("--preset", "ptb-small")["corpus"] == "ptb"
    assert settings("--epochs", "3")["epochs"] == 3


def test_compare_does_not_take_the_presets_tying():
    args = make_parser().parse_args(
        ["compare", "--preset", "ptb-hour", "--hidden", "64", "--out", "o"]
    )
    grid = build_grid_config(args)
    assert grid.model.hidden_size == 64 and grid.model.embed_size == 400
    assert not grid.model.tie_weights


# ------------------------------------------------------------------- config files and CLI


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_train_config_file_with_flags_over_it(tmp_path, fox_text):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "notes.txt", fox_text(60, jugs=False))
    cfg = write(
        tmp_path / "sub" / "run.toml",
        'preset = "ptb-small"\n[data]\ntext = "notes.txt"\nlevel = "char"\n'
        "[model]\nhidden_size = 32\n[optim]\nlr = 3\n[train]\nepochs = 2\n",
    )
    config = train_config("--config", cfg, "--epochs", "4")
    assert config.preset == "ptb-small" and config.data.corpus is None  # the file's text
    assert config.data.text == str(tmp_path / "sub" / "notes.txt")  # relative to the file
    assert config.model.hidden_size == 32 and config.model.dropout == 0.0
    assert config.optim.lr == 3.0 and config.train.epochs == 4 and config.train.bptt == 20


def test_a_config_file_without_preset_chooses_as_the_flags_do(tmp_path):
    cfg = write(tmp_path / "c.toml", '[data]\ncorpus = "jsb"\n')
    assert train_config("--config", cfg).preset == "music-chung2014"
    assert train_config("--config", write(tmp_path / "d.toml", "")).preset == "quick"


def test_train_from_a_config_file_and_again_from_its_run_json(tmp_path, run_cli, fox_text):
    write(tmp_path / "notes.txt", fox_text(60, jugs=False))
    cfg = write(
        tmp_path / "small.toml",
        '[data]\ntext = "notes.txt"\n[model]\nhidden_size = 16\nembed_size = 8\nnum_layers = 1\n'
        "[train]\nbptt = 8\nbatch_size = 4\nmax_steps = 2\n",
    )
    first, again = tmp_path / "first", tmp_path / "again"
    code, _, err = run_cli("train", "--config", cfg, "--out", first, *QUIET)
    assert code == 0, err
    code, _, err = run_cli("train", "--config", first, "--out", again, *QUIET)
    assert code == 0, err
    assert (first / "run.json").read_text() == (again / "run.json").read_text()
    saved = json.loads((first / "run.json").read_text())
    assert saved["model"]["hidden_size"] == 16 and saved["train"]["max_steps"] == 2
    # a text source with no preset named starts from the quick preset (issue 15)
    assert saved["data"]["text"] == str(tmp_path / "notes.txt") and saved["preset"] == "quick"


@pytest.mark.parametrize(
    "name,text,mentions",
    [
        ("missing.toml", None, ["missing.toml", "not found"]),
        ("bad.toml", "[model\nhidden_size = 3\n", ["bad.toml", "not valid TOML"]),
        ("bad.json", '{"model": ', ["bad.json", "not valid JSON"]),
        ("list.json", "[1, 2]", ["list.json", "no table of sections"]),
        ("key.toml", "[model]\nhiden_size = 3\n", ["key.toml", "unknown key 'hiden_size'"]),
        ("top.toml", "hidden_size = 3\n", ["top.toml", "unknown section 'hidden_size'"]),
        ("type.toml", '[train]\nepochs = "two"\n', ["[train] epochs must be an integer"]),
        ("preset.toml", 'preset = "nope"\n', ["unknown preset 'nope'"]),
        ("latin.toml", b"# \xe9\n", ["not UTF-8"]),
    ],
)
@pytest.mark.parametrize("command", ["train", "config"])
def test_config_file_errors_are_one_line_exit_2(tmp_path, run_cli, command, name, text, mentions):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        write(path, text)
    out = tmp_path / "run"
    argv = [command, "--config", path, *(["--out", out, *QUIET] if command == "train" else [])]
    code, stdout, err = run_cli(*argv)
    one_line_error(code, err, *mentions)
    assert not out.exists() and stdout == ""


def test_resume_refuses_a_config_file(tmp_path, capsys, run_cli):
    run = shutil.copytree(FIXTURES / "run-v0", tmp_path / "run")
    code, _, err = run_cli("train", "--resume", run, "--config", run, *QUIET)
    one_line_error(code, err, "--resume", "cannot change --config")


def config_output(run_cli, *argv):
    code, out, err = run_cli("config", *argv)
    assert code == 0, err
    return out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--preset", "ptb-hour", "--max-minutes", "20", "--cutoffs", "100,1000"],
        ["--corpus", "jsb", "--start-frame", "--cell", "gru", "--hidden", "46"],
        ["--preset", "tang-quatrains", "--lr", "1e-05", "--seed", "7"],
        ["--text", 'some dir/ünïcode "quoted" \\ file.txt', "--level", "word"],
        *[["--preset", name] for name in PRESETS],
    ],
)
def test_config_output_fed_back_gives_the_same_config(tmp_path, run_cli, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    toml_text = config_output(run_cli, *argv)
    as_json = config_output(run_cli, *argv, "--json")
    expected = train_config(*argv)
    assert json.loads(as_json) == expected.to_dict()
    assert parse_toml(toml_text)  # it is TOML
    write(tmp_path / "c.toml", toml_text)
    write(tmp_path / "c.json", as_json)
    for name in ("c.toml", "c.json"):
        assert train_config("--config", tmp_path / name) == expected
        assert config_output(run_cli, "--config", tmp_path / name, "--json") == as_json


def test_run_json_round_trip(tmp_path, run_cli):
    run = FIXTURES / "run-v0"
    as_json = config_output(run_cli, "--config", run / "run.json", "--json")
    saved = json.loads((run / "run.json").read_text())
    # keys added after it was written take their defaults
    assert json.loads(as_json) == with_new_defaults(saved)
    assert config_output(run_cli, "--config", run, "--json") == as_json  # a run directory
    # its TOML form gives the same config again
    write(tmp_path / "again.toml", config_output(run_cli, "--config", run))
    assert config_output(run_cli, "--config", tmp_path / "again.toml", "--json") == as_json


def test_a_config_toml_cannot_write_is_refused_with_a_way_out(tmp_path, capsys, run_cli):
    # a preset's budget emptied by a JSON null: TOML has no null
    cfg = write(tmp_path / "c.json", '{"preset": "quick", "train": {"max_minutes": null}}')
    code, out, err = run_cli("config", "--config", cfg)
    one_line_error(code, err, "--json")
    assert out == ""
    assert (
        json.loads(config_output(run_cli, "--config", cfg, "--json"))["train"]["max_minutes"]
        is None
    )


def test_read_config_file_makes_data_paths_absolute(tmp_path):
    cfg = write(tmp_path / "c.toml", '[data]\ntext = "a.txt"\nvalid_text = "/v.txt"\n')
    data = read_config_file(cfg)["data"]
    assert data["text"] == str(tmp_path / "a.txt") and data["valid_text"] == "/v.txt"


def test_train_and_compare_share_the_schedule_names():
    from rnnlab.cli import train
    from rnnlab.config import run

    assert train.SCHEDULES is run.SCHEDULES


# ------------------------------------------------------------------------------ TOML writer

scalars = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)


@given(st.dictionaries(st.text(min_size=1), scalars, max_size=4), st.text(), st.floats())
def test_toml_values_read_back_exactly(options, text, number):
    config = RunConfig(preset=text)
    config.data.corpus_options = options
    config.data.encoding = text
    config.optim.lr = number  # not validated here: the writer alone
    back = parse_toml(to_toml(config))
    assert back["preset"] == text and back["data"]["encoding"] == text
    assert back["data"]["corpus_options"] == options
    lr = back["optim"]["lr"]
    assert (math.isnan(lr) and math.isnan(number)) or lr == number


@pytest.mark.parametrize(
    "kind, section",
    [("DataConfig", "data"), ("LanguageModelConfig", "model")],
)
def test_every_config_class_refuses_unknown_keys_by_name(kind, section):
    from rnnlab.data.dataset import DataConfig
    from rnnlab.models.config import LanguageModelConfig

    cls = {"DataConfig": DataConfig, "LanguageModelConfig": LanguageModelConfig}[kind]
    with pytest.raises(ConfigError) as e:
        cls.from_dict({"no_such_key": 1})
    message = str(e.value)
    assert "\n" not in message
    assert f"unknown key 'no_such_key' in [{section}]" in message
    assert all(f.name in message for f in dataclasses.fields(cls))
    with pytest.raises(ConfigError, match="must be"):
        cls.from_dict({"min_count" if section == "data" else "hidden_size": "12"})


def test_a_checkpoint_with_an_unknown_model_key_is_a_one_line_error(tmp_path):
    from rnnlab.errors import CheckpointError
    from rnnlab.runs import checkpoint as ck
    from rnnlab.runs.load import load_model

    src = FIXTURES / "run-v0" / "best.safetensors"
    ckpt = ck.load_checkpoint(src)
    ckpt.meta["model"]["hiden_size"] = 24
    ck.save_checkpoint(tmp_path / "best.safetensors", ckpt)
    with pytest.raises(CheckpointError, match="invalid description.*unknown key 'hiden_size'"):
        load_model(tmp_path)
