"""Telling and applying the encoding of a user's text: UTF-8 first, then byte-order marks and
UTF-16/32 patterns, then statistical detection (charset-normalizer) under a confidence rule.

:func:`decode_text` turns the bytes of a file (or of standard input) into text. With
``encoding="auto"`` (:data:`AUTO`, the default everywhere) valid UTF-8 is UTF-8 (a byte-order
mark is dropped); a UTF-16/32 byte-order mark, or NUL bytes that fall where UTF-16/32 puts them,
give that encoding; anything else goes to :func:`detect_encoding`. Reading a file as anything but
UTF-8 is announced in one log line (``<file> is not UTF-8; reading it as gb18030 (detected; give
--encoding to override)``); when detection is not confident the result is a one-line
:class:`DataError` naming ``--encoding`` and the likely candidates; binary files (NUL bytes in no
UTF-16/32 pattern, or bytes no encoding reads as text) are refused in one line.

With a codec name, ``policy`` says whose choice it is:

- ``"given"`` (the user's ``--encoding``): honoured exactly; a failure is a one-line error that
  names the encoding the bytes look like when detection is sure of one.
- ``"recorded"`` (a run's own files, read again by ``--resume`` or ``eval``): the codec the run
  recorded is tried first, so the text is the one the run trained on; if the file no longer
  decodes under it, ``auto`` takes over, with its notice.
- ``"hint"`` (another file read for a run, ``eval --text`` or ``score``): valid UTF-8 stays UTF-8
  (a sentence typed into a UTF-8 terminal is not GBK because the model was trained on a GBK
  file), else the run's codec if it reads the bytes as text, else ``auto``, with its notice.

:func:`detect_encoding` asks charset-normalizer for candidates (its own picks plus a fixed list of
common encodings, so that a plausible rival is never missed), decodes the bytes under each, drops
readings with control, private-use or unassigned characters, merges codecs that read the bytes
alike (named by the sensible Python codec: gb18030 for GB2312/GBK, cp932 for Shift-JIS, cp949
for EUC-KR, cp1252 for Windows-1252 and latin-1 when the two read alike), and is confident when
one reading is clearly the best, no common encoding comes close, and it holds enough
non-ASCII characters (:data:`MIN_NON_ASCII`). Legacy Mac and DOS code pages may block a guess but
are not guessed. Latin-script single-byte readings, which charset-normalizer's scores cannot
tell apart, are compared by how well their accented letters fit one European language's
alphabet; Windows-1252 wins a tie (so a Hungarian cp1250 file that only uses letters cp1252 also
has, read as cp1252, is misread: the notice says so, and ``--encoding cp1250`` fixes it).

Measured with a script over random windows of real text (100 windows per length: Chinese prose
and Tang poems in GBK and Big5, Japanese in Shift-JIS, eight European languages in cp1252 and
cp1250, Russian in cp1251 and KOI8-R, Greek, UTF-16 without a byte-order mark): Chinese and
UTF-16 text is read right from about 40 characters, Japanese from about 64 (below that, errors
with candidates), Western European text once it holds about a dozen accented letters or
typographic quotes (128-256 characters of prose), Central European a little later. Of about
22,000 windows one was misread (48 characters of Russian cp1251 read as Greek cp1253); the rest
were read right or refused. ``tests/data/test_encodings.py`` checks that every prefix of its
samples is read right or refused.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata
from dataclasses import dataclass

from rnnlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

AUTO = "auto"  # the encoding setting that means "UTF-8, else detect"

# detection is judged on the file's beginning; the winner must still decode the whole file
SAMPLE_BYTES = 1 << 20
# fewer non-ASCII characters than this (in the best reading) is too little to tell encodings
# by: CJK encodings all read short Chinese or Japanese as plausible Han characters, while Latin
# readings are judged by their letters (measured: see the module doc)
MIN_NON_ASCII = 32
MIN_NON_ASCII_LATIN = 8
# two readings are a tie unless one is this much less messy or this much more coherent
CHAOS_MARGIN = 0.1
COHERENCE_MARGIN = 0.1
# Latin readings whose alphabet fit differs by less than this are a tie
FIT_MARGIN = 0.02
# a legacy (Mac, DOS) Latin reading that fits one alphabet this well blocks a guess
PERFECT_FIT = 0.98
# control characters (other than whitespace) a text may hold, as a fraction of its characters
MAX_CONTROL = 0.01
# more undecodable bytes than this: call the file binary, not mis-encoded
BINARY_FRACTION = 0.3

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_UTF8_BOM = codecs.BOM_UTF8

# common encodings always scored, besides charset-normalizer's own picks
_ALWAYS_SCORED = [
    "gb18030",
    "big5",
    "cp932",
    "euc_jp",
    "cp949",
    "utf_16_le",
    "utf_16_be",
    "cp1252",
    "cp1250",
    "cp1251",
    "koi8_r",
]
# the encodings a file may be detected as (besides iso8859-*, cp125x and UTF-16/32)
_COMMON = frozenset(
    codecs.lookup(name).name
    for name in (
        "gb18030",
        "big5",
        "cp950",
        "big5hkscs",
        "cp932",
        "shift_jis_2004",
        "euc_jp",
        "euc_jis_2004",
        "cp949",
        "latin-1",
        "koi8_r",
        "koi8_u",
        "cp866",
    )
)
# a detector's name -> the Python codecs to read it with, best first (supersets first)
_PREFERRED = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "gb18030": ("gb18030",),
    "big5": ("big5", "cp950", "big5hkscs"),
    "cp950": ("cp950", "big5hkscs"),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "shift_jis_2004": ("cp932", "shift_jis_2004"),
    "shift_jisx0213": ("cp932", "shift_jisx0213"),
    "euc_kr": ("cp949",),
    "iso2022_kr": ("cp949", "iso2022_kr"),
}
# a match that reads the bytes as one of these does as Windows-1252 (or latin-1, if no 0x80-0x9F)
_WESTERN = ("cp1252", "latin_1")
# how a group of codecs that read the bytes identically is named: the first of these it holds
_NAME_ORDER = ("utf-16-le", "utf-16-be", "gb18030", "big5", "cp950", "cp932", "cp949", "cp1252")

# the accented letters of European languages written in Latin script (lower case)
_ALPHABETS = {
    "French": "àâæçéèêëîïôœùûüÿ",
    "German": "äöüß",
    "Spanish": "áéíñóúü",
    "Portuguese": "áâãàçéêíóôõú",
    "Italian": "àèéìíîòóùú",
    "Catalan": "àçèéíïòóúü",
    "Dutch": "áéëïóöü",
    "Danish and Norwegian": "æøåé",
    "Swedish and Finnish": "åäöé",
    "Icelandic": "áðéíóúýþæö",
    "Czech": "áčďéěíňóřšťúůýž",
    "Slovak": "áäčďéíĺľňóôŕšťúýž",
    "Polish": "ąćęłńóśźż",
    "Hungarian": "áéíóöőúüű",
    "Romanian": "ăâîșțşţ",
    "Croatian and Slovene": "čćđšž",
    "Turkish": "çğıöşüâî",
    "Lithuanian": "ąčęėįšųūž",
    "Latvian": "āčēģīķļņšūž",
    "Estonian": "äöõüšž",
}
_LATIN_EXTRA = frozenset("ªºµ")  # letters that are Latin by use, not by Unicode name
_C0 = re.compile("[\x00-\x08\x0e-\x19\x1c-\x1f\x7f]")
_C1 = re.compile("[\x80-\x9f]")
_HALFWIDTH_KATAKANA = re.compile("[\uff61-\uff9f]")

# binary formats recognisable by their first bytes
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"%PDF", "a PDF document"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"\x7fELF", "an executable"),
)


@dataclass(frozen=True)
class DecodedText:
    """Text and the encoding it was read with (a Python codec name, as a run records it)."""

    text: str
    encoding: str


@dataclass(frozen=True)
class Detection:
    """What :func:`detect_encoding` concluded.

    ``encoding`` is the codec to read the bytes with, or None when detection is not confident;
    ``candidates`` are the plausible codecs, best first; ``reason`` is why it is not confident
    (``"ambiguous"``, ``"short"``, ``"unknown"``) or ``"detected"``.
    """

    encoding: str | None
    candidates: tuple[str, ...]
    reason: str


@dataclass
class _Reading:
    """One way of reading the bytes: the codec, its text (of the sample) and its scores."""

    codec: str
    text: str
    chaos: float
    coherence: float
    codecs: set[str]


def check_encoding(encoding: str) -> str:
    """``encoding`` if it is :data:`AUTO` or a text codec Python knows; else a one-line
    :class:`ConfigError` naming ``--encoding``."""
    if encoding == AUTO:
        return encoding
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError):
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise ConfigError(
            f"unknown --encoding '{encoding}'; use auto (the default: UTF-8, else detected) or "
            "a codec name such as utf-8, gb18030, big5, cp932, cp1252, utf-16"
        )
    return encoding


POLICIES = ("given", "recorded", "hint")


def decode_text(
    data: bytes, source: str, encoding: str = AUTO, *, policy: str = "given"
) -> DecodedText:
    """``data`` as text (``\\r\\n`` kept), read as the module doc describes.

    Args:
        data: the bytes (not empty).
        source: how to name them in messages (a path, or "standard input").
        encoding: :data:`AUTO`, or a codec name.
        policy: whose choice ``encoding`` is: ``"given"`` (honoured exactly), ``"recorded"``
            (a run's, for its own files) or ``"hint"`` (a run's, for another file); see the
            module doc. Ignored for :data:`AUTO`.

    Raises:
        DataError: binary data, bytes that are not valid in the given encoding, or (auto) an
            encoding that cannot be told for sure; one line naming ``--encoding``.
        ConfigError: an unknown codec name or policy.
    """
    check_encoding(encoding)
    if policy not in POLICIES:
        raise ConfigError(f"unknown encoding policy {policy!r}; choose {', '.join(POLICIES)}")
    if encoding == AUTO:
        return _decode_auto(data, source, None)
    if policy == "given":
        return _decode_given(data, source, encoding)
    if policy == "recorded":
        text = _try_decode(_drop_utf8_bom(data, encoding), encoding)
        if text is not None and ("\x00" not in text or _is_wide(encoding)):
            return DecodedText(text, encoding)
    return _decode_auto(data, source, encoding)


# ------------------------------------------------------------------------- the policies
def _decode_given(data: bytes, source: str, encoding: str) -> DecodedText:
    """The given policy: ``encoding`` exactly, or a one-line error."""
    codec = codecs.lookup(encoding).name
    data = _drop_utf8_bom(data, codec)
    wide = _is_wide(codec)
    if not wide and data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise DataError(
            f"{source} starts with a UTF-16 byte-order mark; pass --encoding utf-16 "
            "(or leave --encoding out to detect it)"
        )
    if not wide and b"\x00" in data:
        pattern = _wide_reading(data)
        if pattern is not None:
            raise DataError(
                f"{source} is {pattern.encoding} text, not {encoding}; pass --encoding "
                f"{pattern.encoding} (or leave --encoding out to detect it)"
            )
        raise DataError(_binary_message(data, source, "it contains NUL bytes"))
    try:
        return DecodedText(data.decode(codec), encoding)
    except UnicodeDecodeError as exc:
        bad = data.decode(codec, errors="replace").count("\ufffd")
        hint = _hint(data, encoding)
        if bad > BINARY_FRACTION * len(data):
            if hint:
                raise DataError(
                    f"{source} is not {encoding} text ({bad:,} bad bytes){hint}"
                ) from None
            raise DataError(
                f"{source} looks binary, not {encoding} text; give a plain text file"
            ) from None
        raise DataError(
            f"{source} is not valid {encoding} at byte offset {exc.start}"
            + (hint or "; pass its real encoding with --encoding (e.g. gb18030, cp1252)")
        ) from None


def _hint(data: bytes, given: str) -> str:
    """What detection makes of bytes that failed under the ``given`` codec: ``"; it reads as X:
    pass --encoding X ..."`` when it is sure, ``"; it could be X, Y: ..."`` when not, ``""``
    when no encoding reads them as text."""
    found = detect_encoding(data)
    if found.encoding is not None and found.encoding != given:
        return (
            f"; it reads as {found.encoding}: pass --encoding {found.encoding} "
            "(or leave --encoding out to detect it)"
        )
    others = [c for c in found.candidates if c != given][:5]
    if not others:
        return ""
    return f"; it could be {', '.join(others)}: pass its encoding with --encoding"


def _decode_auto(data: bytes, source: str, known: str | None) -> DecodedText:
    """The auto policy (``known`` None), or the hint policy (``known`` the run's codec), also
    where the recorded codec failed."""
    known_codec = codecs.lookup(known).name if known else "utf-8"
    if data.startswith(_UTF8_BOM):
        return _decode_given(data, source, "utf-8")
    for bom, wide in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(wide)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{source} starts with a {wide.upper()} byte-order mark but is not valid "
                    f"{wide} at byte offset {exc.start}; pass its real encoding with --encoding"
                ) from None
            if known and known_codec.startswith(wide):
                return DecodedText(text, known)
            _notice(source, known, wide, "byte-order mark")
            return DecodedText(text, wide)
    if b"\x00" in data:
        pattern = _wide_reading(data)
        if pattern is None:
            raise DataError(_binary_message(data, source, "it contains NUL bytes"))
        if known and known_codec == pattern.encoding:
            return DecodedText(pattern.text, known)
        _notice(source, known, pattern.encoding, f"{pattern.encoding[:6].upper()} pattern of NULs")
        return pattern
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc.start
    else:
        if known is None or known_codec == "utf-8":
            return DecodedText(text, "utf-8")
        if _try_decode(data, known) == text:  # ASCII: the run's codec reads it alike
            return DecodedText(text, known)
        _notice(source, known, "utf-8", "valid UTF-8")
        return DecodedText(text, "utf-8")
    if known is not None and known_codec != "utf-8":
        text = _try_decode(data, known)
        if text is not None and _is_text(text):
            return DecodedText(text, known)
    return _decode_detected(data, source, known, utf8_error)


def _decode_detected(data: bytes, source: str, known: str | None, utf8_error: int) -> DecodedText:
    """Bytes that are not UTF-8 (nor ``known``), read as detection says, or a one-line error."""
    found = detect_encoding(data)
    first = f"{source} is not valid utf-8 at byte offset {utf8_error}"
    if known is not None and codecs.lookup(known).name != "utf-8":
        first = f"{source} is valid neither in the run's encoding {known} nor in utf-8"
    if found.encoding is None:
        if not found.candidates:
            raise DataError(_binary_message(data, source, "no text encoding reads it"))
        listed = ", ".join(found.candidates[:5])
        why = (
            "too little of it is non-ASCII to tell its encoding"
            if found.reason == "short"
            else "its encoding cannot be told for sure"
        )
        raise DataError(
            f"{first}, and {why} (it could be {listed}); give it with --encoding, "
            f"e.g. --encoding {found.candidates[0]}"
        )
    try:
        text = data.decode(found.encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{first}; it starts like {found.encoding} text but is not valid {found.encoding} "
            f"at byte offset {exc.start}; give its encoding with --encoding"
        ) from None
    _notice(source, known, found.encoding, "detected")
    return DecodedText(text, found.encoding)


def _notice(source: str, known: str | None, used: str, how: str) -> None:
    """The one line that says a file is read in another encoding than UTF-8 (or the run's)."""
    if known is None or codecs.lookup(known).name == "utf-8":
        what = f"{source} is not UTF-8"
    elif used == "utf-8":
        what = f"{source} is UTF-8, not the run's {known}"
    else:
        what = f"{source} is not in the run's encoding {known}"
    log.warning("%s; reading it as %s (%s; give --encoding to override)", what, used, how)


def _drop_utf8_bom(data: bytes, encoding: str) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark when ``encoding`` is UTF-8."""
    if codecs.lookup(encoding).name.startswith("utf-8") and data.startswith(_UTF8_BOM):
        return data[len(_UTF8_BOM) :]
    return data


def _is_wide(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _binary_message(data: bytes, source: str, why: str) -> str:
    """The one-line refusal of a binary file (a known format is named, text is not suggested)."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return f"{source} looks binary ({kind}), not text; give a plain text file"
    return (
        f"{source} looks binary ({why}); give a plain text file, or if it is text, its "
        "encoding with --encoding"
    )


# ------------------------------------------------------------------------- wide encodings
def _wide_reading(data: bytes) -> DecodedText | None:
    """UTF-32 or UTF-16 without a byte-order mark: the reading (of the four byte orders and
    widths) that decodes to text without NUL characters, the one with the most ASCII characters
    (spaces, newlines, digits) when several do; None when none does (binary)."""
    widths = ["utf-32-le", "utf-32-be"] if len(data) % 4 == 0 else []
    widths += ["utf-16-le", "utf-16-be"] if len(data) % 2 == 0 else []
    best: DecodedText | None = None
    best_ascii = -1
    for codec in widths:
        text = _try_decode(data, codec)
        if text is None or "\x00" in text or not _is_text(text):
            continue
        ascii_chars = len(text.encode("ascii", "ignore"))
        if ascii_chars > best_ascii:
            best, best_ascii = DecodedText(text, codec), ascii_chars
    return best


# ------------------------------------------------------------------------- detection
def detect_encoding(data: bytes) -> Detection:
    """The encoding of bytes that are not UTF-8, judged on their beginning (about
    :data:`SAMPLE_BYTES`, cut after a line): confident when one reading is clearly the best and
    holds enough non-ASCII characters (:data:`MIN_NON_ASCII`, or :data:`MIN_NON_ASCII_LATIN` for
    Latin text; see the module doc)."""
    sample, readings = _sample_readings(data)
    if not readings:
        return Detection(None, (), "unknown")
    common = [r for r in readings if _is_common(r)] or readings
    others = [r for r in readings if all(r is not c for c in common)]
    best = common[0]
    if _is_latin(best.text):
        winner = _best_latin([r for r in common if _is_latin(r.text)], sample)
        if winner is None or not _looks_european(winner.text):
            return Detection(None, _names([*common, *others]), "ambiguous")
        fit = _alphabet_fit(winner.text)
        rivals = [r for r in common if not _is_latin(r.text) and _close(r, best)]
        rivals += [  # a legacy Mac or DOS reading that fits one language almost perfectly
            r
            for r in others
            if _is_latin(r.text) and _alphabet_fit(r.text) >= max(PERFECT_FIT, fit + 0.1)
        ]
        rivals += [r for r in others if not _is_latin(r.text) and _better(r, best)]
    else:
        winner = best
        rivals = [r for r in common[1:] if _close(r, winner)]
        rivals += [r for r in others if _better(r, winner)]
    names = _names([winner, *rivals, *common, *others])  # common encodings first
    enough = MIN_NON_ASCII_LATIN if _is_latin(winner.text) else MIN_NON_ASCII
    if _non_ascii(winner.text) < enough:
        return Detection(None, names, "short")
    if rivals:
        return Detection(None, names, "ambiguous")
    return Detection(winner.codec, names, "detected")


def _sample_readings(data: bytes) -> tuple[bytes, list[_Reading]]:
    """The sample detection judges and its readings. A long file is cut after a newline (a
    whole character in every ASCII-compatible encoding); a long file without one is cut
    anywhere, and a byte or three more when that splits a character."""
    if len(data) <= SAMPLE_BYTES:
        return data, _readings(data)
    line_end = data.rfind(b"\n", 0, SAMPLE_BYTES)
    if line_end > 0:
        sample = data[: line_end + 1]
        return sample, _readings(sample)
    for cut in range(SAMPLE_BYTES, SAMPLE_BYTES - 4, -1):
        readings = _readings(data[:cut])
        if readings:
            return data[:cut], readings
    return data[:SAMPLE_BYTES], []


def _readings(sample: bytes) -> list[_Reading]:
    """The plausible readings of ``sample``, codecs that read it alike merged, best first."""
    from charset_normalizer import from_bytes  # imported when needed: it takes a while

    by_text: dict[str, _Reading] = {}
    for matches in (from_bytes(sample), from_bytes(sample, cp_isolation=_ALWAYS_SCORED)):
        for match in matches:
            names = [match.encoding, *match.could_be_from_charset]
            if any(name in _WESTERN for name in names):
                choices: tuple[str, ...] = ("cp1252", "latin-1")
            else:
                choices = _PREFERRED.get(match.encoding, (match.encoding,))
            for codec in choices:
                text = _try_decode(sample, codec)
                if text is not None:
                    break
            else:
                continue
            if codec == "cp1252" and not any(0x80 <= b < 0xA0 for b in sample):
                codec = "latin-1"  # the two read it alike; latin-1 is the familiar name
            if not _is_text(text):
                continue
            seen = by_text.get(text)
            if seen is None:
                by_text[text] = _Reading(codec, text, match.chaos, match.coherence, {codec})
                continue
            seen.codecs.add(codec)
            seen.chaos = min(seen.chaos, match.chaos)
            seen.coherence = max(seen.coherence, match.coherence)
    for reading in by_text.values():
        reading.codec = _group_name(reading.codecs)
    return sorted(by_text.values(), key=lambda r: (r.chaos, -r.coherence, r.codec))


def _group_name(names: set[str]) -> str:
    """The name a group of codecs that read the bytes alike goes by."""
    normal = {n.replace("_", "-"): n for n in names}
    for preferred in _NAME_ORDER:
        if preferred in normal:
            return preferred
    if "latin-1" in names:
        return "latin-1"
    return sorted(names)[0].replace("_", "-")


def _names(readings: list[_Reading]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.codec for r in readings))


def _close(other: _Reading, best: _Reading) -> bool:
    """Whether ``other`` scores too near ``best`` for ``best`` to be trusted."""
    return (
        other.chaos - best.chaos < CHAOS_MARGIN
        and best.coherence - other.coherence < COHERENCE_MARGIN
    )


def _better(other: _Reading, best: _Reading) -> bool:
    """Whether ``other`` scores clearly better than ``best`` (an uncommon encoding that would
    otherwise be passed over)."""
    return best.chaos - other.chaos >= CHAOS_MARGIN or (
        best.chaos - other.chaos > -CHAOS_MARGIN
        and other.coherence - best.coherence >= COHERENCE_MARGIN
    )


def _is_common(reading: _Reading) -> bool:
    """Whether a file may be detected as ``reading``: its codec is in wide use today (legacy Mac,
    DOS and a few rare code pages are candidates only), and its text is not mostly half-width
    katakana (what Shift-JIS makes of Big5 or GBK bytes)."""
    name = codecs.lookup(reading.codec).name
    if name not in _COMMON and not name.startswith(("iso8859", "cp125", "utf-")):
        return False
    halfwidth = len(_HALFWIDTH_KATAKANA.findall(reading.text))
    return halfwidth <= 0.5 * _non_ascii(reading.text)


def _best_latin(latin: list[_Reading], sample: bytes) -> _Reading | None:
    """Among Latin-script readings, the one whose accented letters best fit one language's
    alphabet; Windows-1252 (or latin-1) wins a tie; None for a tie without it."""
    latin = list(latin)
    if not any(r.codec in ("cp1252", "latin-1") for r in latin):
        western = _western_reading(sample)
        if western is not None:
            latin.append(western)
    scored = sorted(((_alphabet_fit(r.text), r) for r in latin), key=lambda x: -x[0])
    top_fit = scored[0][0]
    tied = [r for fit, r in scored if top_fit - fit < FIT_MARGIN]
    if len(tied) == 1:
        return tied[0]
    western = [r for r in tied if r.codec in ("cp1252", "latin-1")]
    return western[0] if western else None


def _western_reading(sample: bytes) -> _Reading | None:
    """The Windows-1252 (or latin-1) reading, which charset-normalizer may have scored out:
    its mess scores cannot tell Western from Central European or Baltic text."""
    codec = "cp1252" if any(0x80 <= b < 0xA0 for b in sample) else "latin-1"
    text = _try_decode(sample, codec)
    if text is None or not _is_text(text) or not _is_latin(text):
        return None
    return _Reading(codec, text, 1.0, 0.0, {codec})


def _looks_european(text: str) -> bool:
    """Whether a Latin reading looks like a European language: its accented letters fit one
    alphabet at least half-way, and they are at most half of its characters (what a single-byte
    code page makes of CJK bytes is nearly all accented letters, of no one language)."""
    visible = len(text) - sum(text.count(ch) for ch in " \t\r\n")
    return _alphabet_fit(text) >= 0.5 and _non_ascii(text) <= 0.5 * max(visible, 1)


def _alphabet_fit(text: str) -> float:
    """The largest share of the non-ASCII letters of ``text`` that one language's alphabet
    holds (1.0 when there are none)."""
    counts: dict[str, int] = {}
    for ch in text:
        if ord(ch) >= 128 and ch.isalpha():
            low = ch.lower()
            counts[low] = counts.get(low, 0) + 1
    total = sum(counts.values())
    if not total:
        return 1.0
    return max(
        sum(n for ch, n in counts.items() if ch in alphabet) / total
        for alphabet in _ALPHABETS.values()
    )


def _is_latin(text: str) -> bool:
    """Whether every non-ASCII letter of ``text`` is a Latin one."""
    for ch in set(text):
        if ord(ch) < 128 or not ch.isalpha() or ch in _LATIN_EXTRA:
            continue
        if not unicodedata.name(ch, "").startswith("LATIN"):
            return False
    return True


def _non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


def _is_text(text: str) -> bool:
    """No C1 controls, unassigned, private-use or surrogate characters, and few C0 controls
    (tab, newlines, form feed, escape and the DOS end-of-file mark are whitespace here)."""
    if _C1.search(text):
        return False
    if len(_C0.findall(text)) > MAX_CONTROL * len(text):
        return False
    return not any(unicodedata.category(ch) in ("Cn", "Co", "Cs") for ch in set(text))


def _try_decode(data: bytes, codec: str) -> str | None:
    """``data`` decoded strictly, or None."""
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None
