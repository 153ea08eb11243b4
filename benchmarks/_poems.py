"""What the poem benchmarks share (``poem_scores.py``, ``poem_sheet.py``): a Tang run loaded for
inference, its held-out test poems with their titles, the five-character quatrains among them, and
poems generated for a list of titles with one decoding."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlab.config.run import RunConfig
from rnnlab.data.corpora import load_corpus
from rnnlab.data.tang import TITLE_SEP, run_title_sep
from rnnlab.data.vocab import Vocab
from rnnlab.generation.poem_score import poem_lines, score_poems
from rnnlab.generation.poetry import (
    Poem,
    PoemSpec,
    check_form,
    generate_poems,
    match_tone_pattern,
    shared_rhyme_group,
    split_lines,
)
from rnnlab.generation.sampling import SamplingConfig
from rnnlab.runs.load import load_model, load_run_config

TEMPERATURE = 0.8  # rnnlab poem's default


@dataclass
class TangRun:
    """A trained Tang run ready to score and write poems."""

    path: Path
    model: Any
    vocab: Vocab
    config: RunConfig
    title_sep: str | None  # None: trained without titles

    @property
    def titled(self) -> bool:
        return self.title_sep is not None


@dataclass
class HeldOut:
    """One poem of the run's test split: its line in the split (``index``), its place among
    the whole corpus's cleaned poems (``corpus_index``, 20 * index + 19; None for a one-poet run),
    its title and its text (one line)."""

    index: int
    corpus_index: int | None
    title: str
    text: str

    def lines(self) -> str:
        return poem_lines(self.text)


def load_tang_run(path: str | Path) -> TangRun:
    """The run's best weights, vocabulary and title separator; a run not trained on the Tang
    corpus at character level is refused."""
    config = load_run_config(path)
    if config.data.corpus != "tang" or (config.data.level or "char") != "char":
        raise SystemExit(f"{path} was not trained on the tang corpus at character level")
    model, vocab, ckpt = load_model(path)
    model.eval()
    return TangRun(Path(path), model, vocab, config, run_title_sep(ckpt))


def held_out_poems(run: TangRun) -> list[HeldOut]:
    """Every poem of the run's test split, read with its title (the split is the same with or
    without titles: poem i of the corpus is a test poem when i % 20 == 19)."""
    options = dict(run.config.data.corpus_options or {})
    options["titles"] = True
    corpus = load_corpus("tang", **options)
    whole = "poet" not in options
    out = []
    for k, line in enumerate(corpus.test.splitlines()):
        title, _, text = line.partition(TITLE_SEP)
        out.append(HeldOut(k, 20 * k + 19 if whole else None, title, text))
    return out


def is_five_quatrain(poem: HeldOut) -> bool:
    """Four lines of five characters (any line-ending marks)."""
    return [len(line) for line in split_lines(poem.text)] == [5] * 4


def in_form(poem: HeldOut) -> bool:
    """A five-character quatrain as generated poems are written: ，。，。, Chinese characters only,
    no line repeated (:func:`check_form`)."""
    return check_form(poem.lines(), 5, 4)


def readable_title(run: TangRun, title: str) -> bool:
    """Whether the run's model can be asked to write for ``title`` (every character known)."""
    title = title.strip()
    return bool(title) and all(ch in run.vocab.stoi and ch != TITLE_SEP for ch in title)


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n) without fixed points (Sattolo: one random cycle)."""
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@dataclass
class Decoding:
    """How poems are written: sampling at ``temperature``, the best of ``candidates`` samples,
    or a beam of width ``beam``; ``rhyme``/``tones`` constrain the poem."""

    candidates: int = 1
    beam: int = 0
    temperature: float = TEMPERATURE
    rhyme: bool = False
    tones: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more PoemSpec fields (acrostic, ...)

    def name(self) -> str:
        if self.beam:
            return f"beam {self.beam}"
        if self.candidates > 1:
            return f"best of {self.candidates} samples (temperature {self.temperature:g})"
        return f"sampling (temperature {self.temperature:g})"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"candidates": self.candidates, "beam": self.beam}
        if not self.beam:
            d["temperature"] = self.temperature
        d.update(rhyme=self.rhyme, tones=self.tones, **self.extra)
        return d


def write_poems(
    run: TangRun, titles: list[str | None], decoding: Decoding, seed: int
) -> list[Poem]:
    """One five-character quatrain per entry of ``titles``, poem i decoded with seed ``seed + i``.

    A titled model writes for each title (None: it draws its own); an untitled model ignores the
    titles: it writes all the poems in one batch (a beam then gives its distinct best poems, at
    most ``beam`` of them)."""
    cfg = SamplingConfig(temperature=decoding.temperature)
    common = {"cfg": cfg, "candidates": decoding.candidates, "beam": decoding.beam}
    spec_kw = dict(chars=5, lines=4, rhyme=decoding.rhyme, tones=decoding.tones, **decoding.extra)
    if not run.titled:
        n = min(len(titles), decoding.beam) if decoding.beam else len(titles)
        return generate_poems(
            run.model, run.vocab, PoemSpec(**spec_kw), count=n, seed=seed, **common
        )
    poems = []
    for i, title in enumerate(titles):
        spec = PoemSpec(title=title, **spec_kw)
        poems += generate_poems(
            run.model, run.vocab, spec, count=1, seed=seed + i, title_sep=run.title_sep, **common
        )
    return poems


def poem_record(text: str, title: str | None, score: float) -> dict[str, Any]:
    """One poem as the reports keep it: title, text on one line, score and the checkers."""
    lines = poem_lines(text)
    return {
        "title": title,
        "text": "".join(lines.split("\n")),
        "score": score,
        "form": check_form(lines, 5, 4),
        "rhyme_group": shared_rhyme_group(lines),
        "tone_pattern": match_tone_pattern(lines),
    }


def distinct_share(text: str) -> float:
    """Distinct characters over characters (punctuation aside): 1.0 when none repeats."""
    chars = "".join(split_lines(text))
    return len(set(chars)) / max(1, len(chars))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median score, perplexity per character and the checkers' pass rates of a set."""
    scores = [r["score"] for r in records]
    n = len(records)
    mean = statistics.fmean(scores)
    median = statistics.median(scores)
    return {
        "poems": n,
        "distinct_texts": len({r["text"] for r in records}),
        "mean_score": mean,
        "median_score": median,
        "perplexity": math.exp(-mean),
        "median_perplexity": math.exp(-median),
        "form": sum(r["form"] for r in records) / n,
        "rhyme": sum(r["rhyme_group"] is not None for r in records) / n,
        "tones": sum(r["tone_pattern"] is not None for r in records) / n,
        "distinct_char_share": statistics.fmean(distinct_share(r["text"]) for r in records),
    }


def rescore(run: TangRun, poems: list[Poem]) -> float:
    """The largest gap between each poem's score at generation and :func:`score_poems` (a check
    that both compute the same number)."""
    titles = [p.title for p in poems] if run.titled else None
    again = score_poems(run.model, run.vocab, [p.text for p in poems], titles, run.title_sep)
    return max(
        (abs(a - float(p.score or 0.0)) for a, p in zip(again, poems, strict=True)), default=0.0
    )
