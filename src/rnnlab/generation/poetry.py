"""Classical Chinese quatrains (绝句) and regulated verse (律诗) whose form is guaranteed.

**Form.** A poem has 4 (绝句) or 8 (律诗) lines of 5 (五言) or 7 (七言) characters; "，" follows
the odd lines and "。" the even ones. The form is not hoped for, it is built: decoding walks a
template in which the punctuation is placed by the template itself, and every character slot
is masked so that only Chinese characters (CJK Unified Ideographs) of the model's vocabulary can
be drawn: never ``<unk>``, punctuation, Latin letters or a newline. At the last slot of a line,
any character that would make the line identical to an earlier line is masked too, so no line
repeats another. Options: an acrostic (藏头诗: line k starts with the k-th given character), a
given first line, or given starting characters. Nothing is ever retried: one pass per poem, with
``count`` poems decoded as the rows of one batch. The model sees the text as the ``tang`` corpus
holds it: a newline, then the poem on one line (``床前明月光，疑是地上霜。...``).

**Prosody** (optional constraints), computed from *modern* Mandarin readings with ``pypinyin``.
This only approximates the Middle Chinese tones and rhymes the Tang poets wrote in: the entering
tone (入声) has merged into all four modern tones, and some rhymes have split or merged.

* Tones: tones 1-2 are level (平), tones 3-4 oblique (仄). A character fits a slot if ANY of its
  readings fits (polyphonic characters); neutral-tone readings are ignored when a character has a
  toned one; a character with no toned reading (or unknown to pypinyin) fits every slot.
* Tone patterns (平仄): the four standard quatrain patterns, built from the four line types
  (five-character form; the seven-character line puts the opposite of the first two tones in
  front, e.g. 平平 + 仄仄平平仄)::

      A 仄仄平平仄   B 平平仄仄平   C 平平平仄仄   D 仄仄仄平平

  The first line is one of A, B, C, D; the others follow the rules of opposition (对: lines
  2, 4, ... oppose the line before and rhyme) and adhesion (粘: lines 3, 5, ... repeat the
  second tone of the line before and do not rhyme): A B C D, D B C D, C D A B, B D A B; a
  律诗 goes on by the same rules (A B C D A B C D, D B C D A B C D, ...). They are named by
  the tone of the first line's second character (平起 / 仄起) and whether the first line
  ends level, i.e. rhymes (首句入韵). Positions 1 and 3 (五言) or 1, 3 and 5 (七言) are free
  (一三五不论); the finer rules (孤平, 三平尾) are not enforced.
* Rhyme: lines 2 and 4 (and 6, 8) end in characters of one rhyme group. Groups are the thirteen
  rhyme classes of northern Chinese (十三辙) by pinyin final (韵母), :data:`RHYME_GROUPS`; a
  character belongs to the group of each of its readings.

Constraints are enforced by masking at each slot: each poem keeps the set of tone patterns and
of rhyme groups still open to it; a slot allows the characters that fit any open pattern (and,
at a rhyme slot, any open group), and the drawn character closes the patterns and groups it does
not fit. Rhyme groups are open only if they have at least as many usable characters as the poem
has lines, so a slot can never be left empty; a request that cannot be met (too few characters,
a given first line that fits no tone pattern) fails before decoding with one
:class:`~rnnlab.errors.ConfigError` line. Each poem is then checked independently by
:func:`check_form`, :func:`check_rhyme` and :func:`check_tones`, and reports what it satisfies.

**Keywords** (``keywords="月,霜"``: single Chinese characters the poem must contain) are masks
too, so every poem holds every keyword. Before decoding, each keyword that no given character
(acrostic, first line, start) supplies gets a line of its own: in the order given, spread over
the poem, skipping lines none of whose free slots can take it; all keywords must fit under one
tone pattern and rhyme group together, or the request fails in one line. The model chooses
where in its line the keyword goes: at each free slot of the line the keyword may be drawn like
any character (the repetition penalty spares it until it is placed), while the other characters
are masked to those that keep it placeable at a later free slot: that keep open a tone pattern
under which a later free slot takes it (a rhyme slot only if it is in a rhyme group still open),
and that do not make the line a copy of an earlier one once the keyword must end it. At the last slot where it
can still go, it is forced. (Earlier lines need no care for it: a line after the given text has
its third slot free, which takes any character under every pattern.) :attr:`Poem.keywords`
reports the keywords found in the text (:func:`found_keywords`).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.generation.fast_step import make_stepper
from rnnlab.generation.sampling import SamplingConfig, make_generator, pick

COMMA, PERIOD = "，", "。"
LEVEL, OBLIQUE, EITHER = "平", "仄", "中"
LINE_BREAKS = "，。？！；：、\n"

# 十三辙: rhyme class -> pinyin finals (pypinyin's strict finals, ü written v; the short
# spellings iu / ui / un are listed too). 儿 (er) is counted in 一七, as is usual.
RHYME_GROUPS: dict[str, tuple[str, ...]] = {
    "发花": ("a", "ia", "ua"),
    "梭波": ("o", "e", "uo", "io"),
    "乜斜": ("ie", "ve", "ue", "ê"),
    "一七": ("i", "v", "er"),
    "姑苏": ("u",),
    "怀来": ("ai", "uai"),
    "灰堆": ("ei", "uei", "ui"),
    "遥条": ("ao", "iao"),
    "油求": ("ou", "iou", "iu"),
    "言前": ("an", "ian", "uan", "van"),
    "人辰": ("en", "in", "uen", "un", "vn"),
    "江阳": ("ang", "iang", "uang"),
    "中东": ("eng", "ing", "ong", "iong", "ueng"),
}

# five-character line types; the four first lines of the standard patterns
LINE_TYPES: dict[str, str] = {
    "A": "仄仄平平仄",
    "B": "平平仄仄平",
    "C": "平平平仄仄",
    "D": "仄仄仄平平",
}


# ---------------------------------------------------------------------------- characters


def is_hanzi(token: str) -> bool:
    """True for one character of the CJK Unified Ideographs blocks (main block and extensions)."""
    return len(token) == 1 and unicodedata.name(token, "").startswith("CJK UNIFIED IDEOGRAPH")


@functools.lru_cache(maxsize=65536)
def readings(char: str) -> tuple[tuple[str, int], ...]:
    """(final, tone) of every modern reading of ``char``; tone 0 is neutral. Empty if unknown."""
    from pypinyin import Style, pinyin

    if not is_hanzi(char):
        return ()
    rows = pinyin(
        char, style=Style.FINALS_TONE3, heteronym=True, neutral_tone_with_five=True, errors="ignore"
    )
    out = []
    for reading in rows[0] if rows else []:
        if reading and reading[-1].isdigit():
            tone = int(reading[-1])
            out.append((reading[:-1], 0 if tone == 5 else tone))
    return tuple(out)


def tone_classes(char: str) -> frozenset[str]:
    """{平}, {仄}, both (polyphonic) or empty (no toned reading known: fits any slot)."""
    tones = {t for _, t in readings(char) if t}
    return frozenset(LEVEL if t <= 2 else OBLIQUE for t in tones)


def fits_tone(char: str, required: str) -> bool:
    """Whether ``char`` may stand where the pattern asks for ``required`` (平, 仄 or 中)."""
    classes = tone_classes(char)
    return required == EITHER or not classes or required in classes


def rhyme_groups(char: str) -> frozenset[str]:
    """The rhyme groups (十三辙) of all readings of ``char``."""
    finals = {final for final, _ in readings(char)}
    return frozenset(g for g, members in RHYME_GROUPS.items() if finals & set(members))


# ---------------------------------------------------------------------------- tone patterns


def line_pattern(kind: str, chars: int) -> str:
    """The tones of a line of type A-D, 5 or 7 characters, with the free positions as 中."""
    five = LINE_TYPES[kind]
    tones = five if chars == 5 else "".join(_flip(t) for t in five[:2]) + five
    free = (0, 2) if chars == 5 else (0, 2, 4)
    return "".join(EITHER if i in free else t for i, t in enumerate(tones))


def line_types(first: str, lines: int) -> list[str]:
    """The line types of a poem opening with type ``first`` (rules of 对 and 粘)."""
    kinds = [first]
    for i in range(1, lines):
        prev = kinds[-1]
        if i % 2 == 1:  # an even line: opposes the one before and rhymes
            kinds.append({"A": "B", "C": "D", "B": "D", "D": "B"}[prev])
        else:  # an odd line: adheres to the one before, does not rhyme
            kinds.append({"B": "C", "D": "A"}[prev])
    return kinds


def tone_patterns(chars: int, lines: int) -> dict[str, list[str]]:
    """The four standard patterns: name -> one tone string (平/仄/中) per line."""
    out = {}
    for first in "ADCB":
        second = LINE_TYPES[first][1] if chars == 5 else _flip(LINE_TYPES[first][1])
        rhymes = LINE_TYPES[first][-1] == LEVEL
        name = f"{second}起首句{'入韵' if rhymes else '不入韵'}"
        out[name] = [line_pattern(k, chars) for k in line_types(first, lines)]
    return out


def _flip(tone: str) -> str:
    return LEVEL if tone == OBLIQUE else OBLIQUE


# ---------------------------------------------------------------------------- checkers


def split_lines(text: str) -> list[str]:
    """The lines of a poem written with punctuation and/or newlines, punctuation removed."""
    lines, current = [], []
    for ch in text:
        if ch in LINE_BREAKS:
            if current:
                lines.append("".join(current))
            current = []
        elif not ch.isspace():
            current.append(ch)
    if current:
        lines.append("".join(current))
    return lines


def check_form(
    text: str,
    chars: int,
    lines: int,
    *,
    acrostic: str | None = None,
    first_line: str | None = None,
) -> bool:
    """True iff ``text`` is exactly ``lines`` newline-separated lines of ``chars`` Chinese
    characters, "，" after odd and "。" after even lines, no line repeated, and the acrostic
    heads / first line as given."""
    rows = text.split("\n")
    if len(rows) != lines:
        return False
    bodies = []
    for k, row in enumerate(rows):
        body, punct = row[:-1], row[-1:]
        if punct != (COMMA if k % 2 == 0 else PERIOD) or len(body) != chars:
            return False
        if not all(is_hanzi(c) for c in body):
            return False
        bodies.append(body)
    if len(set(bodies)) != lines:
        return False
    if acrostic is not None and [b[0] for b in bodies] != list(acrostic):
        return False
    return first_line is None or bodies[0] == first_line


def shared_rhyme_group(text: str) -> str | None:
    """A rhyme group shared by the last characters of lines 2, 4, ... of ``text``, or None."""
    lines = split_lines(text)
    ends = [line[-1] for line in lines[1::2]]
    if not ends:
        return None
    common = set(RHYME_GROUPS)
    for ch in ends:
        common &= rhyme_groups(ch)
    return next((g for g in RHYME_GROUPS if g in common), None)


def check_rhyme(text: str) -> bool:
    """True iff lines 2, 4 (6, 8) of ``text`` end in characters of one rhyme group."""
    return shared_rhyme_group(text) is not None


def match_tone_pattern(text: str) -> str | None:
    """The name of the first standard tone pattern that ``text`` fits, or None.

    The poem must have 4 or 8 lines of 5 or 7 characters each.
    """
    lines = split_lines(text)
    if len(lines) not in (4, 8) or len({len(line) for line in lines}) != 1:
        return None
    chars = len(lines[0])
    if chars not in (5, 7):
        return None
    for name, pattern in tone_patterns(chars, len(lines)).items():
        if all(
            fits_tone(c, t)
            for line, tones in zip(lines, pattern, strict=True)
            for c, t in zip(line, tones, strict=True)
        ):
            return name
    return None


def check_tones(text: str) -> bool:
    """True iff ``text`` fits one of the four standard tone patterns (see module docstring)."""
    return match_tone_pattern(text) is not None


# ---------------------------------------------------------------------------- the request


@dataclass
class PoemSpec:
    """What to write.

    Attributes:
        chars: characters per line, 5 (五言) or 7 (七言).
        lines: 4 (绝句) or 8 (律诗).
        acrostic: one character per line: line k starts with the k-th (藏头诗).
        first_line: the whole first line (``chars`` characters; punctuation ignored).
        start: characters the poem starts with (may run past the first line; punctuation
            and whitespace ignored).
        rhyme: lines 2, 4 (6, 8) end in one rhyme group.
        tones: the poem follows one of the four standard tone patterns.
        title: the title to write for (a model trained with titles, e.g. ``tang-hour``).
        keywords: Chinese characters the poem must contain, one per line at most, separated
            by commas (``,`` ``，``), ``、`` or spaces: ``"月,霜"`` (see the module docstring).
    """

    chars: int = 5
    lines: int = 4
    acrostic: str | None = None
    first_line: str | None = None
    start: str | None = None
    rhyme: bool = False
    tones: bool = False
    title: str | None = None
    keywords: str | None = None

    def __post_init__(self) -> None:
        if self.chars not in (5, 7):
            raise ConfigError(f"a line has 5 or 7 characters (--form 5|7), not {self.chars}")
        if self.lines not in (4, 8):
            raise ConfigError(f"a poem has 4 or 8 lines (--lines 4|8), not {self.lines}")
        if self.acrostic is not None:
            heads = _strip(self.acrostic)
            if len(heads) != self.lines:
                other = f" or set --lines {len(heads)}" if len(heads) in (4, 8) else ""
                raise ConfigError(
                    f"the acrostic needs one character per line: {self.lines} characters for {self.lines} lines, got "
                    f"{len(heads)} ({heads!r}); give {self.lines}{other}"
                )
        if self.first_line is not None:
            line = _strip(self.first_line)
            if len(line) != self.chars:
                raise ConfigError(
                    f"the first line must have {self.chars} characters, got {len(line)} "
                    f"({line!r}); use --form {len(line)} if that is 5 or 7"
                )
            if self.start is not None:
                raise ConfigError("give a first line or starting characters, not both")
        if self.start is not None and len(_strip(self.start)) > self.chars * self.lines:
            raise ConfigError(
                f"the starting text is longer than the whole poem "
                f"({self.chars * self.lines} characters); shorten it"
            )
        if self.start is not None and not _strip(self.start):
            raise ConfigError("the starting text has no characters")
        if self.keywords is not None:
            _check_keywords(_keyword_items(self.keywords), self.lines)

    @property
    def keyword_chars(self) -> str:
        """The keywords, one character each, in the order given ("" without keywords)."""
        return "".join(_keyword_items(self.keywords)) if self.keywords is not None else ""

    def forced(self) -> dict[tuple[int, int], str]:
        """(line, position) -> the character the request fixes there."""
        fixed: dict[tuple[int, int], str] = {}
        prefix = _strip(self.first_line or self.start or "")
        for i, ch in enumerate(prefix):
            fixed[divmod(i, self.chars)] = ch
        for k, ch in enumerate(_strip(self.acrostic or "")):
            if fixed.get((k, 0), ch) != ch:
                raise ConfigError(
                    f"line {k + 1} cannot start with both {fixed[(k, 0)]!r} (given text) and "
                    f"{ch!r} (acrostic); make them agree"
                )
            fixed[(k, 0)] = ch
        return fixed


def _strip(text: str) -> str:
    return "".join(ch for ch in text if ch not in LINE_BREAKS and not ch.isspace())


KEYWORD_SEPARATORS = ",，、"


def _keyword_items(text: str) -> list[str]:
    """The items of a keyword list: split at commas, 、 and whitespace, empty items dropped."""
    for sep in KEYWORD_SEPARATORS:
        text = text.replace(sep, " ")
    return text.split()


def _check_keywords(items: list[str], lines: int) -> None:
    """One line of ConfigError for a keyword list a poem of ``lines`` lines cannot take."""
    if not items:
        raise ConfigError("--keywords needs at least one Chinese character, e.g. --keywords 月,霜")
    for item in items:
        if len(item) > 1:
            raise ConfigError(
                f"each keyword is one character, got {item!r}; split it: --keywords "
                + ",".join(dict.fromkeys(item))
            )
        if not is_hanzi(item):
            raise ConfigError(f"the keyword {item!r} is not a Chinese character; choose another")
    repeated = [ch for i, ch in enumerate(items) if ch in items[:i]]
    if repeated:
        raise ConfigError(f"the keyword {repeated[0]!r} is given twice; give each keyword once")
    if len(items) > lines:
        raise ConfigError(
            f"{len(items)} keywords for a poem of {lines} lines; a line takes one keyword: "
            f"give at most {lines}"
            + (" or set --lines 8" if lines == 4 and len(items) <= 8 else "")
        )


def found_keywords(text: str, keywords: str) -> str:
    """The characters of ``keywords`` that occur in the lines of ``text``, in their order."""
    body = "".join(split_lines(text))
    return "".join(ch for ch in keywords if ch in body)


@dataclass
class Poem:
    """A generated poem: ``lines`` (each with its punctuation), ``text`` (lines joined by
    newlines) and what the independent checkers say. ``keywords``: the requested keywords
    that the text contains (:func:`found_keywords`; None when none were requested)."""

    text: str
    lines: list[str]
    form: bool
    rhyme: bool
    tones: bool
    rhyme_group: str | None = None
    tone_pattern: str | None = None
    requested: dict[str, bool] = field(default_factory=dict)
    title: str | None = None
    score: float | None = None  # the model's mean log-probability per token, punctuation included
    keywords: str | None = None

    @property
    def satisfies(self) -> list[str]:
        names = [name for name in ("form", "rhyme", "tones") if getattr(self, name)]
        wanted = self.requested.get("keywords")
        if wanted and self.keywords == wanted:
            names.append("keywords")
        return names

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["satisfies"] = self.satisfies
        return d


# ---------------------------------------------------------------------------- the vocabulary


class VocabProsody:
    """Masks over a vocabulary (V,) for constrained decoding.

    ``hanzi``: single CJK ideographs (no specials, punctuation, Latin, newline); ``level`` /
    ``oblique``: hanzi that may stand at a 平 / 仄 slot; ``groups`` (G, V): hanzi in each
    rhyme group of :data:`RHYME_GROUPS` (in its order).
    """

    def __init__(self, vocab: Vocab) -> None:
        size = len(vocab)
        self.vocab = vocab
        self.hanzi = torch.zeros(size, dtype=torch.bool)
        self.level = torch.zeros(size, dtype=torch.bool)
        self.oblique = torch.zeros(size, dtype=torch.bool)
        self.group_names = list(RHYME_GROUPS)
        self.groups = torch.zeros(len(self.group_names), size, dtype=torch.bool)
        for i, token in enumerate(vocab.itos):
            if not is_hanzi(token):
                continue
            self.hanzi[i] = True
            self.level[i] = fits_tone(token, LEVEL)
            self.oblique[i] = fits_tone(token, OBLIQUE)
            for g in rhyme_groups(token):
                self.groups[self.group_names.index(g), i] = True

    def tone_mask(self, required: str) -> Tensor:
        """(V,) hanzi that fit ``required`` (平, 仄 or 中)."""
        return {LEVEL: self.level, OBLIQUE: self.oblique, EITHER: self.hanzi}[required]


# ---------------------------------------------------------------------------- decoding


@dataclass
class _Plan:
    """The template of one request, as tensors shared by every row of a batch."""

    spec: PoemSpec
    forced: dict[tuple[int, int], int]  # (line, pos) -> token id
    slot_masks: list[list[Tensor]]  # [line][pos] -> (P, V) allowed per tone pattern
    groups: Tensor  # (G, V) rhyme-group membership restricted to usable characters
    open_groups: Tensor  # (G,) groups big enough to rhyme a whole poem
    punct: tuple[int, int]  # ids of "，" and "。"
    context: int  # the id read before the poem
    # keywords (see _plan_keywords): line -> the id of the keyword decoding places there
    keywords: dict[int, int] = field(default_factory=dict)
    keyword_lines: dict[str, int] = field(default_factory=dict)  # keyword -> its line
    # line -> [pos] -> (P, G') the (pattern, group) pairs under which the line's keyword fits
    # a free slot after pos (G' = G with --rhyme, else 1)
    keyword_after: dict[int, list[Tensor]] = field(default_factory=dict)


def _plan(vocab: Vocab, spec: PoemSpec, prosody: VocabProsody | None = None) -> _Plan:
    """Check that ``spec`` can be met with ``vocab`` and lay out its masks.

    Raises ConfigError (one line) for any request that could leave a slot without an allowed
    character, so that decoding itself never fails or retries.
    """
    if vocab.level not in (None, "char"):
        raise ConfigError("rnnlab poem needs a character-level model; train one with --corpus tang")
    prosody = prosody or VocabProsody(vocab)
    n_hanzi = int(prosody.hanzi.sum())
    missing = [p for p in (COMMA, PERIOD) if p not in vocab.stoi]
    if n_hanzi < spec.lines or missing:
        raise ConfigError(
            f"this model's vocabulary has {n_hanzi} Chinese characters"
            + (f" and lacks {''.join(missing)}" if missing else "")
            + "; rnnlab poem needs a model trained on Chinese poems (e.g. --corpus tang)"
        )
    forced = {}
    for (line, pos), ch in spec.forced().items():
        if ch not in vocab.stoi or not is_hanzi(ch):
            what = (
                "is not a Chinese character"
                if not is_hanzi(ch)
                else "is not in the model's vocabulary"
            )
            raise ConfigError(f"{ch!r} {what}; choose other characters")
        forced[(line, pos)] = vocab.stoi[ch]
    _check_forced_lines(spec)

    patterns = (
        tone_patterns(spec.chars, spec.lines)
        if spec.tones
        else {"free": [EITHER * spec.chars] * spec.lines}
    )
    names = list(patterns)
    for required in (LEVEL, OBLIQUE) if spec.tones else (EITHER,):
        if int(prosody.tone_mask(required).sum()) < spec.lines:
            raise ConfigError(
                f"the vocabulary has fewer than {spec.lines} characters of tone {required}; "
                "drop --tones"
            )
    slot_masks = [
        [
            torch.stack([prosody.tone_mask(patterns[n][line][pos]) for n in names])
            for pos in range(spec.chars)
        ]
        for line in range(spec.lines)
    ]
    # patterns the given characters leave open (they form a prefix or stand at free heads)
    open_patterns = torch.ones(len(names), dtype=torch.bool)
    for (line, pos), token in forced.items():
        open_patterns &= slot_masks[line][pos][:, token]
    if not bool(open_patterns.any()):
        raise ConfigError(
            "the given characters fit none of the four tone patterns; drop --tones or change them"
        )
    for line in range(spec.lines):  # patterns the given text rules out are closed for all rows
        for pos in range(spec.chars):
            slot_masks[line][pos] = slot_masks[line][pos] & open_patterns.unsqueeze(1)

    rhyme_ok = prosody.level if spec.tones else prosody.hanzi  # rhyme slots are 平 in every pattern
    groups = prosody.groups & rhyme_ok
    open_groups = groups.sum(1) >= spec.lines
    if spec.rhyme:
        for line in range(1, spec.lines, 2):
            if (line, spec.chars - 1) in forced:
                open_groups &= groups[:, forced[(line, spec.chars - 1)]]
        if not bool(open_groups.any()):
            raise ConfigError(
                f"no rhyme group has {spec.lines} usable characters in this vocabulary"
                " (or the given text closes them); drop --rhyme"
            )
    context = vocab.stoi.get("\n", vocab.unk_id)
    plan = _Plan(
        spec,
        forced,
        slot_masks,
        groups,
        open_groups,
        (vocab.stoi[COMMA], vocab.stoi[PERIOD]),
        context,
    )
    if spec.keyword_chars:
        _plan_keywords(vocab, plan, open_patterns)
    return plan


def _plan_keywords(vocab: Vocab, plan: _Plan, open_patterns: Tensor) -> None:
    """Give each keyword that no given character supplies a line of its own, and lay out the
    masks that keep it placeable there (see the module docstring).

    Lines are assigned in the order the keywords are given, spread over the poem (keyword i
    of n aims at line i * lines / n), skipping lines where no free slot can take the keyword;
    all keywords must fit under one tone pattern and rhyme group together. Raises ConfigError
    (one line) for a keyword outside the vocabulary or one that cannot be placed.
    """
    spec = plan.spec
    chars = spec.keyword_chars
    for ch in chars:
        if ch not in vocab.stoi:
            raise ConfigError(
                f"the keyword {ch!r} is not in the model's vocabulary; choose another"
            )
    given = spec.forced()
    given_lines = {
        ch: min(k for (k, _), c in given.items() if c == ch) for ch in set(given.values())
    }
    plan.keyword_lines = {ch: given_lines[ch] for ch in chars if ch in given_lines}
    todo = [ch for ch in chars if ch not in given_lines]
    n_patterns = open_patterns.size(0)
    width = plan.groups.size(0) if spec.rhyme else 1
    open_pairs = open_patterns.unsqueeze(1) & (
        plan.open_groups.unsqueeze(0) if spec.rhyme else torch.ones(1, 1, dtype=torch.bool)
    )

    def fits(line: int, word: str) -> list[Tensor]:
        """[pos] -> (P, G') the pairs under which ``word`` may stand at (line, pos): none at a
        given slot. (A line given but for its last slot cannot become a copy of an earlier,
        given line by taking ``word``: ``word`` would then be given, so placed, already.)"""
        token = vocab.stoi[word]
        out = []
        for pos in range(spec.chars):
            ok = torch.zeros(n_patterns, width, dtype=torch.bool)
            if (line, pos) not in plan.forced:
                tones = plan.slot_masks[line][pos][:, token]
                if spec.rhyme and line % 2 == 1 and pos == spec.chars - 1:
                    ok = tones.unsqueeze(1) & plan.groups[:, token].unsqueeze(0)
                else:
                    ok = tones.unsqueeze(1).expand(-1, width).clone()
            out.append(ok)
        return out

    table = {(line, ch): fits(line, ch) for line in range(spec.lines) for ch in todo}
    anywhere = {key: torch.stack(v).any(0) & open_pairs for key, v in table.items()}
    for ch in todo:
        if not any(bool(anywhere[(line, ch)].any()) for line in range(spec.lines)):
            raise ConfigError(
                f"the keyword {ch!r} fits no free slot of any line ({_constraints(spec)}); "
                "choose another keyword or relax the constraints"
            )
    lines = _assign_lines(todo, spec.lines, set(plan.keyword_lines.values()), anywhere, open_pairs)
    if lines is None:
        raise ConfigError(
            f"the keywords {''.join(todo)} cannot all be placed, one per line, under one tone "
            f"pattern and rhyme group ({_constraints(spec)}); drop one or relax the constraints"
        )
    # Decoding need not keep the keywords of later lines placeable: the given text is a prefix
    # (and acrostic heads), so a line after it has its third slot free, which takes any
    # character in every tone pattern (一三五不论) and is no rhyme slot; the line the given
    # text ends in has only given characters before its free slots, so the plan's open
    # patterns and groups, checked here, are what every poem has there.
    for ch, line in zip(todo, lines, strict=True):
        slots = [slot.float() for slot in table[(line, ch)]]
        plan.keyword_lines[ch] = line
        plan.keywords[line] = vocab.stoi[ch]
        plan.keyword_after[line] = [
            torch.stack(slots[pos + 1 :]).amax(0) if pos + 1 < spec.chars else slots[0] * 0
            for pos in range(spec.chars)
        ]
    plan.keyword_lines = {ch: plan.keyword_lines[ch] for ch in chars}


def _constraints(spec: PoemSpec) -> str:
    """The constraints a keyword must fit, in words, for an error message."""
    parts = [name for name, on in (("--tones", spec.tones), ("--rhyme", spec.rhyme)) if on]
    if spec.acrostic or spec.first_line or spec.start:
        parts.append("the given characters")
    return "with " + " and ".join(parts) if parts else "every line is given"


def _assign_lines(
    todo: list[str],
    lines: int,
    taken: set[int],
    anywhere: dict[tuple[int, str], Tensor],
    open_pairs: Tensor,
) -> list[int] | None:
    """A distinct line for each keyword of ``todo`` under one (pattern, group) pair, as near
    as possible to keyword i's aim i * lines / n (lines whose given characters already hold a
    keyword come last); None if no pair admits one."""
    if not todo:
        return []
    aims = [int(i * lines / len(todo) + 0.5) for i in range(len(todo))]

    def cost(i: int, line: int) -> int:
        return abs(line - aims[i]) + (2 * lines if line in taken else 0)

    best: tuple[int, tuple[int, ...]] | None = None
    tried = set()
    for p, g in open_pairs.nonzero().tolist():
        options = tuple(
            tuple(line for line in range(lines) if bool(anywhere[(line, ch)][p, g])) for ch in todo
        )
        if options in tried:
            continue
        tried.add(options)
        costs = tuple(tuple(cost(i, line) for line in range(lines)) for i in range(len(todo)))
        found = _cheapest_matching(options, costs, 0, 0)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    return None if best is None else list(best[1])


@functools.lru_cache(maxsize=4096)
def _cheapest_matching(
    options: tuple[tuple[int, ...], ...], costs: tuple[tuple[int, ...], ...], i: int, used: int
) -> tuple[int, tuple[int, ...]] | None:
    """(total cost, lines) of the cheapest distinct choice of ``options[j]`` for j >= i, the
    lines in bit mask ``used`` excluded (the first cheapest on ties); None if there is none."""
    if i == len(options):
        return 0, ()
    found = None
    for line in options[i]:
        if used & (1 << line):
            continue
        tail = _cheapest_matching(options, costs, i + 1, used | (1 << line))
        if tail is not None and (found is None or costs[i][line] + tail[0] < found[0]):
            found = (costs[i][line] + tail[0], (line, *tail[1]))
    return found


def _check_forced_lines(spec: PoemSpec) -> None:
    """Lines fully given by the starting text must differ from each other."""
    given = _strip(spec.first_line or spec.start or "")
    full = [given[i : i + spec.chars] for i in range(0, len(given) - spec.chars + 1, spec.chars)]
    if len(set(full)) != len(full):
        raise ConfigError("the given text repeats a line; no line of a poem may repeat another")


def generate_poems(
    model: object,
    vocab: Vocab,
    spec: PoemSpec,
    *,
    count: int = 1,
    cfg: SamplingConfig | None = None,
    seed: int | None = None,
    batch_size: int = 256,
    dtype: torch.dtype | None = None,
    title_sep: str | None = None,
    candidates: int = 1,
    beam: int = 0,
) -> list[Poem]:
    """``count`` poems as ``spec`` asks, decoded in batches of ``batch_size`` rows.

    ``dtype`` (bf16 or int8, see :class:`rnnlab.generation.fast_step.FastStepper`) trades exact
    distributions for speed; the form constraints hold either way.

    Every poem has the exact form (see the module docstring); ``rhyme`` and ``tones`` are
    enforced when asked for, and so are ``spec.keywords``: each in the line the plan gives it,
    at a slot the model chooses (see the module docstring). Each poem reports the independent
    checks' verdicts and its :attr:`Poem.score`. ``cfg.repetition_penalty`` > 1 lowers the
    characters already in the poem (given ones included, punctuation aside) at each free slot,
    except a line's keyword until it is placed there.

    Titles: ``title_sep`` is the separator of a model trained on ``title<sep>poem`` lines
    (:data:`rnnlab.data.tang.TITLE_SEP`; None for a model trained without titles). Such a model
    writes for ``spec.title``, or, without one, for a title it draws itself (at most
    :data:`TITLE_MAX` characters), reported in :attr:`Poem.title`.

    ``candidates`` N > 1 draws N poems per poem asked for and keeps the one of highest
    :attr:`Poem.score`; ``beam`` W > 0 replaces sampling by a beam search of width W over the
    whole poem under the same constraints (the ``count`` best distinct poems of the final beam
    for one title; ``count`` may not exceed W then).
    """
    cfg = cfg or SamplingConfig()
    if count < 1 or batch_size < 1:
        raise ConfigError(f"count and batch size must be positive, got {count} and {batch_size}")
    if candidates < 1:
        raise ConfigError(f"--candidates must be at least 1, got {candidates}")
    if beam < 0:
        raise ConfigError(f"--beam must be positive, got {beam}")
    if beam and candidates > 1:
        raise ConfigError("give --candidates or --beam, not both")
    plan = _plan(vocab, spec)
    contexts = _title_contexts(vocab, spec, title_sep)  # checks the title before any work
    if hasattr(model, "eval"):
        model.eval()
    stepper = make_stepper(model, dtype=dtype)
    generator = make_generator(seed, stepper.device)
    if contexts is None:  # a titled model and no title given: the model draws one per poem
        titles = _draw_titles(stepper, vocab, title_sep or "", count, cfg, generator)
        jobs = [(t, _context_ids(vocab, t, title_sep), 1) for t in titles]
    else:
        title, ids = contexts
        if beam and count > beam:
            raise ConfigError(
                f"the beam keeps {beam} poems; --count {count} needs --beam {count} or more"
            )
        jobs = [(title, ids, count)]
    found: list[tuple[str | None, list[list[int]], float]] = []
    for title, ids, n in jobs:
        context = torch.tensor(ids, device=stepper.device)
        if beam:
            out, scores = _beam(stepper, plan, context, beam)
            picked = list(range(n))
        else:
            rows = n * candidates
            outs, score_parts = [], []
            for first in range(0, rows, batch_size):
                o, sc = _decode(
                    stepper, plan, context, min(batch_size, rows - first), cfg, generator
                )
                outs.append(o)
                score_parts.append(sc)
            out, scores = torch.cat(outs), torch.cat(score_parts)
            best = scores.view(n, candidates).argmax(dim=1)
            picked = (torch.arange(n, device=best.device) * candidates + best).tolist()
        tokens = plan.spec.lines * (plan.spec.chars + 1)
        for r in picked:
            found.append((title, out[r].tolist(), float(scores[r]) / tokens))
    return [_poem(vocab, spec, title, ids, score) for title, ids, score in found]


TITLE_MAX = 12  # the most characters of a title a model draws for itself


def _title_contexts(
    vocab: Vocab, spec: PoemSpec, title_sep: str | None
) -> tuple[str | None, list[int]] | None:
    """``(title, context ids)`` for one shared context, or None when the model is to draw a
    title for each poem. Refuses a title the model cannot read, in one line."""
    if spec.title is not None and title_sep is None:
        raise ConfigError(
            "this model was trained without titles; train one with titles "
            "(--preset tang-hour) or drop --title"
        )
    if title_sep is None:
        return None, [vocab.stoi.get("\n", vocab.unk_id)]
    if title_sep not in vocab.stoi or "\n" not in vocab.stoi:
        raise ConfigError(f"the model's vocabulary lacks the title separator {title_sep!r}")
    if spec.title is None:
        return None
    title = spec.title.strip()
    unknown = sorted({ch for ch in title if ch not in vocab.stoi or ch == title_sep})
    if not title or "\n" in title:
        raise ConfigError(f"--title needs a title on one line, got {spec.title!r}")
    if unknown:
        raise ConfigError(
            f"the title has characters the model does not know: {''.join(unknown)}; "
            "choose other characters"
        )
    return title, _context_ids(vocab, title, title_sep)


def _context_ids(vocab: Vocab, title: str | None, title_sep: str | None) -> list[int]:
    """A newline, then ``title`` and the separator for a titled model."""
    newline = vocab.stoi.get("\n", vocab.unk_id)
    if title is None or title_sep is None:
        return [newline]
    return [newline, *(vocab.stoi[ch] for ch in title), vocab.stoi[title_sep]]


def _draw_titles(
    stepper: Any,
    vocab: Vocab,
    title_sep: str,
    count: int,
    cfg: SamplingConfig,
    generator: torch.Generator,
) -> list[str]:
    """``count`` titles drawn from a titled model after a newline: Chinese characters until it
    draws the separator (not first), at most :data:`TITLE_MAX` of them."""
    device = stepper.device
    hanzi = torch.tensor([is_hanzi(t) for t in vocab.itos], dtype=torch.bool, device=device)
    sep = vocab.stoi[title_sep]
    newline = vocab.stoi.get("\n", vocab.unk_id)
    with torch.inference_mode():
        logits, state = stepper.start(torch.tensor([newline], device=device), count)
        titles: list[list[int]] = [[] for _ in range(count)]
        done = torch.zeros(count, dtype=torch.bool, device=device)
        for k in range(TITLE_MAX + 1):
            allowed = hanzi.expand(count, -1).clone()
            allowed[:, sep] = k > 0
            if k == TITLE_MAX:
                allowed[:] = False
                allowed[:, sep] = True
            token = pick(logits, cfg, generator, allowed)
            for r in torch.nonzero(~done & (token != sep)).flatten().tolist():
                titles[r].append(int(token[r]))
            done |= token == sep
            if bool(done.all()):
                break
            logits, state = stepper.step(token, state)
    return ["".join(vocab.itos[i] for i in ids) for ids in titles]


def _poem(
    vocab: Vocab, spec: PoemSpec, title: str | None, ids: list[list[int]], score: float
) -> Poem:
    """The :class:`Poem` of decoded ids, with the independent checks' verdicts."""
    lines = [
        "".join(vocab.itos[i] for i in row) + (COMMA if k % 2 == 0 else PERIOD)
        for k, row in enumerate(ids)
    ]
    text = "\n".join(lines)
    heads = _strip(spec.acrostic) if spec.acrostic else None
    first = _strip(spec.first_line) if spec.first_line else None
    group, pattern = shared_rhyme_group(text), match_tone_pattern(text)
    return Poem(
        text=text,
        lines=lines,
        form=check_form(text, spec.chars, spec.lines, acrostic=heads, first_line=first),
        rhyme=group is not None,
        tones=pattern is not None,
        rhyme_group=group,
        tone_pattern=pattern,
        requested={"rhyme": spec.rhyme, "tones": spec.tones, "keywords": spec.keyword_chars},
        title=title,
        score=score,
        keywords=found_keywords(text, spec.keyword_chars) if spec.keyword_chars else None,
    )


