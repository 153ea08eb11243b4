"""``rnnlab poem --keywords``: every poem holds the keywords, the text output notes them, and a
keyword list the model cannot meet is one line of error (on a small character model of a
Chinese poem)."""

import json

import pytest

from rnnlab.cli import main
from rnnlab.generation.poetry import check_form, check_rhyme, check_tones, split_lines

CHINESE = "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n" * 30
SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]


@pytest.fixture(scope="module")
def zh_run(tmp_path_factory):
    """A small character model of Chinese poem text."""
    d = tmp_path_factory.mktemp("zh")
    (d / "poem.txt").write_text(CHINESE, encoding="utf-8")
    out = d / "run"
    args = ["train", "--text", str(d / "poem.txt"), "--max-steps", "10", *SMALL]
    assert main([*args, "--no-progress", "--no-sample", "--out", str(out)]) == 0
    return out


def test_every_poem_holds_the_keywords(zh_run, run_cli):
    code, out, err = run_cli(
        "poem", zh_run, "--keywords", "月,霜", "--count", 20, "--rhyme", "--tones", "--seed", 1,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    poems = json.loads(out)
    assert len(poems) == 20
    for p in poems:
        assert check_form(p["text"], 5, 4) and check_rhyme(p["text"]) and check_tones(p["text"])
        lines = split_lines(p["text"])
        assert "月" in lines[0] and "霜" in lines[2], p["text"]
        assert p["keywords"] == "月霜" and "keywords" in p["satisfies"]
        assert p["requested"]["keywords"] == "月霜"


@pytest.mark.parametrize("options", [["--beam", "3"], ["--candidates", "3"]])
def test_beam_and_candidates_hold_the_keywords(zh_run, run_cli, options):
    code, out, err = run_cli(
        "poem", zh_run, "--keywords", "光、乡 思", "--count", 3, "--seed", 2, *options, "--json"
    )
    assert code == 0, err
    for p in json.loads(out):
        lines = split_lines(p["text"])
        assert check_form(p["text"], 5, 4)
        assert "光" in lines[0] and "乡" in lines[1] and "思" in lines[3], p["text"]


def test_text_output_notes_the_keywords(zh_run, run_cli):
    code, out, err = run_cli("poem", zh_run, "--keywords", "霜，月", "--acrostic", "床疑举低")
    assert code == 0, err
    rows = out.splitlines()
    assert check_form("\n".join(rows[:4]), 5, 4, acrostic="床疑举低")
    assert rows[4].strip().startswith("(form, ") and "keywords 霜月" in rows[4]


@pytest.mark.parametrize(
    "keywords,mention",
    [
        ("雪", "'雪' is not in the model's vocabulary"),
        ("明月", "split it: --keywords 明,月"),
        ("月,月", "given twice"),
        ("月,x", "not a Chinese character"),
        ("床,前,明,月,光", "5 keywords for a poem of 4 lines"),
        (",", "at least one"),
    ],
)
def test_keywords_that_cannot_be_met_are_one_line_errors(zh_run, run_cli, keywords, mention):
    code, out, err = run_cli("poem", zh_run, "--keywords", keywords)
    assert code != 0 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error:"), err
    assert mention in lines[0]


def test_given_characters_and_keywords(zh_run, run_cli):
    start = "床前明月光疑是地上霜举头望明月低头思故乡"
    code, out, err = run_cli("poem", zh_run, "--start", start, "--keywords", "霜", "--json")
    assert code == 0, err  # given already, so placed
    assert json.loads(out)[0]["keywords"] == "霜"
    code, out, err = run_cli("poem", zh_run, "--start", start[:-1], "--keywords", "乡", "--json")
    assert code == 0, err  # the one free slot takes it
    assert split_lines(json.loads(out)[0]["text"])[3] == "低头思故乡"
    code, _, err = run_cli(
        "poem", zh_run, "--first-line", "床前明月光", "--keywords", "思,故,乡,头"
    )
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "cannot all be placed" in lines[0], err
