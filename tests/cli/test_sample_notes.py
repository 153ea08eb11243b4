"""``rnnlab sample``'s note on stderr when greedy or beam output collapsed, and
``--repetition-penalty``: on the weakly trained run stored in ``tests/fixtures/run-v0`` (read
only), whose greedy and beam output loops on ``"te "``."""

import json
from pathlib import Path

import pytest

from rnnlab.cli.inference import _degenerate_note
from rnnlab.generation.repetition import find_degeneration
from rnnlab.generation.sampling import SamplingConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUN = FIXTURES / "run-v0"


def pinned(key):
    return json.loads((FIXTURES / "run-v0-outputs.json").read_text(encoding="utf-8"))[key]


def notes(err):
    return [line for line in err.splitlines() if line.startswith("rnnlab: note:")]


def test_beam_loop_gets_one_note_and_the_text_is_unchanged(run_cli):
    code, out, err = run_cli(
        "sample", RUN, "--prime", "gates", "--length", 40, "--beam", 3, "--json"
    )
    assert code == 0
    assert json.loads(out) == pinned("beam")  # "gates te te te ..." as stored, on stdout
    assert len(err.strip().splitlines()) == 1 and len(notes(err)) == 1
    note = notes(err)[0]
    assert '"te " repeated 13 times' in note and "Beam search" in note
    for fix in ("--temperature 0.8", "--top-p", "--repetition-penalty 2", "training longer"):
        assert fix in note


def test_greedy_whitespace_or_loop_note_and_plain_text_output(run_cli):
    code, out, err = run_cli("sample", RUN, "--length", 60, "--temperature", 0)
    assert code == 0 and out.startswith("he te te te") and "rnnlab" not in out
    (note,) = notes(err)
    assert "Greedy decoding" in note and "most likely" in note and "loop" in note


def test_good_samples_get_no_note(run_cli):
    args = ["--prime", "The ", "--length", 120, "--temperature", 0.9, "--top-k", 20]
    code, out, err = run_cli("sample", RUN, *args, "--count", 2, "--seed", 4, "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 and all(r["text"].startswith("The ") for r in rows)
    assert err == ""


def test_repetition_penalty_changes_greedy_output_and_the_note_follows(run_cli):
    code, plain, _ = run_cli("sample", RUN, "--length", 60, "--temperature", 0, "--json")
    args = ["--length", 60, "--temperature", 0, "--repetition-penalty", 2, "--json"]
    code, out, err = run_cli("sample", RUN, *args)
    text = json.loads(out)[0]["text"]
    assert code == 0 and text != json.loads(plain)[0]["text"]
    assert text.startswith("he tanre is to")  # the penalty lowered "t", "e" and " " once written
    if find_degeneration(text) is not None:  # a weak model may loop again, more widely
        (note,) = notes(err)
        assert "a stronger --repetition-penalty than 2" in note
    code, out, _ = run_cli("sample", RUN, *args, "--repetition-window", 16, "--beam", 2)
    assert code == 0 and json.loads(out)[0]["text"] != json.loads(plain)[0]["text"]


def test_repetition_penalty_one_is_byte_identical(run_cli):
    base = ["sample", RUN, "--prime", "gates", "--length", 40, "--beam", 3, "--json"]
    _, out, _ = run_cli(*base, "--repetition-penalty", 1, "--repetition-window", 4)
    assert json.loads(out) == pinned("beam")


@pytest.mark.parametrize(
    "args,mention",
    [
        (["--repetition-penalty", "0.5"], "repetition penalty must be a finite number >= 1"),
        (["--repetition-penalty", "nan"], "got nan"),
        (["--repetition-penalty", "inf"], "got inf"),
        (["--repetition-penalty", "x"], "--repetition-penalty"),
        (["--repetition-window", "0"], "repetition window"),
    ],
)
@pytest.mark.parametrize("command", ["sample", "poem"])
def test_bad_repetition_settings_are_one_line_errors(run_cli, command, args, mention):
    code, out, err = run_cli(command, RUN, *args)
    lines = err.strip().splitlines()
    assert code != 0 and out == "" and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error:") and mention in lines[0]


def test_note_wording_for_samples():
    loop, fine = find_degeneration("ab" + " x" * 20), None
    note = _degenerate_note([fine, loop, loop], SamplingConfig(temperature=0.5), None)
    assert note.startswith("rnnlab: note: 2 of 3 generated texts collapsed; the first is a loop")
    assert "Sampling at temperature 0.5" in note and "--temperature 1" in note
    assert _degenerate_note([fine, fine], SamplingConfig(temperature=0), 2) is None
    greedy = _degenerate_note([loop], SamplingConfig(top_k=1), None)
    assert "Greedy decoding" in greedy and "--temperature 0.8" in greedy
