"""The ``rnnlab`` command line: every subcommand end to end, and every bad input as one line.

Most tests call :func:`rnnlab.cli.main` in-process (fast); a few run ``python -m rnnlab`` in a
subprocess to prove that no traceback reaches stderr and that exit codes are real.
"""

import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error

import pytest
import torch

from rnnlab.cli import main
from rnnlab.evaluation.text import evaluate
from rnnlab.generation.poetry import check_form, check_rhyme, check_tones
from rnnlab.generation.sampling import boundary_token
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model

CHINESE = "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n" * 30
SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample"]


def assert_one_line_error(code, err, *mentions, lines=1):
    """Non-zero exit, ``lines`` lines on stderr, the last one the error, no traceback."""
    assert code != 0
    assert "Traceback" not in err
    got = err.strip().splitlines()
    assert len(got) == lines, err
    assert got[-1].startswith("rnnlab: error:"), err
    for m in mentions:
        assert m in got[-1], got[-1]
    return got[-1]


def snapshot(directory) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def texts(tmp_path_factory, make_fox_file):
    d = tmp_path_factory.mktemp("texts")
    make_fox_file(d, "english.txt")
    (d / "chinese.txt").write_text(CHINESE, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def run(texts, tmp_path_factory):
    """One small character-level run, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("runs") / "char"
    code = main(
        [
            "train",
            "--text",
            str(texts / "english.txt"),
            "--max-steps",
            "20",
            "--eval-batch-size",
            "10",
            *SMALL,
            *QUIET,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    """A private copy of the shared run, for tests that change it."""
    return shutil.copytree(run, tmp_path / "copy")


# -------------------------------------------------------------------------------- train, eval


def test_train_writes_a_complete_run(run):
    assert {
        "run.json",
        "last.safetensors",
        "best.safetensors",
        "metrics.jsonl",
        "results.json",
    } <= {p.name for p in run.iterdir()}
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 20
    assert ck.load_checkpoint(run / "last.safetensors").meta["progress"]["step"] == 20


def test_train_json_output(texts, tmp_path, run_cli):
    code, out, err = run_cli(
        "train",
        "--text",
        texts / "english.txt",
        "--max-steps",
        3,
        *SMALL,
        "--no-progress",
        "--json",
        "--out",
        tmp_path / "r",
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["steps"] == 3 and isinstance(summary["sample"], str)
    assert {"loss", "perplexity", "tokens", "bpc"} <= set(summary["test"])


def test_eval_json(run, run_cli):
    code, out, _ = run_cli("eval", run, "--json")
    assert code == 0
    r = json.loads(out)
    assert {"perplexity", "loss", "tokens", "bpc"} <= set(r)
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    assert r["bpc"] == pytest.approx(r["loss"] / math.log(2))
    assert r["split"] == "test"
    assert r["tokens"] == json.loads((run / "results.json").read_text())["test"]["tokens"]


def test_eval_valid_split_matches_the_trainers_evaluation(run, run_cli):
    code, out, _ = run_cli("eval", run, "--split", "valid", "--json")
    assert code == 0
    r = json.loads(out)
    valid = json.loads((run / "results.json").read_text())["valid"]
    assert r["tokens"] == valid["tokens"]
    assert r["loss"] == pytest.approx(valid["loss"], rel=1e-5)  # same columns, other windows


def test_eval_plain_text(run, run_cli):
    code, out, _ = run_cli("eval", run, "--split", "valid")
    assert code == 0 and "perplexity" in out and "bits/char" in out


def test_eval_other_text_of_the_same_language(run, texts, run_cli):
    code, out, _ = run_cli("eval", run, "--text", texts / "english.txt", "--json")
    assert code == 0 and json.loads(out)["tokens"] > 0


def test_eval_refuses_text_with_another_vocabulary(run, texts, run_cli):
    code, _, err = run_cli("eval", run, "--text", texts / "chinese.txt")
    assert_one_line_error(code, err, "vocabulary", "--allow-unk")
    code, out, _ = run_cli("eval", run, "--text", texts / "chinese.txt", "--allow-unk", "--json")
    assert code == 0 and json.loads(out)["tokens"] > 0


def test_eval_after_the_training_text_moved(run_copy, tmp_path, run_cli, fox_text):
    ckpt = ck.load_checkpoint(run_copy / "best.safetensors")
    ckpt.meta["run"]["data"]["text"] = str(tmp_path / "gone.txt")
    ck.save_checkpoint(run_copy / "best.safetensors", ckpt)
    code, _, err = run_cli("eval", run_copy)
    assert_one_line_error(code, err, "gone.txt", "--text")
    moved = tmp_path / "moved.txt"
    moved.write_text(fox_text())
    code, out, _ = run_cli("eval", run_copy, "--text", moved, "--json")
    assert code == 0 and json.loads(out)["tokens"] > 0


def test_relative_text_path_is_recorded_absolute(texts, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(texts)
    out = tmp_path / "rel"
    code, _, _ = run_cli(
        "train", "--text", "english.txt", "--max-steps", 2, *SMALL, *QUIET, "--out", out
    )
    assert code == 0
    monkeypatch.chdir(tmp_path)
    code, out_text, _ = run_cli("eval", out, "--json")
    assert code == 0 and json.loads(out_text)["tokens"] > 0


# -------------------------------------------------------------------------------- sampling


def sample(run_cli, run, *args) -> str:
    code, out, err = run_cli("sample", run, "--json", *args)
    assert code == 0, err
    return json.loads(out)[0]["text"]


def test_sample_is_reproducible_with_a_seed(run, run_cli):
    a = sample(run_cli, run, "--length", 50, "--seed", 1)
    b = sample(run_cli, run, "--length", 50, "--seed", 1)
    assert a == b and len(a) >= 50
    code, out, _ = run_cli("sample", run, "--length", 50, "--seed", 1)
    assert code == 0 and out.rstrip("\n") == a.rstrip("\n")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_sample_at_reduced_precision(run, run_cli, precision):
    a = sample(run_cli, run, "--length", 30, "--seed", 1, "--precision", precision)
    assert a == sample(run_cli, run, "--length", 30, "--seed", 1, "--precision", precision)
    assert len(a) >= 30


def test_sample_workers_split_the_count(run, run_cli):
    args = ["sample", run, "--json", "--length", 20, "--count", 5, "--seed", 2, "--workers", 2]
    code, out, err = run_cli(*args)
    assert code == 0, err
    texts = [r["text"] for r in json.loads(out)]
    assert len(texts) == 5 and texts == [r["text"] for r in json.loads(run_cli(*args)[1])]
    code, _, err = run_cli("sample", run, "--workers", 0)
    assert (
        code != 0 and err.strip().splitlines()[-1].startswith("rnnlab: error:") and "workers" in err
    )


def test_greedy_sampling_and_top_k_1(run, run_cli):
    greedy = sample(run_cli, run, "--length", 40, "--temperature", 0)
    assert greedy == sample(run_cli, run, "--length", 40, "--temperature", 0)  # no seed needed
    assert greedy == sample(run_cli, run, "--length", 40, "--top-k", 1, "--seed", 5)


def test_sample_prime_and_count(run, run_cli):
    code, out, _ = run_cli(
        "sample",
        run,
        "--prime",
        "the ",
        "--length",
        10,
        "--count",
        2,
        "--seed",
        3,
        "--json",
    )
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 2 and all(r["text"].startswith("the ") for r in rows)


@pytest.mark.parametrize(
    "args,mention",
    [
        (["--temperature", "-1"], "temperature"),
        (["--top-k", "0"], "top-k"),
        (["--top-p", "0"], "top-p"),
        (["--top-p", "1.5"], "top-p"),
        (["--length", "0"], "length"),
        (["--count", "0"], "count"),
        (["--length", "abc"], "--length"),
    ],
)
def test_sample_refuses_impossible_settings(run, run_cli, args, mention):
    code, _, err = run_cli("sample", run, *args)
    assert_one_line_error(code, err, mention)


# -------------------------------------------------------------------------------- scoring


def test_score_json_is_consistent_with_exact_evaluation(run, tmp_path, run_cli):
    text = "the lazy fox.\n"
    path = tmp_path / "s.txt"
    path.write_text(text)
    code, out, _ = run_cli("score", run, "--text", path, "--json")
    assert code == 0
    r = json.loads(out)
    assert [t["token"] for t in r["tokens"]] == list(text) and r["count"] == len(text)
    total = sum(t["logprob"] for t in r["tokens"])
    assert total == pytest.approx(r["total_logprob"], abs=1e-9)
    assert math.exp(-r["total_logprob"] / r["count"]) == pytest.approx(r["perplexity"])
    # reference: the exact evaluator on the same stream after the same one-token context
    model, vocab, _ = load_model(run)
    ids = torch.tensor([boundary_token(vocab, "char"), *vocab.encode(list(text))])
    ref = evaluate(model, ids, batch_size=1, bptt=5)
    assert -r["total_logprob"] / r["count"] == pytest.approx(ref.loss, rel=1e-5)


def test_score_plain_text_and_stdin(run, tmp_path, monkeypatch, run_cli):
    text = "pack my box\n"
    path = tmp_path / "s.txt"
    path.write_text(text)
    code, from_file, _ = run_cli("score", run, "--text", path, "--json")
    assert code == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, from_stdin, _ = run_cli("score", run, "-", "--json")
    assert code == 0 and json.loads(from_stdin) == json.loads(from_file)
    code, plain, _ = run_cli("score", run, "--text", path)
    assert code == 0 and len(plain.strip().splitlines()) == len(text) + 1
    assert "perplexity" in plain.splitlines()[-1]


@pytest.mark.parametrize(
    "stdin,args,mentions",
    [
        (None, [], ["--text"]),
        (b"", ["-"], ["no tokens"]),
        (b"caf\xe9\n", ["-"], ["--encoding"]),
    ],
)
def test_score_bad_input(run, monkeypatch, run_cli, stdin, args, mentions):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code, _, err = run_cli("score", run, *args)
    assert_one_line_error(code, err, *mentions)


# -------------------------------------------------------------------------------- corpora


def test_corpora_json(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "mirror" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "mirror" / "tinyshakespeare" / "input.txt").write_text("x")
    code, out, _ = run_cli("corpora", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"ptb", "wikitext2", "tinyshakespeare", "tang"} <= set(rows)
    assert rows["tinyshakespeare"]["status"] == "mirror"
    assert rows["ptb"]["status"] == "downloadable"
    assert all(r["status"] in ("mirror", "cached", "downloadable") for r in rows.values())
    code, plain, _ = run_cli("corpora")
    assert code == 0 and "tinyshakespeare" in plain


def test_named_corpus_offline_says_how_to_provide_it(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "empty-mirror"))
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "empty-cache"))

    def offline(url, timeout=0):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("rnnlab.data.fetch.fetch_url", offline)
    out = tmp_path / "r"
    code, _, err = run_cli(
        "train", "--corpus", "ptb", "--max-steps", 2, *SMALL, *QUIET, "--out", out
    )
    assert_one_line_error(code, err, "RNNLAB_DATA_DIR", "ptb/train.txt")
    assert not out.exists()


# -------------------------------------------------------------------------------- resume


def test_resume_extends_a_run(run_copy, run_cli):
    code, _, err = run_cli("train", "--resume", run_copy, "--max-steps", 30, *QUIET)
    assert code == 0, err
    assert json.loads((run_copy / "results.json").read_text())["steps"] == 30
    assert ck.load_checkpoint(run_copy / "last.safetensors").meta["progress"]["step"] == 30


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--hidden", "32"], "--hidden"),
        (["--cell", "gru"], "--cell"),
        (["--lr", "0.5"], "--lr"),
        (["--bptt", "4"], "--bptt"),
        (["--preset", "quick"], "preset"),
    ],
)
def test_resume_refuses_changed_settings(run_copy, run_cli, args, flag):
    before = snapshot(run_copy)
    code, _, err = run_cli("train", "--resume", run_copy, *args, *QUIET)
    assert_one_line_error(code, err, flag, "--resume")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_resume_of_something_that_is_no_run(tmp_path, run_cli, make):
    target = tmp_path / "target"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    code, _, err = run_cli("train", "--resume", target, *QUIET)
    assert_one_line_error(code, err, "no rnnlab run")


def test_out_that_holds_a_run_is_refused_untouched(run_copy, texts, run_cli):
    before = snapshot(run_copy)
    code, _, err = run_cli(
        "train", "--text", texts / "english.txt", *SMALL, *QUIET, "--out", run_copy
    )
    assert_one_line_error(code, err, "already holds a run", "--resume")
    assert snapshot(run_copy) == before


def test_disk_full_while_saving_keeps_the_last_checkpoint(run_copy, monkeypatch, run_cli):
    before = (run_copy / "last.safetensors").read_bytes()
    names = {p.name for p in run_copy.iterdir()}
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith(".safetensors"):
            raise OSError(28, os.strerror(28))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    code, _, err = run_cli("train", "--resume", run_copy, "--max-steps", 24, *QUIET)
    monkeypatch.undo()
    assert_one_line_error(
        code, err, os.strerror(28), "previous checkpoint is kept", "--resume", lines=2
    )
    assert (run_copy / "last.safetensors").read_bytes() == before
    assert {p.name for p in run_copy.iterdir()} == names  # no temporary files left


# -------------------------------------------------------------------------------- other levels


def test_word_level(texts, tmp_path, run_cli, fox_text):
    out = tmp_path / "word"
    code, _, err = run_cli(
        "train",
        "--text",
        texts / "english.txt",
        "--level",
        "word",
        "--max-steps",
        5,
        "--hidden",
        16,
        "--embed",
        8,
        "--layers",
        1,
        "--bptt",
        4,
        "--batch-size",
        2,
        *QUIET,
        "--out",
        out,
    )
    assert code == 0, err
    code, res, _ = run_cli("eval", out, "--json")
    r = json.loads(res)
    assert code == 0 and "bpc" not in r and r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    words = sample(run_cli, out, "--length", 12, "--seed", 2)
    english = fox_text()
    assert set(words.split()) <= set(english.split()) | {"<unk>"}
    code, scored, _ = run_cli("score", out, "--text", texts / "english.txt", "--json")
    assert code == 0 and json.loads(scored)["count"] == len(english.split()) + english.count("\n")


def test_tied_weights_train(texts, tmp_path, run_cli):
    out = tmp_path / "tied"
    small = [*SMALL]
    small[small.index("--embed") + 1] = "16"
    code, _, err = run_cli(
        "train",
        "--text",
        texts / "english.txt",
        "--tie",
        "--max-steps",
        3,
        *small,
        *QUIET,
        "--out",
        out,
    )
    assert code == 0, err
    model, _, _ = load_model(out)
    assert model.decoder.weight is model.embedding.weight


def test_byte_order_mark_is_dropped(tmp_path, run_cli, fox_text):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + fox_text().encode())
    out = tmp_path / "r"
    code, _, err = run_cli("train", "--text", path, "--max-steps", 2, *SMALL, *QUIET, "--out", out)
    assert code == 0, err
    _, vocab, _ = load_model(out)
    assert "\ufeff" not in vocab.itos and "t" in vocab.itos


def test_text_outside_the_basic_multilingual_plane(tmp_path, run_cli):
    path = tmp_path / "emoji.txt"
    path.write_text("hi 😀 there 𝄞 ok 🦊\n" * 60, encoding="utf-8")
    out = tmp_path / "r"
    code, _, err = run_cli("train", "--text", path, "--max-steps", 2, *SMALL, *QUIET, "--out", out)
    assert code == 0, err
    _, vocab, _ = load_model(out)
    assert {"😀", "𝄞", "🦊"} <= set(vocab.itos)
    assert sample(run_cli, out, "--prime", "😀", "--length", 5, "--seed", 1).startswith("😀")
    probe = tmp_path / "probe.txt"
    probe.write_text("𝄞😀")
    code, scored, _ = run_cli("score", out, "--text", probe, "--json")
    assert code == 0 and [t["token"] for t in json.loads(scored)["tokens"]] == ["𝄞", "😀"]


# -------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_bytes(b"")
    (d / "bom-only.txt").write_bytes(b"\xef\xbb\xbf")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 20)
    (d / "latin1.txt").write_bytes(("café au lait, crème brûlée. " * 100).encode("latin-1"))
    (d / "one-accent.txt").write_bytes(("plain ascii text, " * 100 + "café").encode("latin-1"))
    (d / "tiny.txt").write_text("ab")
    (d / "short.txt").write_text("abcdefghij" * 3)
    (d / "a-directory").mkdir()
    return d


@pytest.mark.parametrize(
    "name,mentions",
    [
        ("empty.txt", ["empty"]),
        ("bom-only.txt", ["empty"]),
        ("binary.bin", ["binary"]),
        ("one-accent.txt", ["utf-8", "--encoding", "latin-1"]),  # too little to detect
        ("tiny.txt", ["too short"]),
        ("short.txt", ["too short", "--batch-size", "--bptt"]),
        ("a-directory", ["directory"]),
        ("missing.txt", ["not found"]),
    ],
)
def test_train_refuses_bad_text(bad_files, tmp_path, run_cli, name, mentions):
    out = tmp_path / "r"
    code, _, err = run_cli(
        "train", "--text", bad_files / name, "--max-steps", 2, *SMALL, *QUIET, "--out", out
    )
    assert_one_line_error(code, err, *mentions)
    assert not out.exists()  # nothing written


def test_the_latin1_file_is_detected(bad_files, tmp_path, run_cli, caplog):
    out = tmp_path / "r"
    code, _, err = run_cli(
        "train", "--text", bad_files / "latin1.txt", "--max-steps", 2, *SMALL, *QUIET, "--out", out
    )
    assert code == 0, err
    assert "é" in load_model(out)[1].itos
    assert load_model(out)[2].meta["run"]["data"]["encoding"] == "latin-1"
    assert [r.getMessage() for r in caplog.records if "latin1.txt" in r.getMessage()] == [
        f"{bad_files / 'latin1.txt'} is not UTF-8; reading it as latin-1 "
        "(detected; give --encoding to override)"
    ]


def test_right_encoding_makes_the_latin1_file_work(bad_files, tmp_path, run_cli):
    out = tmp_path / "r"
    code, _, err = run_cli(
        "train",
        "--text",
        bad_files / "latin1.txt",
        "--encoding",
        "latin-1",
        "--max-steps",
        2,
        *SMALL,
        *QUIET,
        "--out",
        out,
    )
    assert code == 0, err
    assert "é" in load_model(out)[1].itos


@pytest.mark.parametrize(
    "args,mentions",
    [
        (["--hidden", "0"], ["hidden"]),
        (["--hidden", "-4"], ["hidden"]),
        (["--embed", "0"], ["embed"]),
        (["--layers", "0"], ["layers"]),
        (["--batch-size", "0"], ["batch-size"]),
        (["--bptt", "-1"], ["bptt"]),
        (["--epochs", "0"], ["epochs"]),
        (["--max-steps", "0"], ["max-steps"]),
        (["--lr", "-0.1"], ["learning rate"]),
        (["--lr", "0"], ["learning rate"]),
        (["--dropout", "1"], ["dropout"]),
        (["--dropout", "-0.5"], ["dropout"]),
        (["--clip", "-1"], ["clip"]),
        (["--momentum", "-1"], ["momentum"]),
        (["--weight-decay", "-1"], ["weight-decay"]),
        (["--tie"], ["--embed 16", "--tie"]),  # embed 8, hidden 16
        (["--cell", "nope"], ["unknown cell", "lstm"]),
        (["--preset", "nope"], ["unknown preset", "quick"]),
        (["--encoding", "nope"], ["--encoding"]),
        (["--optimizer", "nope"], ["--optimizer"]),
        (["--level", "byte"], ["--level"]),
        (["--hidden", "many"], ["--hidden"]),
        (["--device", "tpu"], ["device"]),
    ],
)
def test_train_refuses_impossible_settings(texts, tmp_path, run_cli, args, mentions):
    out = tmp_path / "r"
    code, _, err = run_cli(
        "train",
        "--text",
        texts / "english.txt",
        "--max-steps",
        2,
        *SMALL,
        *args,
        *QUIET,
        "--out",
        out,
    )
    assert_one_line_error(code, err, *mentions)
    assert not out.exists()


@pytest.mark.parametrize(
    "args,mentions",
    [
        (["--corpus", "nope"], ["unknown corpus", "ptb"]),
        (["--corpus", "ptb", "--text", "x.txt"], ["--corpus", "--text"]),
    ],
)
def test_train_refuses_bad_sources(tmp_path, run_cli, args, mentions):
    out = tmp_path / "r"
    code, _, err = run_cli("train", *args, "--max-steps", 2, *SMALL, *QUIET, "--out", out)
    assert_one_line_error(code, err, *mentions)
    assert not out.exists()


@pytest.mark.parametrize(
    "args,mentions",
    [
        (["bogus"], ["bogus"]),
        (["eval"], ["run_dir"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_usage_errors_are_one_line(run_cli, args, mentions):
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, *mentions)


def test_help_exits_zero(run_cli):
    code, out, _ = run_cli("eval", "--help")
    assert code == 0 and "--split" in out


@pytest.mark.parametrize(
    "args,mention",
    [
        (["--bptt", "0"], "bptt"),
        (["--batch-size", "0"], "batch size"),
        (["--threads", "0"], "threads"),
    ],
)
def test_eval_refuses_impossible_settings(run, run_cli, args, mention):
    code, _, err = run_cli("eval", run, *args)
    assert_one_line_error(code, err, mention)


# ------------------------------------------------------------------------ bad checkpoints


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_bad_checkpoint(kind: str, good: bytes, directory, marker):
    import pickle

    from safetensors.torch import save as st_save

    blobs = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "header-cut": good[:60],
        "random": bytes((i * 7919 + 13) % 256 for i in range(5000)),
        "pickle": pickle.dumps({"weights": _Marker(marker)}),
        "foreign-safetensors": st_save({"weight": torch.zeros(4)}),
    }
    directory.mkdir()
    (directory / "best.safetensors").write_bytes(blobs[kind])


@pytest.mark.parametrize("command", ["eval", "sample"])
@pytest.mark.parametrize(
    "kind", ["empty", "truncated", "header-cut", "random", "pickle", "foreign-safetensors"]
)
def test_bad_checkpoints_are_refused(run, tmp_path, run_cli, command, kind):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "bad"
    write_bad_checkpoint(kind, (run / "best.safetensors").read_bytes(), bad, marker)
    code, _, err = run_cli(command, bad)
    assert_one_line_error(code, err, "checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize(
    "change,mention",
    [
        (lambda m: m["model"].update(hidden_size=m["model"]["hidden_size"] + 1), "shape"),
        (lambda m: m["vocab"]["itos"].pop(), "vocabulary"),
        (lambda m: m.pop("level"), "invalid description"),
    ],
)
def test_checkpoint_that_disagrees_with_its_config(run, tmp_path, run_cli, change, mention):
    ckpt = ck.load_checkpoint(run / "best.safetensors")
    change(ckpt.meta)
    bad = tmp_path / "bad"
    ck.save_checkpoint(bad / "best.safetensors", ckpt)
    for command in (["eval", bad], ["sample", bad], ["score", bad, "--text", run / "run.json"]):
        code, _, err = run_cli(*command)
        assert_one_line_error(code, err, mention)


def test_resume_from_a_truncated_checkpoint(run_copy, run_cli):
    last = run_copy / "last.safetensors"
    last.write_bytes(last.read_bytes()[:-100])
    code, _, err = run_cli("train", "--resume", run_copy, "--max-steps", 25, *QUIET)
    assert_one_line_error(code, err, "last.safetensors", "truncated")


def metrics_rows(run_dir):
    """(kind, step) of every metrics.jsonl row, in order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["kind"], r["step"]) for r in map(json.loads, lines)]


