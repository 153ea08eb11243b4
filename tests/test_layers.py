"""The house in layers: the import contract holds and docs/architecture.md names every module.

The contract itself lives in pyproject.toml (``[tool.importlinter]``); ``.ci/run`` runs
``lint-imports`` too, this test runs it with the suite so a local ``pytest`` catches a broken layer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "rnnlab"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def modules() -> set[str]:
    """Every module of the package as a path under src/rnnlab (``training/trainer.py``)."""
    return {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")}


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "broken" not in proc.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_architecture_doc_names_every_module_and_no_missing_one() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text))
    present = modules()
    undocumented = sorted(m for m in present if m not in named and not m.endswith("__init__.py"))
    assert not undocumented, f"docs/architecture.md does not describe {undocumented}"
    outside = ("benchmarks/", "tests/", "docs/")  # paths beside the package, not modules of it
    stale = sorted(m for m in named if m not in present and not m.startswith(outside))
    assert not stale, f"docs/architecture.md names modules that no longer exist: {stale}"


def test_the_public_api_is_where_it_was() -> None:
    """What users import keeps working after the packages by layer (issue 14, item 6)."""
    import importlib

    import rnnlab

    for name in ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell", "LanguageModel",
                 "LanguageModelConfig", "AdaptiveLanguageModel", "Trainer", "RunConfig",
                 "load_model", "generate", "evaluate", "CELL_NAMES"):  # fmt: skip
        assert hasattr(rnnlab, name), name
    old = importlib.import_module("rnnlab.numpy_ref")
    from rnnlab.nn import numpy_ref

    assert old is numpy_ref and rnnlab.numpy_ref is numpy_ref
    from rnnlab.numpy_ref import NumpyRNNLM, gradient_check  # noqa: F401
