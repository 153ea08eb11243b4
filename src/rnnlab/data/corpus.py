"""The corpus value: the raw text of one corpus, split into train/valid/test.

Every source of text (a named corpus, a local file, the offline default, in-memory texts) gives
a :class:`Corpus`; tokenizing it is :mod:`rnnlab.data.vocab`'s job. :func:`corpus_from_texts`
builds one from texts already in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rnnlab.errors import ConfigError


@dataclass(frozen=True)
class Corpus:
    """The raw text of one corpus, split three ways.

    ``splits`` maps ``"train"``, ``"valid"``, ``"test"`` to text. ``level`` is the corpus's
    natural tokenization (``"char"`` or ``"word"``). ``script`` is ``"simplified"`` or
    ``"traditional"`` for Chinese corpora, else ``None``. ``stats`` holds counts worth
    reporting (e.g. how many poems the Tang cleaning dropped, and why). ``encoding`` is the
    codec a local file was read with (None for other sources). ``title_sep``: each line
    starts with a title that ends at this separator (the Tang corpus with ``titles=True``);
    the title and separator are context, and evaluation does not score them.
    """

    name: str
    level: str
    splits: dict[str, str]
    script: str | None = None
    description: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    encoding: str | None = None
    title_sep: str | None = None

    @property
    def train(self) -> str:
        return self.splits["train"]

    @property
    def valid(self) -> str:
        return self.splits["valid"]

    @property
    def test(self) -> str:
        return self.splits["test"]


def corpus_from_texts(
    name: str, texts: Mapping[str, str], *, level: str = "char", description: str = ""
) -> Corpus:
    """A corpus from in-memory texts (``train``, ``valid``, ``test``), e.g. for tests/demos."""
    missing = {"train", "valid", "test"} - set(texts)
    if missing:
        raise ConfigError(f"corpus texts need train, valid and test; missing {sorted(missing)}")
    if level not in ("char", "word"):
        raise ConfigError(f"level must be 'char' or 'word', not '{level}'")
    splits = {k: texts[k] for k in ("train", "valid", "test")}
    return Corpus(name, level, splits, None, description)