def test_resume_from_best_when_last_is_damaged(run_copy, run_cli):
    """The message gives the command; it continues from best's step in the same directory, drops
    the metrics rows after it and ends with the weights of the run that was never damaged."""
    best20 = (run_copy / "best.safetensors").read_bytes()
    code, _, err = run_cli("train", "--resume", run_copy, "--max-steps", 30, *QUIET)
    assert code == 0, err
    intact = ck.load_checkpoint(run_copy / "last.safetensors")
    rows = metrics_rows(run_copy)
    assert rows[-1][1] == 30
    (run_copy / "best.safetensors").write_bytes(best20)  # best from step 20, last from step 30
    last = run_copy / "last.safetensors"
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    code, _, err = run_cli("train", "--resume", run_copy, "--max-steps", 30, *QUIET)
    message = assert_one_line_error(code, err, "last.safetensors is corrupt", "(step 20)")
    command = message.split(": ")[-1]
    best = run_copy / "best.safetensors"
    assert command == f"rnnlab train --resume {best}"
    code, _, err = run_cli(*command.split()[1:], "--max-steps", 30, *QUIET)
    assert code == 0, err
    resumed = ck.load_checkpoint(run_copy / "last.safetensors")  # rewritten whole
    assert resumed.meta["progress"]["step"] == 30
    for name, t in intact.group("model").items():
        assert torch.equal(resumed.group("model")[name], t), name
    assert metrics_rows(run_copy) == rows  # rows after step 20 dropped, then written again


