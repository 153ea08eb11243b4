"""Local text files as corpora: reading with one-line errors, and contiguous splitting.

:func:`read_text_file` reads a whole file and refuses missing, empty, binary or mis-encoded
input with a one-line :class:`~rnnlab.errors.DataError`; :func:`load_text_file` splits a file
contiguously (or takes explicit valid/test files) into a :class:`~rnnlab.data.corpus.Corpus`.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from rnnlab.data.corpus import Corpus
from rnnlab.errors import ConfigError, DataError

_UTF8_BOM = codecs.BOM_UTF8
_BINARY_FRACTION = 0.3  # more undecodable bytes than this: call it binary, not mis-encoded


def read_text_file(path: str | Path, *, encoding: str = "utf-8") -> str:
    """Read a whole text file with one-line :class:`DataError` messages for bad input.

    A UTF-8 byte-order mark is stripped silently and ``\\r\\n`` becomes ``\\n``.
    """
    p = Path(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(
            f"unknown --encoding '{encoding}'; use a codec name such as utf-8, latin-1, gb18030"
        ) from None
    if not p.exists():
        raise DataError(f"text file not found: {p}; check the path")
    if p.is_dir():
        raise DataError(f"{p} is a directory; give a text file inside it instead")
    if not p.is_file():  # a FIFO or device (e.g. /dev/zero) could be read forever
        raise DataError(f"{p} is not a regular file; give a text file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {p} ({exc.strerror}); check its permissions") from None
    if codec.startswith("utf-8") and data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if not data:
        raise DataError(f"{p} is empty; give a file that contains text")
    wide = codec.startswith(("utf-16", "utf-32"))
    if not wide and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{p} starts with a UTF-16 byte-order mark; pass --encoding utf-16")
    if not wide and b"\x00" in data:
        raise DataError(f"{p} looks binary (it contains NUL bytes); give a plain text file")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        bad = data.decode(codec, errors="replace").count("\ufffd")
        if bad > _BINARY_FRACTION * len(data):
            raise DataError(
                f"{p} looks binary, not {encoding} text; give a plain text file"
            ) from None
        raise DataError(
            f"{p} is not valid {encoding} at byte offset {exc.start}; "
            f"pass its real encoding with --encoding (e.g. latin-1, gb18030, utf-16)"
        ) from None
    return text.replace("\r\n", "\n")


def cut_points(n_chars: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Where a contiguous train/valid/test split of ``n_chars`` characters cuts: ``(a, b)``
    with train ``[:a]``, valid ``[a:b]``, test ``[b:]``; ConfigError for bad fractions."""
    for label, f in (("valid", valid_fraction), ("test", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"{label} fraction must be in [0, 1), got {f}")
    if valid_fraction + test_fraction >= 1.0:
        raise ConfigError("valid + test fractions must leave some text for training (sum < 1)")
    n_valid, n_test = round(n_chars * valid_fraction), round(n_chars * test_fraction)
    return n_chars - n_valid - n_test, n_chars - n_test


def _snap_to_space(text: str, i: int) -> int:
    """Move a cut forward to the next whitespace so that no word is split."""
    while 0 < i < len(text) and not text[i].isspace():
        i += 1
    return i


def load_text_file(
    path: str | Path,
    *,
    encoding: str = "utf-8",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    valid_path: str | Path | None = None,
    test_path: str | Path | None = None,
    level: str = "char",
) -> Corpus:
    """A local text file as a corpus.

    Without ``valid_path``/``test_path`` the file is split contiguously: the first
    ``1 - valid_fraction - test_fraction`` of its characters are train, then valid, then test
    (for ``level="word"`` each cut moves forward to the next whitespace). A given
    ``valid_path``/``test_path`` supplies that split instead, and its fraction is ignored. A
    fraction of 0 gives an empty split. Errors are one-line :class:`DataError` messages.
    """
    if level not in ("char", "word"):
        raise ConfigError(f"level must be 'char' or 'word', not '{level}'")
    text = read_text_file(path, encoding=encoding)
    valid_text = read_text_file(valid_path, encoding=encoding) if valid_path else None
    test_text = read_text_file(test_path, encoding=encoding) if test_path else None
    a, b = cut_points(
        len(text),
        0.0 if valid_text is not None else valid_fraction,
        0.0 if test_text is not None else test_fraction,
    )
    if level == "word":
        a, b = _snap_to_space(text, a), _snap_to_space(text, b)
        a = min(a, b)
    splits = {
        "train": text[:a],
        "valid": valid_text if valid_text is not None else text[a:b],
        "test": test_text if test_text is not None else text[b:],
    }
    wanted = {"valid": valid_fraction > 0, "test": test_fraction > 0, "train": True}
    empty = [k for k, v in splits.items() if wanted[k] and not v]
    if empty:
        raise DataError(
            f"{path} is too short ({len(text)} characters) to give a non-empty "
            f"{'/'.join(empty)} split; use a longer file or pass --valid-text/--test-text"
        )
    p = Path(path)
    return Corpus(p.name, level, splits, None, f"local file {p}")
