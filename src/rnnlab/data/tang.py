"""The Tang corpus: complete Tang poems of chinese-poetry, parsed, cleaned and split.

:func:`clean_tang_poem` cleans one poem (its docstring gives the steps and what they drop);
:func:`load_tang` builds the corpus from the JSON files (one poem per line, optionally with
titles, simplified with OpenCC unless ``script="traditional"``; poems i with i % 20 == 18 to
valid, i % 20 == 19 to test) and keeps the result in the processed-text cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rnnlab.atomic import write_atomic
from rnnlab.data.corpus import Corpus
from rnnlab.data.fetch import cache_dir
from rnnlab.data.registry import CorpusSpec
from rnnlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_TANG_PIPELINE_VERSION = 1
_NOTE = re.compile(r"（[^（）]*）|\([^()]*\)")  # innermost variant-reading note
_UNCLOSED_NOTE = re.compile(r"[（(].*$")  # a note opened and never closed: runs to the end
_COMPOSED = re.compile(r"[{}]")  # {木/目}: a character described by parts, not encodable
_FOOTNOTE = re.compile(r"〖[^〖〗]*〗|[\[［][一二三四五六七八九十百○〇]+[\]］]")  # [三], 〖1〗
_LOST = re.compile("[□■●○〇◯\ufffd\u2ff0-\u2fff\ue000-\uf8ff\U000f0000-\U0010ffff]")
_PUNCT = "，。？！；：、"
_PUNCT_RUN = re.compile(f"[{_PUNCT}]{{2,}}")
_NOT_POEM_TEXT = re.compile(
    f"[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f{_PUNCT}「」『』《》〈〉·…—]"
)


def clean_tang_poem(paragraphs: list[str]) -> tuple[str | None, str]:
    """Clean one poem's text; return ``(text, "kept")`` or ``(None, reason)`` if dropped.

    The steps, in order, and why:

    1. join the ``paragraphs`` and delete whitespace;
    2. delete editorial notes in ``（…）`` / ``(...)`` (variant readings such as
       ``（一作「叉」）``, sources, commentary), innermost first so nested notes go too; a
       note opened and never closed runs to the end of the poem and is cut there;
    3. drop the poem if it contains ``{…}``: an ideographic description of a character that
       Unicode lacks (e.g. ``{𥫗/戢}``) - deleting it would break the line's meter;
    4. delete footnote markers ``〖1〗``, ``[三]``; unwrap other ``[…]`` / ``［…］``: they mark
       characters restored by the editors (e.g. ``[爽]節在重九``) and are part of the line;
    5. drop the poem if it has a lost-character or placeholder mark: ``□`` (407 poems),
       ``●``, ``○``, ``■``, ideographic description characters (``⿰``), private-use code points;
    6. collapse runs of punctuation left where a note was removed (``。。`` -> ``。``) and strip
       leading punctuation;
    7. drop the poem if anything but CJK ideographs and Chinese punctuation is left (stray
       ``/``, ``-``, full-width Latin letters), or if nothing is left (poems that were only
       notes).

    On the pinned upstream (57,607 poems) this keeps 56,850 and drops 430 for lost or
    placeholder characters, 124 for ``{…}`` composed characters, 6 for other marks and 197
    that are empty once notes are removed. ``Corpus.stats`` reports these counts on each load.
    """
    text = re.sub(r"\s+", "", "".join(paragraphs))
    while True:
        shorter = _NOTE.sub("", text)
        if shorter == text:
            break
        text = shorter
    text = _UNCLOSED_NOTE.sub("", text).replace("）", "").replace(")", "")
    if _COMPOSED.search(text):
        return None, "composed_character"
    text = _FOOTNOTE.sub("", text)
    text = re.sub(r"[\[\]［］]", "", text)
    if _LOST.search(text):
        return None, "lost_character"
    text = _PUNCT_RUN.sub(lambda m: m.group()[-1], text).lstrip(_PUNCT)
    if _NOT_POEM_TEXT.search(text):
        return None, "other_marks"
    if not text:
        return None, "empty"
    return text, "kept"


def _clean_tang_title(title: str) -> str:
    title = _NOTE.sub("", title)
    title = re.sub(r"[\[\]［］{}:：]", "", title)
    return re.sub(r"\s+", " ", title).strip()


def _build_tang(paths: list[Path], *, script: str, titles: bool) -> tuple[dict[str, str], dict]:
    """Parse, clean, convert and split the Tang poems (see :func:`clean_tang_poem`)."""
    stats: Counter[str] = Counter()
    lines = []
    for path in paths:
        try:
            poems = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not valid UTF-8 JSON ({exc}); replace the file") from None
        for poem in poems:
            stats["poems_total"] += 1
            text, verdict = clean_tang_poem(poem.get("paragraphs", []))
            stats[verdict if text is not None else f"dropped_{verdict}"] += 1
            if text is not None:
                if titles:
                    text = f"{_clean_tang_title(poem.get('title', ''))}:{text}"
                lines.append(text)
    if script == "simplified":
        import opencc

        # One call for all poems (newlines survive conversion); ~0.3 s for 3.4M characters.
        converted = opencc.OpenCC("t2s").convert("\n".join(lines)).split("\n")
        if len(converted) != len(lines):  # pragma: no cover - OpenCC keeps line breaks
            raise DataError("OpenCC changed the number of poems; use script='traditional'")
        lines = converted
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, line in enumerate(lines):
        split = {18: "valid", 19: "test"}.get(i % 20, "train")
        splits[split].append(line + "\n")
    stats.update({f"poems_{k}": len(v) for k, v in splits.items()})
    return {k: "".join(v) for k, v in splits.items()}, dict(stats)


def load_tang(
    spec: CorpusSpec,
    files: Callable[[], dict[str, Path]],
    *,
    script: str = "simplified",
    titles: bool = False,
) -> Corpus:
    """The Tang corpus, from the processed-text cache when possible (keyed by options,
    pipeline version and source checksums), else built from the JSON files and cached."""
    if script not in ("simplified", "traditional"):
        raise ConfigError(f"tang script must be 'simplified' or 'traditional', not '{script}'")
    if not isinstance(titles, bool):
        raise ConfigError(f"tang titles must be True or False, not {titles!r}")
    key_source = json.dumps(
        {
            "version": _TANG_PIPELINE_VERSION,
            "script": script,
            "titles": titles,
            "sources": [spec.sha256[rel] for rel in spec.files],
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    cached = cache_dir() / "processed" / f"tang-{key}.json"
    splits = stats = None
    if cached.is_file():
        try:
            payload = json.loads(cached.read_text(encoding="utf-8"))
            splits, stats = payload["splits"], payload["stats"]
        except (ValueError, KeyError, OSError):
            logger.warning("processed cache %s is unreadable; rebuilding it", cached)
    if splits is None or stats is None:
        paths = files()
        splits, stats = _build_tang(
            [paths[rel] for rel in spec.files], script=script, titles=titles
        )
        try:
            payload = json.dumps({"splits": splits, "stats": stats}, ensure_ascii=False)
            write_atomic(cached, payload.encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot write the processed cache %s (%s); continuing", cached, exc)
    return Corpus("tang", "char", splits, script, spec.description, stats)
