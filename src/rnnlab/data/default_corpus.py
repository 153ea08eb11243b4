"""The offline default corpus: Tiny Shakespeare, shipped inside the package.

``rnnlab train`` with no source trains on it (the ``quick`` preset names it), and so does a
:class:`~rnnlab.data.dataset.DataConfig` that names no corpus and no file. It is the named corpus
``tinyshakespeare`` (``rnnlab corpora`` lists it): Karpathy's char-rnn text, public domain,
1,115,394 characters, split 90/10 as nanoGPT does. :mod:`rnnlab.data.fetch` reads a mirror or the
cache first and otherwise unpacks the package's xz copy (``rnnlab/data/bundled/``), checked
against the upstream sha256, so no network is needed.
"""

from __future__ import annotations

from rnnlab.data.corpora import load_corpus
from rnnlab.data.corpus import Corpus
from rnnlab.errors import ConfigError

DEFAULT_CORPUS = "tinyshakespeare"


def default_corpus(max_chars: int | None = None) -> Corpus:
    """The offline default corpus (:data:`DEFAULT_CORPUS`, char level), its splits as
    :func:`~rnnlab.data.corpora.load_corpus` cuts them.

    ``max_chars`` keeps only the first ``max_chars`` characters of the text (train first,
    then valid, in the corpus's 90/10 proportion) for smoke tests.
    """
    corpus = load_corpus(DEFAULT_CORPUS)
    if max_chars is None:
        return corpus
    if max_chars < 100:
        raise ConfigError(f"max_chars must be at least 100, got {max_chars}")
    text = corpus.splits["train"] + corpus.splits["valid"]
    text = text[:max_chars]
    cut = int(len(text) * 0.9)
    splits = {"train": text[:cut], "valid": text[cut:], "test": text[cut:]}
    return Corpus(corpus.name, corpus.level, splits, corpus.script, corpus.description)
