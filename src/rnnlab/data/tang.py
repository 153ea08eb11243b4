"""The Tang corpus: complete Tang poems of chinese-poetry, parsed, cleaned and split.

:func:`clean_tang_poem` cleans one poem (its docstring gives the steps and what they drop);
:func:`load_tang` builds the corpus from the JSON files (one poem per line, optionally with
titles, simplified with OpenCC unless ``script="traditional"``; poems i with i % 20 == 18 to
valid, i % 20 == 19 to test) and keeps the result in the processed-text cache.

``poet="李白"`` keeps one author's poems (the records' ``author`` field; the name in either
script). The split stays the whole corpus's: a poet's poem is in valid or test exactly when it
is there in the full corpus, so a run on all the poems never trained on the test poems of a
poet-only run fine-tuned from it (``rnnlab train --init-from``). :func:`poet_poems` says which
poems are the poet's, and refuses an unknown name in one line with the close matches.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnnlab.atomic import write_atomic
from rnnlab.data.corpus import Corpus
from rnnlab.data.fetch import cache_dir
from rnnlab.data.registry import CorpusSpec
from rnnlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_TANG_PIPELINE_VERSION = 1
TITLE_SEP = ":"  # between a poem's title and its text; never in a cleaned title or poem
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


def _build_tang(
    paths: list[Path], *, script: str, titles: bool, poet: str | None = None
) -> tuple[dict[str, str], dict]:
    """Parse, clean, convert and split the Tang poems (see :func:`clean_tang_poem`); with
    ``poet``, keep that author's poems in the whole corpus's split (see :func:`poet_poems`)."""
    stats: Counter[str] = Counter()
    lines = []
    authors = []
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
                    text = f"{_clean_tang_title(poem.get('title', ''))}{TITLE_SEP}{text}"
                lines.append(text)
                author = poem.get("author")
                authors.append(author.strip() if isinstance(author, str) else "")
    if script == "simplified":
        # One call for all poems (newlines survive conversion); ~0.3 s for 3.4M characters.
        lines = to_simplified(lines)
    keep = range(len(lines)) if poet is None else poet_poems(authors, poet, script=script)
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i in keep:  # i: the poem's place in the whole corpus, which decides its split
        split = {18: "valid", 19: "test"}.get(i % 20, "train")
        splits[split].append(lines[i] + "\n")
    stats.update({f"poems_{k}": len(v) for k, v in splits.items()})
    if poet is not None:
        _check_poet_splits(poet, splits)
    return {k: "".join(v) for k, v in splits.items()}, dict(stats)


def run_title_sep(ckpt: Any) -> str | None:
    """The title separator of a checkpoint's model when it was trained on the tang corpus with
    titles (``title:poem`` lines), else None."""
    data = (ckpt.meta.get("run") or {}).get("data") or {}
    options = data.get("corpus_options") or {}
    titled = data.get("corpus") == "tang" and options.get("titles") is True
    return TITLE_SEP if titled else None


def to_simplified(texts: Sequence[str]) -> list[str]:
    """``texts`` converted to simplified characters by OpenCC (t2s), one call for all."""
    import opencc

    converted = opencc.OpenCC("t2s").convert("\n".join(texts)).split("\n")
    if len(converted) != len(texts):  # pragma: no cover - OpenCC keeps line breaks
        raise DataError("OpenCC changed the number of lines; use script='traditional'")
    return converted


POET_MATCH = 0.5  # difflib ratio of a close match: 李白 ~ 李百 is 0.5, 李白 ~ 李太白 0.8


def poet_poems(authors: Sequence[str], poet: str, *, script: str = "simplified") -> list[int]:
    """The indices of the poems whose author is ``poet``, compared in simplified characters (so
    李白, 王維 and 王维 are found whichever script the name is given in).

    Raises:
        ConfigError: no poem has that author: one line with up to five close matches (difflib
            on the names, shown in ``script`` with their number of poems), or, with none close,
            a few of the most prolific poets.
    """
    name = poet.strip() if isinstance(poet, str) else ""
    if not name or "\n" in name:
        raise ConfigError(f"--poet needs an author's name, got {poet!r}")
    wanted, *keys = to_simplified([name, *authors])
    found = [i for i, key in enumerate(keys) if key == wanted]
    if found:
        return found
    raise ConfigError(_unknown_poet(name, wanted, authors, keys, script))


def _unknown_poet(
    name: str, wanted: str, authors: Sequence[str], keys: Sequence[str], script: str
) -> str:
    """The one-line refusal of an unknown poet, with the close matches in ``script``."""
    counts = Counter(k for k in keys if k)
    shown: dict[str, Counter[str]] = {}  # simplified name -> the names as written, counted
    for author, key in zip(authors, keys, strict=True):
        shown.setdefault(key, Counter())[author if script == "traditional" else key] += 1

    def label(key: str) -> str:
        return f"{shown[key].most_common(1)[0][0]} ({counts[key]:,} poem{'s' * (counts[key] > 1)})"

    scores = {key: difflib.SequenceMatcher(None, wanted, key).ratio() for key in counts}
    close = sorted(
        (k for k, r in scores.items() if r >= POET_MATCH),
        key=lambda k: (-scores[k], -counts[k], k),
    )[:5]
    if close:
        return (
            f"no poet {name!r} in the tang corpus; close matches: "
            f"{', '.join(label(k) for k in close)}"
        )
    prolific = [label(k) for k, _ in counts.most_common(3)]
    return (
        f"no poet {name!r} in the tang corpus and no close match among its {len(counts):,} "
        f"authors (names in Chinese characters, e.g. {', '.join(prolific)})"
    )


def _check_poet_splits(poet: str, splits: dict[str, list[str]]) -> None:
    """Refuse a poet with no poem in one of the splits: nothing to validate or test on."""
    empty = [k for k in ("train", "valid", "test") if not splits[k]]
    if empty:
        n = sum(len(v) for v in splits.values())
        counts = ", ".join(f"{len(v)} {k}" for k, v in splits.items())
        raise DataError(
            f"poet {poet!r} has {n} poem{'s' * (n != 1)} in the tang corpus ({counts}; the "
            f"corpus holds out every 20th poem for valid and for test), none in "
            f"{' or '.join(empty)}; pick a poet with more poems"
        )


def load_tang(
    spec: CorpusSpec,
    files: Callable[[], dict[str, Path]],
    *,
    script: str = "simplified",
    titles: bool = False,
    poet: str | None = None,
) -> Corpus:
    """The Tang corpus, from the processed-text cache when possible (keyed by options,
    pipeline version and source checksums), else built from the JSON files and cached.

    ``poet``: keep that author's poems (see :func:`poet_poems`); the corpus is then named
    ``tang:<poet>``."""
    if script not in ("simplified", "traditional"):
        raise ConfigError(f"tang script must be 'simplified' or 'traditional', not '{script}'")
    if not isinstance(titles, bool):
        raise ConfigError(f"tang titles must be True or False, not {titles!r}")
    if poet is not None and not isinstance(poet, str):
        raise ConfigError(f"tang poet must be a name, not {poet!r}")
    key_fields = {
        "version": _TANG_PIPELINE_VERSION,
        "script": script,
        "titles": titles,
        "sources": [spec.sha256[rel] for rel in spec.files],
    }
    if poet is not None:  # absent otherwise: the whole corpus keeps its cache key
        key_fields["poet"] = to_simplified([poet.strip()])[0]
    key_source = json.dumps(key_fields, sort_keys=True)
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
            [paths[rel] for rel in spec.files], script=script, titles=titles, poet=poet
        )
        try:
            payload = json.dumps({"splits": splits, "stats": stats}, ensure_ascii=False)
            write_atomic(cached, payload.encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot write the processed cache %s (%s); continuing", cached, exc)
    name = "tang" if poet is None else f"tang:{poet.strip()}"
    sep = TITLE_SEP if titles else None
    return Corpus(name, "char", splits, script, spec.description, stats, title_sep=sep)
