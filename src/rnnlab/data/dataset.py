"""From a data config to id streams: corpus -> tokenizer -> vocabulary -> 1-D id tensors.

This is the one place that turns "which text" (a named corpus, a local file, or the offline
default) into the three token-id streams the trainer and evaluator consume. The vocabulary is
built on the training split only, or taken from a checkpoint so ids mean the same thing later.
A piano-roll corpus (``jsb``, ``nottingham``, ``musedata``, ``pianomidi``) gives a
:class:`rnnlab.data.rolls.RollData` instead: lists of frames, no tokenizer, no vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnlab.data.corpora import load_corpus
from rnnlab.data.corpus import Corpus
from rnnlab.data.default_corpus import DEFAULT_CORPUS, default_corpus
from rnnlab.data.encodings import AUTO, check_encoding
from rnnlab.data.registry import is_pianoroll
from rnnlab.data.rolls import RollData, fraction_pieces, load_rolls
from rnnlab.data.text_files import load_text_file
from rnnlab.data.vocab import Vocab, build_vocab, make_tokenizer
from rnnlab.errors import ConfigError, DataError
from rnnlab.strict import from_fields

log = logging.getLogger(__name__)

LEVELS = ("char", "word")


@dataclass
class DataConfig:
    """Which text to model and how to cut it into tokens.

    Attributes:
        corpus: a named corpus (``rnnlab corpora`` lists them); None with no ``text`` means the
            offline default, Tiny Shakespeare, shipped inside the package
            (:mod:`rnnlab.data.default_corpus`).
        text: a local text file, split by ``valid_fraction`` / ``test_fraction`` unless
            ``valid_text`` / ``test_text`` are given.
        encoding: of the text files: ``"auto"`` (UTF-8, else detected, with a one-line
            notice) or a codec name, honoured exactly. A run records the codec its text was
            read with here; read back from a run (``load_data(..., policy="recorded")``) that
            codec is tried first and detection takes over when it fails.
        level: "char" or "word"; None takes the corpus's natural level.
        min_count, max_vocab: vocabulary limits (rarer symbols become ``<unk>``).
        data_fraction: train on the first fraction of the training split (data-size studies).
        corpus_options: extra options of a named corpus (e.g. ``{"script": "traditional"}``).
    """

    corpus: str | None = None
    text: str | None = None
    valid_text: str | None = None
    test_text: str | None = None
    encoding: str = AUTO
    level: str | None = None
    min_count: int = 1
    max_vocab: int | None = None
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    max_chars: int | None = None
    data_fraction: float = 1.0
    corpus_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.corpus is not None and self.text is not None:
            raise ConfigError("give either --corpus or --text, not both")
        if (self.corpus_options or {}).get("poet") is not None and self.corpus != "tang":
            raise ConfigError(
                f"--poet keeps one poet's poems of the tang corpus; {self.describe()} has no "
                "poets: use --corpus tang or drop --poet"
            )
        check_encoding(self.encoding)
        if self.level is not None and self.level not in LEVELS:
            raise ConfigError(f"unknown level {self.level!r}; choose char or word")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ConfigError(f"data fraction must be in (0, 1], got {self.data_fraction}")
        if self.min_count < 1:
            raise ConfigError(f"min count must be at least 1, got {self.min_count}")
        if self.max_vocab is not None and self.max_vocab < 2:
            raise ConfigError(f"max vocabulary size must be at least 2, got {self.max_vocab}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """The config ``data`` describes (missing keys take their defaults); an unknown key or a
        value of the wrong type is a one-line :class:`ConfigError` naming it."""
        return from_fields(cls, data, section="data")

    def describe(self) -> str:
        if self.text:
            return self.text
        return self.corpus or f"{DEFAULT_CORPUS} (offline default)"


@dataclass
class LMData:
    """Token-id streams of the three splits with the vocabulary that maps them; ``encoding``
    is the codec a local text file was read with (None for a named or the default corpus).

    ``unscored`` maps a split to a (N,) bool mask of the tokens evaluation gives as context
    but does not score (the titles of a titled Tang corpus, :func:`title_mask`); a split not
    in it is scored whole."""

    name: str
    level: str
    vocab: Vocab
    train: Tensor  # (N_train,) int64
    valid: Tensor  # (N_valid,)
    test: Tensor  # (N_test,)
    encoding: str | None = None
    unscored: dict[str, Tensor] = field(default_factory=dict)

    def split(self, name: str) -> Tensor:
        if name not in ("train", "valid", "test"):
            raise ConfigError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)


def load_text(cfg: DataConfig, *, policy: str = "given") -> Corpus:
    """The raw text of the three splits that ``cfg`` names; ``policy`` says whose choice its
    ``encoding`` is (see :func:`rnnlab.data.encodings.decode_text`)."""
    if cfg.text is not None:
        return load_text_file(
            cfg.text,
            encoding=cfg.encoding,
            policy=policy,
            valid_fraction=cfg.valid_fraction,
            test_fraction=cfg.test_fraction,
            valid_path=cfg.valid_text,
            test_path=cfg.test_text,
            level=cfg.level or "char",
        )
    if cfg.corpus is not None:
        return load_corpus(cfg.corpus, **(cfg.corpus_options or {}))
    if cfg.max_chars is not None:
        return default_corpus(max_chars=cfg.max_chars)
    return default_corpus()


def load_roll_data(cfg: DataConfig) -> RollData:
    """The piano rolls of a music corpus; ``data_fraction`` keeps the first training pieces.

    ``corpus_options`` may hold ``{"start_frame": True}`` (see :mod:`rnnlab.data.rolls`).
    """
    if cfg.level is not None:
        raise ConfigError(f"corpus '{cfg.corpus}' holds piano rolls; drop --level {cfg.level}")
    options = dict(cfg.corpus_options or {})
    unknown = sorted(set(options) - {"start_frame"})
    if unknown:
        raise ConfigError(
            f"corpus '{cfg.corpus}' has no option {', '.join(unknown)}; options it accepts: "
            "start_frame"
        )
    data = load_rolls(str(cfg.corpus), **options)
    if cfg.data_fraction < 1.0:
        data.train = fraction_pieces(data.train, cfg.data_fraction)
    return data


def load_data(
    cfg: DataConfig,
    vocab: Vocab | None = None,
    *,
    vocab_for: Callable[[list[str]], Vocab] | None = None,
    policy: str = "given",
) -> LMData | RollData:
    """Tokenize the corpus of ``cfg``; build the vocabulary on train unless one is given, or
    ``vocab_for`` gives it from the training tokens (fine-tuning: the source's vocabulary).

    A piano-roll corpus gives its :class:`RollData` (``vocab`` is ignored). ``policy`` says whose
    choice ``cfg.encoding`` is: ``"given"`` (honoured exactly), ``"recorded"`` (a run's own
    files) or ``"hint"`` (another file read for a run); see :mod:`rnnlab.data.encodings`.
    """
    if cfg.corpus is not None and is_pianoroll(cfg.corpus):
        return load_roll_data(cfg)
    corpus = load_text(cfg, policy=policy)
    level = cfg.level or corpus.level
    tokenizer = make_tokenizer(level)
    train_tokens = tokenizer.tokenize(corpus.splits["train"])
    if cfg.data_fraction < 1.0:
        train_tokens = train_tokens[: max(2, int(len(train_tokens) * cfg.data_fraction))]
    if vocab is None and vocab_for is not None:
        vocab = vocab_for(train_tokens)
    if vocab is None:
        vocab = build_vocab(
            train_tokens, min_count=cfg.min_count, max_size=cfg.max_vocab, level=level
        )
    if len(vocab) < 2:
        raise DataError(
            f"the training text has only {len(vocab)} distinct symbol(s); a language model needs "
            "at least two: give a longer or more varied text"
        )

    def ids(tokens: list[str]) -> Tensor:
        return torch.tensor(vocab.encode(tokens), dtype=torch.long)

    data = LMData(
        name=corpus.name,
        level=level,
        vocab=vocab,
        train=ids(train_tokens),
        valid=ids(tokenizer.tokenize(corpus.splits["valid"])),
        test=ids(tokenizer.tokenize(corpus.splits["test"])),
        encoding=corpus.encoding,
    )
    sep = corpus.title_sep
    if sep is not None and sep in vocab.stoi and "\n" in vocab.stoi:
        for name in ("train", "valid", "test"):
            ids_ = data.split(name)
            data.unscored[name] = title_mask(ids_, vocab.stoi["\n"], vocab.stoi[sep])
    log.info(
        "%s (%s level): %d train / %d valid / %d test tokens, vocabulary %d",
        data.name,
        level,
        len(data.train),
        len(data.valid),
        len(data.test),
        len(vocab),
    )
    return data


def title_mask(ids: Tensor, newline: int, sep: int) -> Tensor:
    """(N,) True at the tokens of each line's title: from the line's start (after a
    ``newline``, or the stream's start) through its first ``sep``, the separator included. A
    line without ``sep`` has no title. Evaluation reads these tokens and does not score them,
    so a titled model's perplexity is per poem character, as an untitled model's."""
    is_nl = ids == newline
    is_sep = (ids == sep).long()
    seps_before = torch.cumsum(is_sep, 0) - is_sep  # separators strictly before each token
    line = torch.cumsum(is_nl.long(), 0) - is_nl.long()  # the line a token is on (its newline too)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(is_nl).flatten() + 1])
    starts = starts.clamp(max=max(len(ids) - 1, 0))
    at_line_start = seps_before[starts][line] if len(ids) else seps_before
    no_sep_yet = seps_before == at_line_start
    # the line has a separator at all: count through its end
    total = torch.cumsum(is_sep, 0)
    ends = torch.cat([torch.nonzero(is_nl).flatten(), torch.tensor([len(ids) - 1])])
    has_sep = (total[ends] - seps_before[starts]) > 0 if len(ids) else ends.bool()
    return no_sep_yet & ~is_nl & has_sep[line]
