"""A new run's directory: the default ``runs/<name>-<time>`` and the refusal of one that holds
a run."""

import time
from pathlib import Path

import pytest

from rnnlab.config.resolve import resolve_config
from rnnlab.errors import ConfigError
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.directory import check_new_run_dir, default_run_dir, new_run_dir, run_name

WHEN = time.struct_time((2024, 3, 5, 7, 8, 9, 1, 65, -1))


def test_the_name_is_the_preset():
    assert run_name(resolve_config("quick")) == "quick"
    assert run_name(resolve_config(None, {"data": {"corpus": "jsb"}})) == "music-chung2014"


def test_a_run_is_named_after_its_text_file_else_its_preset_or_corpus():
    assert run_name(resolve_config("ptb-small", {"data": {"text": "/a/b.txt"}})) == "b"
    assert run_name(resolve_config("ptb-small")) == "ptb-small"
    assert run_name(resolve_config(None, {"data": {"text": "/some/where/poems.v2.txt"}})) == (
        "poems.v2"
    )
    assert run_name(resolve_config(None, {"data": {"corpus": "ptb"}})) == "ptb"


def test_default_run_dir_is_stamped_under_runs():
    config = resolve_config(None, {"data": {"text": "/a/fox.txt"}})
    assert default_run_dir(config, WHEN) == Path("runs") / "fox-20240305-070809"


def test_default_run_dir_is_stamped_now():
    before = time.strftime("%Y%m%d-%H%M%S")
    got = default_run_dir(resolve_config("quick"))
    after = time.strftime("%Y%m%d-%H%M%S")
    assert got.parent == Path("runs") and got.name.startswith("quick-")
    assert before <= got.name.removeprefix("quick-") <= after


def test_new_run_dir_takes_out_when_given():
    config = resolve_config("quick")
    assert new_run_dir(config, "elsewhere/r1") == Path("elsewhere/r1")
    assert new_run_dir(config, None).parent == Path("runs")
    assert new_run_dir(config, "").parent == Path("runs")  # an empty --out: the default


def test_a_directory_without_a_run_is_accepted(tmp_path):
    check_new_run_dir(tmp_path / "missing")
    check_new_run_dir(tmp_path)  # exists but holds no run.json
    (tmp_path / ck.LAST).write_bytes(b"")  # a checkpoint alone is no run
    check_new_run_dir(tmp_path)


def test_a_directory_holding_a_run_is_refused_in_one_line(tmp_path):
    (tmp_path / ck.RUN_CONFIG).write_text("{}")
    with pytest.raises(ConfigError) as e:
        check_new_run_dir(tmp_path)
    assert str(e.value) == (
        f"{tmp_path} already holds a run; continue it with --resume {tmp_path} "
        "or pick another --out"
    )