class _Rows:
    """The decoding state of B poems, every tensor with the rows first, so that a beam can
    keep and reorder rows (:meth:`select`): the ids so far, the tone patterns and rhyme groups
    still open to each poem, the characters the repetition penalty counts, and the model's
    log-probability of each poem so far (punctuation included)."""

    def __init__(
        self, p: _Plan, batch: int, cfg: SamplingConfig | None, vocab_size: int, device: Any
    ):
        spec = p.spec
        self.out = torch.zeros(batch, spec.lines, spec.chars, dtype=torch.long, device=device)
        self.patterns = torch.ones(batch, p.slot_masks[0][0].size(0), device=device)  # (B, P)
        self.groups = p.open_groups.to(device).float().expand(batch, -1).clone()  # (B, G)
        self.seen = None if cfg is None else cfg.seen_tokens([], batch, vocab_size, device)
        self.logp = torch.zeros(batch, dtype=torch.float64, device=device)

    def select(self, index: Tensor) -> None:
        self.out, self.patterns, self.groups = (
            self.out[index],
            self.patterns[index],
            self.groups[index],
        )
        self.logp = self.logp[index]
        if self.seen is not None:
            self.seen.select(index)

    def allowed(self, p: _Plan, line: int, pos: int) -> Tensor:
        """(B, V) the characters each poem may take at a free slot."""
        spec = p.spec
        masks = p.slot_masks[line][pos].to(self.out.device)
        last = pos == spec.chars - 1
        rhyme_slot = spec.rhyme and line % 2 == 1 and last
        if p.keywords:
            allowed = self._keyword_allowed(p, line, pos, masks, rhyme_slot)
        else:
            allowed = (self.patterns @ masks.float()) > 0
            if rhyme_slot:
                allowed &= (self.groups @ p.groups.to(self.out.device).float()) > 0
        if last and line > 0:
            _forbid_repeats(allowed, self.out[:, :line], self.out[:, line, :pos])
        if not bool(allowed.any(dim=1).all()):  # excluded by _plan(); never retried
            raise RnnlabError(
                f"no character fits line {line + 1}, position {pos + 1}; relax the constraints"
            )
        return allowed

    def pending(self, p: _Plan, line: int, pos: int) -> Tensor:
        """(B,) bool: the keyword of ``line`` is not yet in the line's first ``pos`` slots."""
        word = p.keywords[line]
        return ~(self.out[:, line, :pos] == word).any(dim=1)

    def repeats(self, p: _Plan, line: int, pos: int) -> Tensor | None:
        """(B, V) the characters the repetition penalty lowers at (line, pos): those in the
        poem, except the line's keyword while it is still to be placed; None when off."""
        if self.seen is None:
            return None
        seen = self.seen.seen
        if line not in p.keywords:
            return seen
        seen = seen.clone()
        seen[:, p.keywords[line]] &= ~self.pending(p, line, pos)
        return seen

    def _keyword_allowed(
        self, p: _Plan, line: int, pos: int, masks: Tensor, rhyme_slot: bool
    ) -> Tensor:
        """(B, V) :meth:`allowed` with keywords: a character is allowed if some (pattern,
        group) pair still open to the poem takes it here and leaves the line's keyword, while
        still to be placed, a later free slot (unless the character is the keyword itself)."""
        device = self.out.device
        batch = self.out.size(0)
        groups = self.groups if p.spec.rhyme else self.groups.new_ones(batch, 1)
        members = p.groups.to(device)
        pairs = self.patterns.unsqueeze(2) * groups.unsqueeze(1)  # (B, P, G')
        word = p.keywords.get(line)
        if word is None:
            return _fitting(pairs, masks, members, rhyme_slot)
        pending = self.pending(p, line, pos)
        later = pairs * p.keyword_after[line][pos].to(device)
        allowed = _fitting(
            torch.where(pending.view(-1, 1, 1), later, pairs), masks, members, rhyme_slot
        )
        here = _fitting(pairs, masks[:, word : word + 1], members[:, word : word + 1], rhyme_slot)
        allowed[:, word] |= pending & here[:, 0]
        if pos == p.spec.chars - 2 and line > 0:
            _forbid_keyword_repeats(
                allowed, self.out[:, :line], self.out[:, line, :pos], word, pending
            )
        return allowed

    def push(self, p: _Plan, line: int, pos: int, token: Tensor, logits: Tensor) -> None:
        """Write ``token`` (B,) at (line, pos), scored under ``logits`` (B, V)."""
        spec = p.spec
        self.logp += _logprob(logits, token)
        self.out[:, line, pos] = token
        if self.seen is not None:
            self.seen.push(token)
        masks = p.slot_masks[line][pos].to(self.out.device)
        self.patterns = self.patterns * masks[:, token].t().float()
        if spec.rhyme and line % 2 == 1 and pos == spec.chars - 1:
            self.groups = self.groups * p.groups.to(self.out.device).float()[:, token].t()