def test_resume_when_both_checkpoints_are_damaged(run_copy, run_cli):
    for name in ("last.safetensors", "best.safetensors"):
        path = run_copy / name
        path.write_bytes(path.read_bytes()[:-100])
    before = snapshot(run_copy)
    for target in (run_copy, run_copy / "best.safetensors"):
        code, _, err = run_cli("train", "--resume", target, "--max-steps", 25, *QUIET)
        message = assert_one_line_error(code, err, "damaged too", "nothing can be resumed")
        assert message.endswith(f"rnnlab train --config {run_copy / 'run.json'}")
    assert snapshot(run_copy) == before  # nothing touched
    config = str(run_copy / "run.json")  # and the advice works
    out = run_copy.parent / "again"
    code, _, err = run_cli("train", "--config", config, "--max-steps", 2, "--out", out, *QUIET)
    assert code == 0, err


def test_resume_refuses_a_file_that_is_not_a_checkpoint_of_the_run(run_copy, run_cli):
    code, _, err = run_cli("train", "--resume", run_copy / "run.json", *QUIET)
    assert_one_line_error(code, err, "no rnnlab run", "run directory (or its best.safetensors")


def test_inference_on_a_run_with_a_damaged_best(run_copy, run_cli):
    best = run_copy / "best.safetensors"
    best.write_bytes(best.read_bytes()[:-100])
    last = run_copy / "last.safetensors"
    for command in ("eval", "sample"):
        code, _, err = run_cli(command, run_copy)
        assert_one_line_error(code, err, "best.safetensors is corrupt", f"give {last} instead")
        code, _, err = run_cli(command, last)
        assert code == 0, err


