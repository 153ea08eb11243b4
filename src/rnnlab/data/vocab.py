"""Tokenizers and vocabularies: text -> tokens -> integer ids, and back.

Two tokenizers, picked by level with :func:`make_tokenizer`:

* ``"char"`` (:class:`CharTokenizer`): one token per Unicode code point, so Chinese, emoji and
  other text outside the Basic Multilingual Plane work; the newline is a token like any other.
  ``detokenize(tokenize(text)) == text`` exactly.
* ``"word"`` (:class:`WordTokenizer`): each line is split on whitespace and closed with
  ``<eos>``, the standard PTB / WikiText setup (as in pytorch/examples ``data.py``). That gives
  the published token counts (PTB train 929,589; WikiText-2 train 2,088,628). Detokenizing joins
  words with spaces and turns ``<eos>`` into a newline.

A :class:`Vocab` maps tokens to ids. Its order is deterministic: the ``specials`` first, in the
order given (``<unk>`` is always one of them), then the other tokens by **count, descending,
ties broken by first occurrence** in the token stream. Unknown tokens encode to ``<unk>``.
Corpora that already contain ``<unk>`` as a word (PTB, WikiText) share the special's id, so the
PTB vocabulary is exactly 10,000 (9,999 distinct words incl. ``<unk>``, plus ``<eos>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch

from rnnlab.errors import CheckpointError, ConfigError

UNK = "<unk>"
EOS = "<eos>"
LEVELS = ("char", "word")


class Tokenizer(Protocol):
    """Splits text into string tokens and joins them back."""

    level: str

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: Sequence[str]) -> str: ...


class CharTokenizer:
    """One token per Unicode code point (``list(text)``); the exact inverse is ``"".join``."""

    level = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)


class WordTokenizer:
    """Whitespace-split words with ``<eos>`` closing every line (empty lines included).

    Lines are separated by ``"\\n"`` only; a final newline does not start another line.
    """

    level = "word"
    eos = EOS

    def tokenize(self, text: str) -> list[str]:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the text ended with a newline: no extra empty line
        tokens: list[str] = []
        for line in lines:
            tokens.extend(line.split())
            tokens.append(EOS)
        return tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        out: list[str] = []
        line: list[str] = []
        for tok in tokens:
            if tok == EOS:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(tok)
        if line:
            out.append(" ".join(line))
        return "".join(out)


def make_tokenizer(level: str) -> Tokenizer:
    """The tokenizer for ``level`` (``"char"`` or ``"word"``)."""
    if level == "char":
        return CharTokenizer()
    if level == "word":
        return WordTokenizer()
    raise ConfigError(f"unknown tokenization level '{level}'; use one of: {', '.join(LEVELS)}")


class Vocab:
    """A token <-> id mapping with an ``<unk>`` special.

    ``itos[i]`` is the token of id ``i``; ``stoi`` is its inverse. ``specials`` are tokens that
    are always present whatever their count (``<unk>`` among them); ``level`` records the
    tokenizer the vocabulary belongs to (``None`` if not given), so a checkpoint can rebuild
    both.
    """

    def __init__(
        self, itos: Sequence[str], *, level: str | None = None, specials: Sequence[str] = (UNK,)
    ) -> None:
        if level is not None and level not in LEVELS:
            raise ConfigError(f"unknown vocabulary level '{level}'; use one of {LEVELS}")
        if UNK not in specials:
            raise ConfigError(f"the specials must include {UNK}, got {list(specials)}")
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            dup = [t for t, c in Counter(self.itos).items() if c > 1][:5]
            raise ConfigError(f"vocabulary has duplicate tokens {dup}")
        missing = [s for s in specials if s not in self.stoi]
        if missing:
            raise ConfigError(f"vocabulary lacks its special tokens {missing}")
        self.level = level
        self.specials: tuple[str, ...] = tuple(specials)
        self.unk_id: int = self.stoi[UNK]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.itos, self.level, self.specials) == (other.itos, other.level, other.specials)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, level={self.level!r}, specials={self.specials})"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``; a token not in the vocabulary becomes ``unk_id``."""
        get, unk = self.stoi.get, self.unk_id
        return [get(tok, unk) for tok in tokens]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Tokens of ``ids`` (a list or a 1-D tensor)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        itos = self.itos
        return [itos[i] for i in ids]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description: ``{"level", "specials", "itos"}``."""
        return {"level": self.level, "specials": list(self.specials), "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Rebuild a vocabulary saved by :meth:`to_dict` (e.g. from a checkpoint)."""
        try:
            itos, level, specials = d["itos"], d["level"], d["specials"]
        except (KeyError, TypeError):
            raise CheckpointError(
                "the saved vocabulary is malformed (needs itos, level, specials); "
                "use a checkpoint written by rnnlab"
            ) from None
        if not all(isinstance(t, str) for t in itos):
            raise CheckpointError("the saved vocabulary has non-string tokens; it is corrupt")
        try:
            return cls(itos, level=level, specials=specials)
        except ConfigError as exc:
            raise CheckpointError(f"the saved vocabulary is invalid: {exc}") from None


def build_vocab(
    tokens: Iterable[str],
    *,
    min_count: int = 1,
    max_size: int | None = None,
    specials: Sequence[str] = (UNK,),
    level: str | None = None,
) -> Vocab:
    """Build a :class:`Vocab` from a token stream (usually the training split).

    Order: ``specials`` first, then tokens with count >= ``min_count`` by count descending,
    ties by first occurrence. ``max_size`` caps the total size, specials included; the rarest
    tokens are cut (and then encode to ``<unk>``). ``level`` ("char"/"word") is recorded in
    the vocabulary and its :meth:`Vocab.to_dict`.
    """
    if min_count < 1:
        raise ConfigError(f"min_count must be at least 1, got {min_count}")
    if max_size is not None and max_size < len(specials):
        raise ConfigError(f"max_size {max_size} cannot hold the {len(specials)} special tokens")
    counts = Counter(tokens)  # insertion order = first occurrence
    special_set = set(specials)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: ties keep first occurrence
    itos = list(specials) + [t for t, c in ranked if c >= min_count and t not in special_set]
    if max_size is not None:
        itos = itos[:max_size]
    return Vocab(itos, level=level, specials=specials)


def encode_text(text: str, tokenizer: Tokenizer, vocab: Vocab) -> torch.Tensor:
    """``text`` as a 1-D LongTensor of ids: tokenize, then look up (unknowns -> ``<unk>``)."""
    return torch.tensor(vocab.encode(tokenizer.tokenize(text)), dtype=torch.long)  # (N,)


def decode_ids(ids: Iterable[int] | torch.Tensor, tokenizer: Tokenizer, vocab: Vocab) -> str:
    """The inverse of :func:`encode_text` (exact for char level when nothing was unknown)."""
    return tokenizer.detokenize(vocab.decode(ids))


def boundary_token(vocab: Vocab, level: str) -> int:
    """The symbol that separates training lines: the context before any prime."""
    for token in ("<eos>", "\n") if level == "word" else ("\n", "<eos>"):
        if token in vocab.stoi:
            return vocab.stoi[token]
    return vocab.unk_id
