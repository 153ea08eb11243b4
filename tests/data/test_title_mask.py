"""The title tokens of a titled corpus (``title:poem`` lines) are read as context and not scored
(issue 19): :func:`rnnlab.data.dataset.title_mask` and ``load_data``'s ``unscored`` masks."""

import pytest
import torch

from rnnlab.data.corpus import Corpus
from rnnlab.data.dataset import DataConfig, load_data, title_mask


def marks(text: str) -> str:
    ids = torch.tensor([ord(c) for c in text])
    return "".join("T" if b else "." for b in title_mask(ids, ord("\n"), ord(":")).tolist())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ab:cde\nf:g\n", "TTT....TT.."),
        ("hij\n:k\n", "....T.."),  # a line without a separator has no title; an empty title
        ("xy:z", "TTT."),  # no final newline
        ("a:b:c\n", "TT...."),  # only the first separator ends the title
        ("\n\na:b", "..TT."),
        ("", ""),
    ],
)
def test_title_mask(text, expected):
    assert marks(text) == expected


def test_load_data_masks_the_titles_of_a_titled_corpus(monkeypatch):
    splits = {
        "train": "春晓:春眠不觉晓，\n静夜思:床前明月光，\n",
        "valid": "春:眠\n",
        "test": "晓:春\n",
    }
    titled = Corpus("tang", "char", splits, "simplified", title_sep=":")
    monkeypatch.setattr("rnnlab.data.dataset.load_corpus", lambda name, **kw: titled)
    data = load_data(DataConfig(corpus="tang"))
    itos = data.vocab.itos
    shown = "".join(
        ("[" + itos[i] + "]") if u else itos[i]
        for i, u in zip(data.train.tolist(), data.unscored["train"].tolist(), strict=True)
    )
    assert shown == "[春][晓][:]春眠不觉晓，\n[静][夜][思][:]床前明月光，\n"
    assert data.unscored["valid"].tolist() == [True, True, False, False]

    untitled = Corpus("tang", "char", splits, "simplified")
    monkeypatch.setattr("rnnlab.data.dataset.load_corpus", lambda name, **kw: untitled)
    assert load_data(DataConfig(corpus="tang")).unscored == {}