@pytest.mark.parametrize(
    "error,mentions,exit_code",
    [
        (OSError(28, os.strerror(28), "/full/disk/file"), [os.strerror(28), "/full/disk/file"], 1),
        (MemoryError(), ["out of memory"], 1),
        (ValueError("first line\nsecond line"), ["ValueError", "first line second line", "bug"], 1),
        (KeyboardInterrupt(), ["interrupted"], 130),
    ],
)
def test_unexpected_errors_are_one_line(monkeypatch, run_cli, error, mentions, exit_code):
    def broken(args):
        raise error

    monkeypatch.setattr("rnnlab.cli.inference.cmd_corpora", broken)
    code, _, err = run_cli("corpora")
    assert_one_line_error(code, err, *mentions)
    assert code == exit_code


@pytest.mark.parametrize("target", ["missing", "no-checkpoint"])
def test_eval_of_a_directory_without_checkpoint(tmp_path, run_cli, target):
    path = tmp_path / target
    if target == "no-checkpoint":
        path.mkdir()
        (path / "run.json").write_text("{}")
    code, _, err = run_cli("eval", path)
    assert_one_line_error(code, err, "rnnlab train")


# ------------------------------------------------------------------------ -v, progress


@pytest.mark.parametrize(
    "argv,verbose",
    [
        (["train"], False),
        (["-v", "train"], True),
        (["train", "-v"], True),
        (["--verbose", "train", "--max-steps", "3"], True),
        (["train", "--max-steps", "3", "--verbose"], True),
        (["eval", "RUN"], False),
        (["eval", "RUN", "-v"], True),
        (["-v", "eval", "RUN", "-v"], True),
        (["compare", "--out", "g", "-v"], True),
        (["corpora", "-v"], True),
    ],
)
def test_verbose_before_or_after_the_subcommand(argv, verbose):
    from rnnlab.cli import make_parser

    assert make_parser().parse_args(argv).verbose is verbose


