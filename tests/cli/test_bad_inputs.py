"""Hostile and odd input on the command line, beyond those of test_cli.py and test_corpora.py.

Each case: the exit code, one line on stderr that says what to do, nothing written where the run
is refused. ``benchmarks/bad_inputs.py`` runs the whole catalogue and writes docs/bad-inputs.md.
"""

import pytest
import torch

from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model

SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample", "--threads", "1"]
HUGE = 5 * 2**20  # 5 MiB


def one_line_error(code, err, *mentions, exit_code=2):
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("rnnlab: error:")]
    assert len(lines) == 1, err
    for m in mentions:
        assert m in lines[0], lines[0]
    return lines[0]


def train(run_cli, out, *args):
    return run_cli("train", "--max-steps", 2, *SMALL, *QUIET, "--out", out, *args)


@pytest.fixture(scope="module")
def english(tmp_path_factory, make_fox_file):
    return make_fox_file(tmp_path_factory.mktemp("text"), "english.txt")


# ------------------------------------------------------------------------------ odd text files


@pytest.mark.parametrize("level", ["char", "word"])
def test_five_megabytes_on_one_line(tmp_path, run_cli, fox_text, level):
    words = fox_text().replace("\n", " ").encode()
    path = tmp_path / "one-line.txt"
    path.write_bytes((words * (HUGE // len(words) + 1))[:HUGE])
    code, _, err = train(run_cli, tmp_path / "r", "--text", path, "--level", level)
    assert code == 0, err
    model, vocab, ckpt = load_model(tmp_path / "r")
    assert ckpt.meta["level"] == level and len(vocab) == model.config.vocab_size
    if level == "word":
        assert "<eos>" in vocab.itos and "fox" in vocab.itos


def test_mixed_encodings_name_the_first_bad_byte(tmp_path, run_cli, fox_text):
    good = fox_text()[:2000].encode()
    path = tmp_path / "mixed.txt"
    path.write_bytes(good + "crème".encode("latin-1") + good)
    code, _, err = train(run_cli, tmp_path / "r", "--text", path)
    one_line_error(code, err, "not valid utf-8", f"byte offset {len(good) + 2}", "--encoding")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "content,level,symbol",
    [
        (b"a" * 5000, "char", "'a'"),
        (b"\n" * 5000, "char", "'\\n'"),
        (b"  \n" * 900, "word", "<eos>"),
    ],
)
def test_a_text_of_one_symbol_is_refused(tmp_path, run_cli, content, level, symbol):
    path = tmp_path / "one.txt"
    path.write_bytes(content)
    code, _, err = train(run_cli, tmp_path / "r", "--text", path, "--level", level)
    one_line_error(code, err, "one symbol", symbol, "more varied text")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- absurd settings


@pytest.mark.parametrize(
    "args,mentions",
    [
        (["--hidden", "10000000"], ["would need at least", "TiB", "--hidden"]),
        (["--embed", "1000000000000"], ["would need at least", "TiB", "parameters"]),
        (["--layers", "1000000", "--hidden", "4096"], ["would need at least", "--layers"]),
        (["--threads", "100000"], ["threads", "CPUs"]),
        (["--seed", "-1"], ["seed"]),
        (["--seed", str(2**64)], ["seed"]),
        (["--clip", "nan"], ["clip"]),
    ],
)
def test_absurd_settings_are_refused_before_anything_is_built(
    english, tmp_path, run_cli, args, mentions
):
    code, _, err = train(run_cli, tmp_path / "r", "--text", english, *args)
    one_line_error(code, err, *mentions)
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file(english, tmp_path, run_cli):
    out = tmp_path / "file"
    out.write_text("mine")
    code, _, err = train(run_cli, out, "--text", english)
    one_line_error(code, err, "is a file", "--out")
    assert out.read_text() == "mine"


def test_a_huge_learning_rate_stops_and_keeps_finite_checkpoints(english, tmp_path, run_cli):
    out = tmp_path / "r"
    args = ["--text", english, "--lr", "1e30", "--optimizer", "sgd", "--clip", "0"]
    code, _, err = train(run_cli, out, *args, "--save-every", 1, "--max-steps", 50)
    line = one_line_error(code, err, "diverged", "lower --lr", exit_code=3)
    for name in ("last.safetensors", "best.safetensors"):
        if (out / name).exists():
            assert str(out / "last.safetensors") in line
            kept = ck.load_checkpoint(out / name)
            assert all(torch.isfinite(t).all() for t in kept.group("model").values())


# ------------------------------------------------------------------------ hostile checkpoints


def test_a_checkpoint_that_claims_a_huge_model_is_refused_without_building_it(
    english, tmp_path, run_cli
):
    run = tmp_path / "r"
    assert train(run_cli, run, "--text", english)[0] == 0
    ckpt = ck.load_checkpoint(run / "best.safetensors")
    ckpt.meta["model"]["hidden_size"] = 10_000_000  # 16 TB of LSTM weights, if built
    bad = tmp_path / "bad"
    ck.save_checkpoint(bad / "best.safetensors", ckpt)
    for command in (["eval", bad], ["sample", bad, "--length", 5]):
        code, _, err = run_cli(*command)
        one_line_error(code, err, "shape", "inconsistent")


def test_greedy_sampling_of_symbols_never_seen(english, tmp_path, run_cli):
    run = tmp_path / "r"
    assert train(run_cli, run, "--text", english)[0] == 0
    args = ["sample", run, "--prime", "😀Ω", "--temperature", 0, "--length", 10]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert out.startswith("😀Ω") and len(out.rstrip("\n")) > 2
    assert run_cli(*args)[1] == out  # greedy: the same every time
