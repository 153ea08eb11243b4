"""Tokenizers and vocabularies: specials, ordering, limits, serialisation, round trips, and the
published PTB / WikiText-2 token counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.vocab import (
    EOS,
    UNK,
    CharTokenizer,
    Vocab,
    WordTokenizer,
    build_vocab,
    decode_ids,
    encode_text,
    make_tokenizer,
)
from rnnlab.errors import CheckpointError, ConfigError


def test_unk_is_always_first_and_unknowns_map_to_it() -> None:
    vocab = build_vocab(list("abcab"))
    assert vocab.itos[0] == UNK and vocab.unk_id == 0
    assert vocab.encode(["a", "z", "b"]) == [vocab.stoi["a"], 0, vocab.stoi["b"]]
    assert vocab.decode([0]) == [UNK]
    assert UNK in vocab and "z" not in vocab


def test_order_is_count_desc_then_first_occurrence() -> None:
    vocab = build_vocab(list("cabbca d"))  # counts: c2 a2 b2 ' '1 d1
    assert vocab.itos == [UNK, "c", "a", "b", " ", "d"]


def test_unk_in_the_text_shares_the_special_id() -> None:
    # PTB-style text: '<unk>' is already a word; it must not become a second entry.
    vocab = build_vocab(["the", UNK, "cat", UNK, EOS], level="word")
    assert vocab.itos.count(UNK) == 1
    assert len(vocab) == 4


def test_min_count_and_max_size() -> None:
    tokens = list("aaaabbbcc d")
    assert build_vocab(tokens, min_count=3).itos == [UNK, "a", "b"]
    assert build_vocab(tokens, max_size=3).itos == [UNK, "a", "b"]
    assert len(build_vocab(tokens, max_size=1)) == 1
    specials = (UNK, "<pad>")
    vocab = build_vocab(tokens, min_count=100, specials=specials)
    assert vocab.itos == [UNK, "<pad>"]  # specials survive any min_count


@pytest.mark.parametrize(
    "kwargs",
    [{"min_count": 0}, {"max_size": 0}, {"specials": ("<pad>",)}],
)
def test_bad_build_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_vocab(list("abc"), **kwargs)


def test_duplicates_and_missing_specials_are_refused() -> None:
    with pytest.raises(ConfigError):
        Vocab([UNK, "a", "a"])
    with pytest.raises(ConfigError):
        Vocab(["a", "b"])
    with pytest.raises(ConfigError):
        Vocab([UNK], level="byte")


def test_to_dict_round_trip_through_json() -> None:
    vocab = build_vocab(["x", "y", "y", "😀"], level="word", specials=(UNK, "<pad>"))
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab
    assert again.level == "word" and again.specials == (UNK, "<pad>")
    assert again.stoi == vocab.stoi and again.unk_id == vocab.unk_id


@pytest.mark.parametrize(
    "bad",
    [{}, {"itos": [UNK]}, {"itos": ["a"], "level": "char", "specials": [UNK]}, None],
)
def test_from_dict_refuses_malformed(bad: object) -> None:
    with pytest.raises(CheckpointError):
        Vocab.from_dict(bad)  # type: ignore[arg-type]


def test_decode_accepts_tensors() -> None:
    vocab = build_vocab(list("hello"))
    ids = encode_text("hello", CharTokenizer(), vocab)
    assert ids.dtype == torch.long and ids.shape == (5,)
    assert vocab.decode(ids) == list("hello")


@settings(max_examples=200, deadline=None)
@given(st.text())  # all code points, non-BMP included, surrogates excluded
def test_char_round_trip(text: str) -> None:
    tok = make_tokenizer("char")
    vocab = build_vocab(tok.tokenize(text), level="char")
    assert decode_ids(encode_text(text, tok, vocab), tok, vocab) == text


def test_char_level_handles_chinese_and_astral_characters() -> None:
    text = "床前明月光，\n疑是地上霜。𠀀😀𝄞"
    tokens = CharTokenizer().tokenize(text)
    assert len(tokens) == len(text) == 16
    assert "\n" in tokens and "𠀀" in tokens


def test_word_tokenizer_adds_eos_per_line() -> None:
    tok = WordTokenizer()
    assert tok.tokenize(" the cat \n sat \n") == ["the", "cat", EOS, "sat", EOS]
    assert tok.tokenize("a b\n\nc") == ["a", "b", EOS, EOS, "c", EOS]  # empty line, no final \n
    assert tok.tokenize("") == []
    assert tok.detokenize(["a", "b", EOS, EOS, "c", EOS]) == "a b\n\nc\n"
    assert tok.detokenize(["a", "b"]) == "a b"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.text(alphabet="abcé汉😀", min_size=1, max_size=5), max_size=6), max_size=6)
)
def test_word_round_trip_normalises_whitespace(lines: list[list[str]]) -> None:
    text = "".join(" " + " ".join(words) + " \n" for words in lines)
    tok = make_tokenizer("word")
    tokens = tok.tokenize(text)
    assert tokens.count(EOS) == len(lines)
    assert tok.detokenize(tokens) == "".join(" ".join(words) + "\n" for words in lines)


def test_unknown_level() -> None:
    with pytest.raises(ConfigError, match="char, word"):
        make_tokenizer("bytes")


WORDS = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(WORDS, max_size=6), max_size=8))
def test_word_round_trip_of_canonical_text_is_exact(lines: list[list[str]]) -> None:
    """Words separated by single spaces, every line ended by a newline: decode(encode) is the
    identity (``<eos>`` in the text would read as a line end, so it is left out)."""
    lines = [[w for w in words if w != EOS and w.split() == [w]] for words in lines]
    text = "".join(" ".join(words) + "\n" for words in lines)
    tok = make_tokenizer("word")
    vocab = build_vocab(tok.tokenize(text), level="word")
    assert decode_ids(encode_text(text, tok, vocab), tok, vocab) == text


@settings(max_examples=100, deadline=None)
@given(known=st.lists(st.text(max_size=3)), asked=st.lists(st.text(max_size=3)))
def test_encode_decode_keeps_known_tokens_and_unks_the_rest(known, asked) -> None:
    vocab = build_vocab(known)
    ids = vocab.encode(asked)
    assert all(0 <= i < len(vocab) for i in ids)
    assert vocab.decode(ids) == [t if t in vocab else UNK for t in asked]
    assert vocab.encode(vocab.decode(range(len(vocab)))) == list(range(len(vocab)))


@settings(max_examples=100, deadline=None)
@given(
    tokens=st.lists(st.text()),
    level=st.sampled_from([None, "char", "word"]),
    max_size=st.one_of(st.none(), st.integers(1, 20)),
    min_count=st.integers(1, 3),
)
def test_any_vocabulary_survives_json(tokens, level, max_size, min_count) -> None:
    vocab = build_vocab(tokens, level=level, max_size=max_size, min_count=min_count)
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict(), ensure_ascii=False)))
    assert again == vocab and again.stoi == vocab.stoi and again.unk_id == vocab.unk_id


# --- published counts on the real corpora ---------------------------------------------------


def _data_dir() -> Path:
    env = os.environ.get("RNNLAB_DATA_DIR")
    if not env or not Path(env).is_dir():
        pytest.skip("RNNLAB_DATA_DIR is not set to the corpus mirror")
    return Path(env)


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("name", "counts", "vocab_size"),
    [
        # pytorch/examples word_language_model counts (see the mirror's SOURCE.md)
        ("ptb", {"train": 929_589, "valid": 73_760, "test": 82_430}, 10_000),
        ("wikitext2", {"train": 2_088_628, "valid": 217_646, "test": 245_569}, 33_278),
    ],
)
def test_published_word_counts(name: str, counts: dict[str, int], vocab_size: int) -> None:
    from rnnlab.data.corpora import load_corpus

    corpus = load_corpus(name, data_dir=_data_dir(), download=False)
    tok = make_tokenizer(corpus.level)
    tokens = {split: tok.tokenize(text) for split, text in corpus.splits.items()}
    assert {split: len(t) for split, t in tokens.items()} == counts
    vocab = build_vocab(tokens["train"], level="word")
    assert len(vocab) == vocab_size
    # valid and test contain no word absent from train: nothing maps to <unk> but <unk> itself
    for split in ("valid", "test"):
        ids = torch.tensor(vocab.encode(tokens[split]))
        literal_unk = sum(t == UNK for t in tokens[split])
        assert int((ids == vocab.unk_id).sum()) == literal_unk