def test_verbose_after_the_subcommand_logs(run, texts):
    english = texts / "english.txt"
    proc = rnnlab("eval", run, "--text", english, "-v")
    assert proc.returncode == 0, proc.stderr
    assert "rnnlab: english.txt (char level)" in proc.stderr


@pytest.fixture
def eager_progress(monkeypatch):
    """Progress bars of evaluations shown at once, not only after a few seconds."""
    monkeypatch.setattr("rnnlab.evaluation.text.PROGRESS_DELAY_S", 0.0)


def test_eval_shows_progress_when_it_is_long(run, run_cli, eager_progress):
    code, out, err = run_cli("eval", run)
    assert code == 0 and "test:" in out
    assert "test:" in err and "tok" in err and "%|" in err  # a tqdm bar named after the split
    code, out, err = run_cli("eval", run, "--no-progress")
    assert code == 0 and err == ""


def test_eval_shows_no_progress_when_it_is_short(run, run_cli):
    code, out, err = run_cli("eval", run)
    assert code == 0 and err == ""


def test_training_evaluations_show_progress(texts, tmp_path, run_cli, eager_progress):
    args = ["train", "--text", texts / "english.txt", "--max-steps", 3, *SMALL, "--no-sample"]
    code, _, err = run_cli(*args, "--out", tmp_path / "a")
    assert code == 0, err
    assert "valid:" in err and "test:" in err and "tok" in err
    # the training bar names the budget that ends the run (quick: 3 minutes), not epoch 1/50
    assert "epoch 1 of a 3-minute budget" in err and "epoch 1/" not in err
    code, _, err = run_cli(*args, "--out", tmp_path / "b", "--no-progress")
    assert code == 0, err
    assert "%|" not in err