def _fitting(pairs: Tensor, masks: Tensor, members: Tensor, rhyme_slot: bool) -> Tensor:
    """(B, V') the characters that fit a slot under some (pattern, group) pair of ``pairs``
    (B, P, G'): ``masks`` (P, V') per pattern, ``members`` (G, V') per group (rhyme slots)."""
    if not rhyme_slot:
        return (pairs.amax(dim=2) @ masks.float()) > 0
    out = torch.zeros(pairs.size(0), masks.size(1), dtype=torch.bool, device=pairs.device)
    for k in range(pairs.size(1)):
        out |= ((pairs[:, k] @ members.float()) > 0) & masks[k]
    return out


def _forbid_keyword_repeats(
    allowed: Tensor, earlier: Tensor, prefix: Tensor, word: int, pending: Tensor
) -> None:
    """Mask (in place) the next-to-last characters that would force a repeated line.

    A poem still to place ``word`` in this line must put it in the last slot if it draws
    anything else now; where an earlier line (of ``earlier`` (B, K, C)) starts like ``prefix``
    (B, C-2) and ends in ``word``, the character it has here would make the line its copy.
    """
    same = (earlier[:, :, :-2] == prefix.unsqueeze(1)).all(dim=2)
    same &= (earlier[:, :, -1] == word) & pending.unsqueeze(1)
    rows, k = same.nonzero(as_tuple=True)
    chars = earlier[rows, k, -2]
    other = chars != word
    allowed[rows[other], chars[other]] = False


