"""Shared test settings and scaffolding.

Tests use one intra-op thread: their tensors are tiny, and a two-thread OpenMP pool on a machine
whose other core is busy (CI beside other work) can be slower by orders of magnitude.

The fixtures here are what many test files need: the pangram text the small runs train on
(``fox_text``, ``make_fox_file``, ``fox_file``), the ``rnnlab`` command run in-process
(``run_cli``) and the corpus mirror (``data_dir``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rnnlab.cli import main

torch.set_num_threads(1)

FOX = "the quick brown fox jumps over the lazy dog."
JUGS = "pack my box with five dozen liquor jugs."


def _fox_text(repeat: int = 40, *, jugs: bool = True, fox_end: str = " ") -> str:
    """The fox pangram ``repeat`` times (each followed by ``fox_end``), then, with ``jugs``, the
    jugs pangram ``repeat`` times, one a line."""
    return (FOX + fox_end) * repeat + ((JUGS + "\n") * repeat if jugs else "")


@pytest.fixture(scope="session")
def fox_text() -> Callable[..., str]:
    """The small English training text: ``fox_text()`` is the usual one (40 of each pangram);
    ``fox_text(repeat, jugs=..., fox_end=...)`` the variants some files train on."""
    return _fox_text


@pytest.fixture(scope="session")
def make_fox_file() -> Callable[..., Path]:
    """``make_fox_file(directory, name="corpus.txt", repeat=40, **variant)`` writes
    ``fox_text(repeat, **variant)`` to ``directory / name`` (UTF-8) and returns the path; for
    module-scoped fixtures, which cannot use ``tmp_path``."""

    def make(
        directory: Path, name: str = "corpus.txt", repeat: int = 40, **variant: object
    ) -> Path:
        path = Path(directory) / name
        path.write_text(_fox_text(repeat, **variant), encoding="utf-8")
        return path

    return make


@pytest.fixture
def fox_file(tmp_path: Path, make_fox_file: Callable[..., Path]) -> Path:
    """The usual fox text in ``tmp_path / "corpus.txt"``."""
    return make_fox_file(tmp_path)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``run_cli(*args)`` runs ``rnnlab`` in-process (arguments turned into strings) and returns
    (exit code, stdout, stderr) of that call alone: output printed before it is dropped."""

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def data_dir():
    """The corpus mirror named by RNNLAB_DATA_DIR, or a skip that says why."""
    path = os.environ.get("RNNLAB_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("real corpora need RNNLAB_DATA_DIR pointing at a corpus mirror (CI sets it)")
    return path
