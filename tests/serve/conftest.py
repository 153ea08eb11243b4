"""Fixtures of the playground tests: two tiny runs trained once per session (a character model
of the fox text, and one of Chinese quatrains that can write poems), the app serving them, and
an in-process client whose server errors come back as responses (never raised)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from rnnlab.cli import main

if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
    # rnnlab serve needs the serve extra (pip install -e '.[dev]'): its tests are not collected
    collect_ignore_glob = ["test_*.py"]

SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample"]
ZH = (
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n"
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\n"
) * 20


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory, make_fox_file) -> dict[str, Path]:
    """``{"fox": run dir, "zh": run dir}``: tiny character runs, ten steps each."""
    d = tmp_path_factory.mktemp("served")
    make_fox_file(d, "fox.txt")
    (d / "zh.txt").write_text(ZH, encoding="utf-8")
    runs = {}
    for name in ("fox", "zh"):
        out = d / name
        args = ["train", "--text", str(d / f"{name}.txt"), "--max-steps", "10", *SMALL, *QUIET]
        assert main([*args, "--out", str(out)]) == 0
        runs[name] = out
    return runs


@pytest.fixture(scope="session")
def word_run(tmp_path_factory, make_fox_file) -> Path:
    """A tiny word-level run of the fox text."""
    d = tmp_path_factory.mktemp("served-words")
    text = make_fox_file(d, "words.txt")
    args = ["train", "--text", str(text), "--level", "word", "--max-steps", "5", *SMALL, *QUIET]
    assert main([*args, "--out", str(d / "words")]) == 0
    return d / "words"


@pytest.fixture(scope="session")
def registry(served_runs):
    from rnnlab.serve.registry import load_registry

    return load_registry([served_runs["fox"], served_runs["zh"]])


@pytest.fixture
def make_app(registry) -> Callable[..., object]:
    """``make_app(**limits)``: a fresh app (its own slots) over the session's two models."""
    from rnnlab.serve.app import create_app
    from rnnlab.serve.limits import Limits

    def make(**limits: int):
        return create_app(registry, Limits(**limits))

    return make


@pytest.fixture
def client(make_app):
    """An in-process client of a fresh app; a server error comes back as a 500 response."""
    import warnings

    with warnings.catch_warnings():  # starlette's note that its TestClient moves to httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    return TestClient(make_app(), raise_server_exceptions=False)