# ------------------------------------------------------------------------ real processes


def rnnlab(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnlab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    proc = rnnlab("train", "--text", tmp_path / "missing.txt", "--out", tmp_path / "r")
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr, "not found")


def test_subprocess_pickle_checkpoint_is_not_executed(tmp_path, run):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "bad"
    write_bad_checkpoint("pickle", b"", bad, marker)
    proc = rnnlab("sample", bad, "--length", 5)
    assert_one_line_error(proc.returncode, proc.stderr, "not an rnnlab checkpoint")
    assert not marker.exists() and proc.stdout == ""


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_keyboard_interrupt_saves_then_resume_finishes(texts, tmp_path, run_cli):
    out = tmp_path / "r"
    args = [
        "train",
        "--text",
        texts / "english.txt",
        "--epochs",
        1000,
        *SMALL,
        "--log-every",
        1,
        "--threads",
        1,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *map(str, args), *QUIET, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    line = assert_one_line_error(proc.returncode, err, "interrupted", "--resume", lines=2)
    assert str(out) in line
    step = ck.load_checkpoint(out / "last.safetensors").meta["progress"]["step"]
    assert step >= 1
    code, _, err = run_cli("train", "--resume", out, "--max-steps", step + 3, *QUIET)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["steps"] == step + 3


# ---------------------------------------------------------------- poem and sample (issue 4)
@pytest.fixture(scope="module")
def zh_run(texts, tmp_path_factory):
    """A small character model of Chinese poem text."""
    out = tmp_path_factory.mktemp("runs") / "zh"
    code = main(
        ["train", "--text", str(texts / "chinese.txt"), "--max-steps", "10", *SMALL, *QUIET]
        + ["--out", str(out)]
    )
    assert code == 0
    return out


def test_poem_json_has_exact_form_and_reports_constraints(zh_run, run_cli):
    code, out, err = run_cli(
        "poem", zh_run, "--count", 20, "--rhyme", "--tones", "--seed", 1, "--json"
    )
    assert code == 0, err
    poems = json.loads(out)
    assert len(poems) == 20
    for p in poems:
        assert check_form(p["text"], 5, 4) and check_rhyme(p["text"]) and check_tones(p["text"])
        assert {"form", "rhyme", "tones"} <= set(p["satisfies"])


def test_poem_acrostic_first_line_and_text_output(zh_run, run_cli):
    code, out, _ = run_cli("poem", zh_run, "--acrostic", "明月故乡", "--seed", 2, "--json")
    assert code == 0
    assert check_form(json.loads(out)[0]["text"], 5, 4, acrostic="明月故乡")
    code, out, _ = run_cli("poem", zh_run, "--first-line", "床前明月光", "--seed", 2)
    assert code == 0
    assert out.splitlines()[0] == "床前明月光，"
    assert re.fullmatch(r"\(form, perplexity \d+ per character\)", out.splitlines()[4].strip())
    a = run_cli("poem", zh_run, "--form", 7, "--lines", 8, "--seed", 5, "--json")[1]
    b = run_cli("poem", zh_run, "--form", 7, "--lines", 8, "--seed", 5, "--json")[1]
    assert a == b and check_form(json.loads(a)[0]["text"], 7, 8)
    code, out, _ = run_cli("poem", zh_run, "--count", 5, "--rhyme", "--precision", "int8", "--json")
    assert code == 0
    assert all(check_form(p["text"], 5, 4) and check_rhyme(p["text"]) for p in json.loads(out))


@pytest.mark.parametrize(
    "args,mention",
    [
        (["--acrostic", "春夏秋冬"], "not in the model's vocabulary"),
        (["--acrostic", "明月"], "one character per line"),
        (["--first-line", "床前明月"], "must have 5 characters"),
        (["--form", "6"], "5 or 7"),
        (["--lines", "5"], "4 or 8"),
        (["--lines", "8", "--rhyme"], "rhyme"),
        (["--count", "0"], "count"),
    ],
)
def test_impossible_poem_requests_are_one_line_errors(zh_run, run_cli, args, mention):
    code, _, err = run_cli("poem", zh_run, *args)
    assert_one_line_error(code, err, mention)


def test_poem_refuses_a_non_chinese_model(run, run_cli):
    code, _, err = run_cli("poem", run)
    assert_one_line_error(code, err, "Chinese")


def test_sample_beam_stop_and_count(run, run_cli):
    code, out, err = run_cli(
        "sample", run, "--beam", 3, "--count", 2, "--length", 30, "--stop", r"\n", "--json"
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 and rows[0]["text"] != rows[1]["text"]
    assert all("\n" not in r["text"] for r in rows)
    beam = ["sample", run, "--beam", 3, "--count", 2, "--length", 30, "--json"]
    assert run_cli(*beam)[1] == run_cli(*beam)[1]  # deterministic
    stop = ["sample", run, "--length", 200, "--stop", "e", "--seed", 1, "--json"]
    code, out, _ = run_cli(*stop)
    assert code == 0 and "e" not in json.loads(out)[0]["text"]
    code, _, err = run_cli("sample", run, "--beam", 2, "--count", 3)
    assert_one_line_error(code, err, "beam")


def test_cli_schedule_choices_match_the_trainer():
    from rnnlab.cli.train import SCHEDULES as CLI_SCHEDULES
    from rnnlab.config.run import SCHEDULES as TRAIN_SCHEDULES

    assert CLI_SCHEDULES == TRAIN_SCHEDULES


@pytest.mark.parametrize("command", ["train", "config"])
def test_help_shows_every_run_flags_default(command, capsys):
    """Each run flag's help ends with the quick preset's value (and the words preset's where
    a --text file at word level differs), read from the presets, so it cannot go stale."""
    from rnnlab.cli import make_parser
    from rnnlab.cli.train import TRAIN_FLAGS
    from rnnlab.config.resolve import resolve_config

    with pytest.raises(SystemExit):
        make_parser().parse_args([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    quick = resolve_config()
    assert f"--hidden HIDDEN (default: {quick.model.hidden_size}; word: 200)" in out
    assert f"--lr LR (default: {quick.optim.lr}; word: 20.0)" in out
    assert "(default: tinyshakespeare, shipped with rnnlab)" in out
    assert (
        "--tie, --no-tie tie decoder and embedding weights (--no-tie: untie a preset's) "
        "(default: off)" in out
    )
    sub = make_parser()._subparsers._group_actions[0].choices[command]
    shown = {a.dest: a.help or "" for a in sub._actions if a.dest in TRAIN_FLAGS}
    assert shown.keys() == TRAIN_FLAGS.keys()
    for dest, help_text in shown.items():
        assert dest in ("text", "valid_text", "test_text") or "default" in help_text, dest
