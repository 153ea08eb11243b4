"""The offline default corpus: the Python standard library's own ``.py`` sources.

Found at run time, so that ``rnnlab train`` works with no download at all.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from rnnlab.data.corpus import Corpus
from rnnlab.data.text_files import cut_points
from rnnlab.errors import ConfigError, DataError

_SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


def _stdlib_sources(root: Path) -> list[Path]:
    """All ``.py`` files under ``root``, test suites and installed packages excluded, sorted
    by relative POSIX path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                found.append(Path(dirpath, name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def default_corpus(max_chars: int = 2_000_000) -> Corpus:
    """The offline default corpus: Python's standard-library ``.py`` sources (char level).

    Found at run time under ``sysconfig.get_paths()["stdlib"]``; files are taken in sorted
    relative-path order (test suites, ``site-packages`` and non-UTF-8 files skipped),
    concatenated up to ``max_chars`` characters and split 90/5/5 contiguously. The text is
    deterministic for a given Python installation.
    """
    if max_chars < 100:
        raise ConfigError(f"max_chars must be at least 100, got {max_chars}")
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = n_files = 0
    for path in _stdlib_sources(root):
        if total >= max_chars:
            break
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text.replace("\r\n", "\n")
        if not text.endswith("\n"):
            text += "\n"
        parts.append(text)
        total += len(text)
        n_files += 1
    full = "".join(parts)[:max_chars]
    if not full:
        raise DataError(
            f"no Python standard-library sources found under {root}; give a text file "
            "or a named corpus instead"
        )
    a, b = cut_points(len(full), 0.05, 0.05)
    splits = {"train": full[:a], "valid": full[a:b], "test": full[b:]}
    version = ".".join(map(str, sys.version_info[:3]))
    description = f"Python {version} standard-library source ({n_files} files) from {root}"
    return Corpus("stdlib", "char", splits, None, description, {"files": n_files})
