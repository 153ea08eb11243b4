"""Named corpora as raw text split into train/valid/test: :func:`load_corpus`.

A named corpus (``rnnlab corpora`` lists them; :mod:`rnnlab.data.registry` describes each) is
read from checksum-verified files that :mod:`rnnlab.data.fetch` finds in a local mirror, the
user cache or upstream, and split here into a :class:`~rnnlab.data.corpus.Corpus`. Other
sources of text live beside this module: a local text file (:mod:`rnnlab.data.text_files`) and
the offline default (:mod:`rnnlab.data.default_corpus`), which is ``tinyshakespeare`` read from
the copy shipped inside the package when no mirror or cache has it.

Splits of the named corpora:

=================  =====  ===================================================================
name               level  splits
=================  =====  ===================================================================
ptb                word   the standard Mikolov train/valid/test files
wikitext2          word   the standard WikiText-2 (v1, tokenized) files
tinyshakespeare    char   first 90% of characters train, last 10% valid (nanoGPT's split).
                          There is no standard test split: ``test`` is the same last 10%.
linux              char   the train/valid/test files of the pytorch/examples PR #235 corpus
poetry-zh          char   char-rnn-poetry-zh ``poetry.txt`` (simplified), lines split
                          contiguously 90/5/5 (train first)
tang               char   complete Tang poems of chinese-poetry, cleaned, one poem per line,
                          poems i with i % 20 == 18 to valid, i % 20 == 19 to test (90/5/5)
                          (:mod:`rnnlab.data.tang`)
=================  =====  ===================================================================

The piano-roll corpora (``jsb``, ``nottingham``, ``musedata``, ``pianomidi``) are sequences of
88-note frames, not text: the registry and :mod:`rnnlab.data.fetch` find and check their files
like any other, :mod:`rnnlab.data.rolls` reads them, and :func:`load_corpus` refuses them.
"""

from __future__ import annotations

from pathlib import Path

from rnnlab.data.corpus import Corpus
from rnnlab.data.fetch import Fetch, corpus_file
from rnnlab.data.registry import PIANOROLL, get_spec
from rnnlab.data.tang import load_tang
from rnnlab.errors import ConfigError


def load_corpus(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
    **options: object,
) -> Corpus:
    """Load a named corpus (see :func:`rnnlab.data.registry.list_corpora`) as raw text splits.

    ``options`` are corpus-specific; only ``tang`` takes any: ``script="simplified"`` (default,
    OpenCC t2s) or ``"traditional"``, ``titles=False`` (``True`` writes each poem as
    ``title:poem``) and ``poet=None`` (a name: that author's poems only, in the corpus's split). Unknown names or options raise :class:`ConfigError`; missing files raise
    :class:`DataError` saying how to provide them.
    """
    spec = get_spec(name)
    if spec.level == PIANOROLL:
        raise ConfigError(
            f"corpus '{name}' holds piano rolls, not text; load it with rnnlab.data.rolls.load_rolls "
            "(rnnlab train --corpus does this)"
        )
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"corpus '{name}' has no option {', '.join(unknown)}; options it accepts: {accepted}"
        )

    def files() -> dict[str, Path]:
        return {
            rel: corpus_file(spec, rel, data_dir=data_dir, download=download, fetch=fetch)
            for rel in spec.files
        }

    if name == "tang":
        return load_tang(spec, files, **options)  # type: ignore[arg-type]
    paths = files()
    read = {rel: _decode_checked(paths[rel]) for rel in spec.files}
    if name in ("ptb", "wikitext2", "linux"):
        splits = dict(zip(("train", "valid", "test"), read.values(), strict=True))
    elif name == "tinyshakespeare":
        (text,) = read.values()
        cut = int(len(text) * 0.9)  # nanoGPT's split
        splits = {"train": text[:cut], "valid": text[cut:], "test": text[cut:]}
    elif name == "poetry-zh":
        (text,) = read.values()
        splits = _split_lines(text.split("\n"), 0.05, 0.05)
    else:  # pragma: no cover - every registered name is handled above
        raise AssertionError(name)
    script = "simplified" if name == "poetry-zh" else None
    return Corpus(name, spec.level, splits, script, spec.description)


def _decode_checked(path: Path) -> str:
    """Read a checksummed UTF-8 corpus file (LF line endings are part of the checksum)."""
    return path.read_bytes().decode("utf-8")


def _split_lines(lines: list[str], valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """Contiguous split of lines: train first, then valid, then test; each ends with a newline."""
    if lines and lines[-1] == "":
        lines = lines[:-1]
    n = len(lines)
    n_valid, n_test = round(n * valid_fraction), round(n * test_fraction)
    a, b = n - n_valid - n_test, n - n_test

    def join(part: list[str]) -> str:
        return "".join(line + "\n" for line in part)

    return {"train": join(lines[:a]), "valid": join(lines[a:b]), "test": join(lines[b:])}
