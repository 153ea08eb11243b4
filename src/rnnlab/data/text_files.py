"""Local text files as corpora: reading with one-line errors, and contiguous splitting.

:func:`read_text_file` reads a whole file and refuses missing, empty or binary input with a
one-line :class:`~rnnlab.errors.DataError`; its encoding is UTF-8 or detected (``"auto"``), given,
or recorded by a run (see :mod:`rnnlab.data.encodings`); :func:`read_file_bytes` is the reading
alone, for callers that decode later. :func:`load_text_file` splits a file
contiguously (or takes explicit valid/test files) into a :class:`~rnnlab.data.corpus.Corpus` that
records the encoding its main file was read with.
"""

from __future__ import annotations

from pathlib import Path

from rnnlab.data.corpus import Corpus
from rnnlab.data.encodings import AUTO, DecodedText, check_encoding, decode_text
from rnnlab.errors import ConfigError, DataError


def read_text_file(path: str | Path, *, encoding: str = AUTO, policy: str = "given") -> str:
    """Read a whole text file with one-line :class:`DataError` messages for bad input.

    ``encoding`` is ``"auto"`` (UTF-8, else detected, with a one-line notice) or a codec name,
    honoured exactly, or with ``policy="recorded"`` or ``"hint"`` the codec a run recorded (see
    :func:`rnnlab.data.encodings.decode_text`). A byte-order mark is dropped and ``\\r\\n``
    becomes ``\\n``.
    """
    return read_text(path, encoding=encoding, policy=policy).text


def read_text(path: str | Path, *, encoding: str = AUTO, policy: str = "given") -> DecodedText:
    """:func:`read_text_file`'s text together with the encoding it was read with."""
    check_encoding(encoding)
    data = read_file_bytes(path)
    return decode_bytes(data, str(path), encoding=encoding, policy=policy)


def read_file_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file; a missing, unreadable or special file is a one-line
    :class:`DataError`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"text file not found: {p}; check the path")
    if p.is_dir():
        raise DataError(f"{p} is a directory; give a text file inside it instead")
    if not p.is_file():  # a FIFO or device (e.g. /dev/zero) could be read forever
        raise DataError(f"{p} is not a regular file; give a text file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {p} ({exc.strerror}); check its permissions") from None


def decode_bytes(
    data: bytes, source: str, *, encoding: str = AUTO, policy: str = "given"
) -> DecodedText:
    """The text of a file's (or standard input's) bytes, as :func:`read_text_file` reads it;
    ``source`` names them in messages. Empty text is a one-line :class:`DataError`."""
    decoded = decode_text(data, source, encoding, policy=policy) if data else None
    if decoded is None or not decoded.text.lstrip("\ufeff"):
        raise DataError(f"{source} is empty; give a file that contains text")
    text = decoded.text.removeprefix("\ufeff").replace("\r\n", "\n")
    return DecodedText(text, decoded.encoding)


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
    encoding: str = AUTO,
    policy: str = "given",
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
    ``encoding`` and ``policy`` are :func:`read_text_file`'s, for every file; the corpus
    records the encoding the main file was read with.
    """
    if level not in ("char", "word"):
        raise ConfigError(f"level must be 'char' or 'word', not '{level}'")
    main = read_text(path, encoding=encoding, policy=policy)
    text = main.text

    def other(extra: str | Path | None) -> str | None:
        return read_text_file(extra, encoding=encoding, policy=policy) if extra else None

    valid_text, test_text = other(valid_path), other(test_path)
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
    return Corpus(p.name, level, splits, None, f"local file {p}", encoding=main.encoding)
