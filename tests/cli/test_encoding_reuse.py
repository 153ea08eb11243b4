"""A run records the encoding its text was read with; ``eval --text``, ``score`` and
``train --resume`` reuse it, an explicit ``--encoding`` overrides it, and a file that fails under
it is detected with a one-line notice. Old runs (``tests/fixtures/run-v0``) keep working.

Tiny models, two or four steps, one thread.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from rnnlab.evaluation.run import recorded_encoding
from rnnlab.runs import checkpoint as ck

STORY = (
    "从前有一座山，山里有一座庙，庙里有个老和尚在给小和尚讲故事。"
    "老和尚说：从前有一座山，山上住着一位老猎人，他每天清晨都带着猎狗进山。"
    "有一年冬天，大雪封住了山路，猎人在山洞里遇见了一只受伤的小鹿。"
    "他没有伤害它，而是把自己的干粮分给它，还用布条为它包扎伤口。"
    "春天来临的时候，小鹿的伤好了，它在洞口回头望了猎人很久才跑进树林。"
    "后来每逢猎人迷路，林中总会出现一只鹿，领着他走回熟悉的小路。\n"
)
SHORT = "猎人在山洞里遇见了小鹿，还为它包扎伤口"  # too short to detect on its own
TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample", "--threads", "1", "--device", "cpu"]
RUN_V0 = Path(__file__).parents[1] / "fixtures" / "run-v0"


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rnnlab.data.encodings"]


def _train(run_cli, out: Path, *args: object) -> None:
    code, _, err = run_cli("train", *args, "--max-steps", 2, *TINY, *QUIET, "--out", out)
    assert code == 0, err


def _data_section(run_dir: Path, name: str = ck.LAST) -> dict:
    return ck.load_checkpoint(run_dir / name).meta["run"]["data"]


@pytest.fixture(scope="module")
def gbk_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gbk")
    (d / "story.txt").write_bytes((STORY * 6).encode("gbk"))
    (d / "short.txt").write_bytes(SHORT.encode("gbk"))
    return d


@pytest.fixture(scope="module")
def gbk_run(gbk_files, tmp_path_factory) -> Path:
    """A run trained on the GBK story (read-only for the tests that share it)."""
    from rnnlab.cli import main

    out = tmp_path_factory.mktemp("runs") / "gbk"
    assert main(["train", "--text", str(gbk_files / "story.txt"), "--max-steps", "2", *TINY,
                 *QUIET, "--out", str(out)]) == 0  # fmt: skip
    return out


def test_train_detects_the_encoding_and_records_it(gbk_files, tmp_path, run_cli, caplog) -> None:
    out = tmp_path / "r"
    with caplog.at_level(logging.WARNING):
        _train(run_cli, out, "--text", gbk_files / "story.txt")
    path = (gbk_files / "story.txt").absolute()
    assert _notices(caplog) == [
        f"{path} is not UTF-8; reading it as gb18030 (detected; give --encoding to override)"
    ]
    assert json.loads((out / "run.json").read_text())["data"]["encoding"] == "gb18030"
    assert _data_section(out)["encoding"] == "gb18030"


def test_an_explicit_encoding_is_recorded_as_given(gbk_files, tmp_path, run_cli, caplog) -> None:
    out = tmp_path / "r"
    with caplog.at_level(logging.WARNING):
        _train(run_cli, out, "--text", gbk_files / "story.txt", "--encoding", "gbk")
    assert _notices(caplog) == []
    assert json.loads((out / "run.json").read_text())["data"]["encoding"] == "gbk"


def test_eval_reads_another_file_in_the_recorded_encoding(gbk_run, gbk_files, run_cli) -> None:
    args = ("eval", gbk_run, "--text", gbk_files / "short.txt", "--split", "train", "--json")
    code, out, err = run_cli(*args)
    assert code == 0, err
    code, given, err = run_cli(*args, "--encoding", "gb18030")
    assert code == 0, err
    assert json.loads(out) == json.loads(given)
    code, _, err = run_cli(*args, "--encoding", "utf-8")  # given: honoured exactly
    assert code != 0 and err.startswith("rnnlab: error:") and "gb18030" in err


def test_eval_on_the_runs_own_text_reads_it_as_recorded(gbk_run, run_cli, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        code, out, err = run_cli("eval", gbk_run, "--json")
    assert code == 0, err
    assert json.loads(out)["tokens"] > 0 and _notices(caplog) == []


def test_score_reads_a_file_in_the_recorded_encoding(gbk_run, gbk_files, run_cli) -> None:
    code, out, err = run_cli("score", gbk_run, "--text", gbk_files / "short.txt", "--json")
    assert code == 0, err
    assert [t["token"] for t in json.loads(out)["tokens"]] == list(SHORT)
    code, _, err = run_cli("score", gbk_run, "--text", gbk_files / "short.txt", "--encoding", "x")
    assert code != 0 and "--encoding" in err


def test_score_keeps_utf8_typed_text_utf8(gbk_run, run_cli, monkeypatch, caplog) -> None:
    typed = "猎人遇见了小鹿\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(typed.encode())))
    with caplog.at_level(logging.WARNING):
        code, out, err = run_cli("score", gbk_run, "-", "--json")
    assert code == 0, err
    assert "".join(t["token"] for t in json.loads(out)["tokens"]) == typed
    assert _notices(caplog) == [
        "standard input is UTF-8, not the run's gb18030; reading it as utf-8 "
        "(valid UTF-8; give --encoding to override)"
    ]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(SHORT.encode("gbk"))))
    code, out, err = run_cli("score", gbk_run, "-", "--json")
    assert code == 0, err
    assert "".join(t["token"] for t in json.loads(out)["tokens"]) == SHORT


def test_resume_reads_the_text_as_recorded(gbk_files, tmp_path, run_cli, caplog) -> None:
    out = tmp_path / "r"
    _train(run_cli, out, "--text", gbk_files / "story.txt")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, _, err = run_cli("train", "--resume", out, "--max-steps", 4, *QUIET)
    assert code == 0, err
    assert _notices(caplog) == []
    assert ck.load_checkpoint(out / ck.LAST).meta["progress"]["step"] == 4
    assert _data_section(out)["encoding"] == "gb18030"


def test_resume_detects_a_file_that_no_longer_reads_as_recorded(
    gbk_files, tmp_path, run_cli, caplog
) -> None:
    text = tmp_path / "story.txt"
    text.write_bytes((gbk_files / "story.txt").read_bytes())
    out = tmp_path / "r"
    _train(run_cli, out, "--text", text)
    text.write_bytes((STORY * 6).encode("utf-16"))  # the same text, saved again as UTF-16
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, _, err = run_cli("train", "--resume", out, "--max-steps", 4, *QUIET)
    assert code == 0, err
    assert _notices(caplog) == [
        f"{text} is not in the run's encoding gb18030; reading it as utf-16 "
        "(byte-order mark; give --encoding to override)"
    ]
    assert _data_section(out)["encoding"] == "utf-16"


def test_resume_takes_an_explicit_encoding(gbk_files, tmp_path, run_cli) -> None:
    out = tmp_path / "r"
    _train(run_cli, out, "--text", gbk_files / "story.txt")
    code, _, err = run_cli("train", "--resume", out, "--max-steps", 4, "--encoding", "gbk", *QUIET)
    assert code == 0, err
    assert _data_section(out)["encoding"] == "gbk"


def test_an_old_run_reads_other_encodings_by_detection(tmp_path, run_cli, caplog) -> None:
    run = tmp_path / "run-v0"
    shutil.copytree(RUN_V0, run)
    assert json.loads((run / "run.json").read_text())["data"]["encoding"] == "utf-8"
    words = "The forget gate erases what the cell held; the input gate writes — “new” state. "
    text = tmp_path / "gates.txt"
    text.write_bytes((words * 12).encode("cp1252"))
    with caplog.at_level(logging.WARNING):
        code, out, err = run_cli("eval", run, "--text", text, "--allow-unk", "--json")
    assert code == 0, err
    assert _notices(caplog) == [
        f"{text} is not UTF-8; reading it as cp1252 (detected; give --encoding to override)"
    ]


def test_a_checkpoint_without_an_encoding_means_auto() -> None:
    assert recorded_encoding(ck.Checkpoint(meta={"run": {"data": {"text": "x.txt"}}})) == "auto"
    assert recorded_encoding(ck.Checkpoint(meta={})) == "auto"
    meta = {"run": {"data": {"encoding": "big5"}}}
    assert recorded_encoding(ck.Checkpoint(meta=meta)) == "big5"


def test_config_shows_auto_by_default(run_cli) -> None:
    code, out, _ = run_cli("config", "--text", "notes.txt", "--json")
    assert code == 0 and json.loads(out)["data"]["encoding"] == "auto"
