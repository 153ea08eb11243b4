"""What the tests of ``benchmarks/`` share: the scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The benchmark script ``benchmarks/<name>.py`` as a module (the folder on ``sys.path``,
    for the scripts' own ``from _common import ...``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench() -> Callable[[str], ModuleType]:
    """``bench("chung_table")``: a benchmark script as a module."""
    return load_benchmark