def _logprob(logits: Tensor, token: Tensor) -> Tensor:
    """(B,) the model's log-probability of ``token`` (B,) under ``logits`` (B, V)."""
    return torch.log_softmax(logits.double(), dim=-1).gather(1, token.view(-1, 1)).squeeze(1)


def _decode(
    stepper: Any,
    p: _Plan,
    context: Tensor,
    batch: int,
    cfg: SamplingConfig,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Sample ``batch`` poems along the template after ``context``; returns ids (B, lines,
    chars) and each poem's log-probability under the model (B,), its punctuation included."""
    spec = p.spec
    device = stepper.device
    with torch.inference_mode():
        logits, state = stepper.start(context, batch)
        rows = _Rows(p, batch, cfg, logits.size(-1), device)
        for line in range(spec.lines):
            for pos in range(spec.chars):
                forced = p.forced.get((line, pos))
                if forced is not None:
                    token = torch.full((batch,), forced, dtype=torch.long, device=device)
                else:
                    repeats = rows.repeats(p, line, pos)  # (B, V) or None
                    token = pick(logits, cfg, generator, rows.allowed(p, line, pos), repeats)
                rows.push(p, line, pos, token, logits)
                logits, state = stepper.step(token, state)
            punct = torch.full((batch,), p.punct[line % 2], dtype=torch.long, device=device)
            rows.logp += _logprob(logits, punct)
            if line + 1 < spec.lines:
                logits, state = stepper.step(punct, state)
    return rows.out, rows.logp


def _beam(stepper: Any, p: _Plan, context: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Beam search of ``width`` over the whole poem under the plan's constraints (the same
    masks as sampling: every hypothesis keeps the form, rhyme and tones asked for). Returns the
    final beam's ids (W, lines, chars) and log-probabilities (W,), best first."""
    spec = p.spec
    device = stepper.device
    with torch.inference_mode():
        logits, state = stepper.start(context, width)
        rows = _Rows(p, width, None, logits.size(-1), device)
        rows.logp[1:] = float("-inf")  # the rows start equal: expand the first only
        for line in range(spec.lines):
            for pos in range(spec.chars):
                forced = p.forced.get((line, pos))
                if forced is not None:
                    token = torch.full((width,), forced, dtype=torch.long, device=device)
                else:
                    logp = torch.log_softmax(logits.double(), dim=-1)
                    logp = logp.masked_fill(~rows.allowed(p, line, pos), float("-inf"))
                    total = (rows.logp.unsqueeze(1) + logp).view(-1)
                    best = total.topk(width)  # (W,) over rows x vocabulary
                    # fewer than W allowed continuations (a forced keyword, a narrow slot):
                    # the rest copy the best one and stay dead, so no row holds a masked token
                    dead = torch.isinf(best.values)
                    top = torch.where(dead, best.indices[0], best.indices)
                    keep, token = top // logits.size(-1), top % logits.size(-1)
                    rows.select(keep)
                    rows.logp[dead] = float("-inf")
                    state = stepper.select(state, keep)
                    logits = logits[keep]
                rows.push(p, line, pos, token, logits)
                logits, state = stepper.step(token, state)
            punct = torch.full((width,), p.punct[line % 2], dtype=torch.long, device=device)
            rows.logp += _logprob(logits, punct)
            if line + 1 < spec.lines:
                logits, state = stepper.step(punct, state)
    order = rows.logp.argsort(descending=True)
    return rows.out[order], rows.logp[order]


def _forbid_repeats(allowed: Tensor, earlier: Tensor, prefix: Tensor) -> None:
    """Mask (in place) the last characters that would repeat an earlier line.

    ``earlier`` (B, K, C) are the finished lines, ``prefix`` (B, C-1) the current line so far:
    where an earlier line starts with the same C-1 characters, its last character is banned.
    """
    same = (earlier[:, :, :-1] == prefix.unsqueeze(1)).all(dim=2)  # (B, K)
    rows, k = same.nonzero(as_tuple=True)
    allowed[rows, earlier[rows, k, -1]] = False
