"""Poems with keywords (``PoemSpec.keywords``): where they go, that the model chooses the place
within the line, that the repetition penalty spares them, and the one-line refusals.

The property that every poem holds every keyword whatever the request is in
tests/generation/test_poetry_properties.py.
"""

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError
from rnnlab.generation.poetry import (
    PoemSpec,
    _plan,
    check_form,
    check_rhyme,
    check_tones,
    found_keywords,
    generate_poems,
    split_lines,
)
from rnnlab.generation.sampling import SamplingConfig
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel

HANZI = (
    "床前明月光疑是地上霜举头望低思故乡白日依山尽黄河入海流欲穷千里目更一层楼春眠不觉晓处"
    "闻啼鸟夜来风雨声花落知多少朝辞帝彩云间江陵还两岸猿住轻舟已过万重天人长城东西南北红豆"
    "生国愿君采此物最相秋水清香阳方堂王"
)
VOCAB = Vocab(["<unk>", "\n", "，", "。", "？", "a", " ", *HANZI], level="char")


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    model = LanguageModel(
        LanguageModelConfig(vocab_size=len(VOCAB), embed_size=16, hidden_size=32, num_layers=1)
    )
    return model.eval()


class Fond:
    """A model with fixed logits: ``likes`` high, ``bad`` tokens (that a poem must never hold)
    higher still, everything else low."""

    def __init__(self, likes: dict[str, float], bad: float = 0.0):
        self.logits = torch.zeros(len(VOCAB))
        for token in ["<unk>", "\n", "？", "a", " ", "，"]:
            self.logits[VOCAB.stoi[token]] = bad
        for ch, logit in likes.items():
            self.logits[VOCAB.stoi[ch]] = logit

    def __call__(self, tokens, state=None):
        return self.logits.expand(*tokens.shape, -1), state


def positions(poems, ch, line):
    return [split_lines(p.text)[line].index(ch) for p in poems]


def test_spec_parses_every_separator():
    for text in ("月,霜", "月，霜", "月、霜", "月 霜", " 月 , 霜 ,", "月\t霜"):
        assert PoemSpec(keywords=text).keyword_chars == "月霜"
    assert PoemSpec().keyword_chars == ""


def test_keywords_are_spread_over_the_lines_in_the_order_given():
    assert _plan(VOCAB, PoemSpec(keywords="月")).keyword_lines == {"月": 0}
    assert _plan(VOCAB, PoemSpec(keywords="月,霜")).keyword_lines == {"月": 0, "霜": 2}
    assert _plan(VOCAB, PoemSpec(keywords="霜,月")).keyword_lines == {"霜": 0, "月": 2}
    four = _plan(VOCAB, PoemSpec(5, 8, keywords="春,风,秋,雨"))
    assert list(four.keyword_lines.values()) == [0, 2, 4, 6]
    eight = _plan(VOCAB, PoemSpec(5, 8, keywords=",".join("天地人月山水花鸟")))
    assert list(eight.keyword_lines.values()) == list(range(8))


def test_a_given_character_places_its_keyword():
    # 月 and 床 head lines 4 and 1 (acrostic): only 花 needs a line, and it avoids the lines
    # that already hold a keyword
    spec = PoemSpec(5, 4, acrostic="床风明月", keywords="月,床,花")
    plan = _plan(VOCAB, spec)
    assert plan.keyword_lines == {"月": 3, "床": 0, "花": 1}
    assert plan.keywords == {1: VOCAB.stoi["花"]}
    plan = _plan(VOCAB, PoemSpec(5, 4, first_line="床前明月光", keywords="光,月"))
    assert plan.keyword_lines == {"光": 0, "月": 0} and plan.keywords == {}


def test_lines_without_a_free_slot_for_the_keyword_are_skipped():
    # the start fills line 1 and all of line 2 but its last slot, which --tones wants level
    # (平): 月 (仄) goes to line 3, the next free line
    spec = PoemSpec(5, 4, start="白日依山尽黄河入海", keywords="月", tones=True)
    assert _plan(VOCAB, spec).keyword_lines == {"月": 2}
    without = PoemSpec(5, 4, start="白日依山尽黄河入海", keywords="月")
    assert _plan(VOCAB, without).keyword_lines == {"月": 1}


def test_the_model_chooses_where_in_its_line_the_keyword_goes(untrained):
    spec = PoemSpec(5, 4, keywords="月,霜")
    poems = generate_poems(untrained, VOCAB, spec, count=300, seed=0)
    assert all(p.form and p.keywords == "月霜" for p in poems)
    for ch, line in (("月", 0), ("霜", 2)):
        seen = positions(poems, ch, line)
        assert len(set(seen)) >= 3, seen  # not always the last slot, where it is forced
    # a model fond of 霜 writes it at the first free slot of its line; one that hates it
    # still writes it, where it must: the last slot
    fond = generate_poems(
        Fond({"霜": 20.0}), VOCAB, PoemSpec(5, 4, keywords="霜"), count=20, seed=0
    )
    assert positions(fond, "霜", 0) == [0] * 20
    acrostic = PoemSpec(5, 4, acrostic="春风明月", keywords="霜")
    fond = generate_poems(Fond({"霜": 20.0}), VOCAB, acrostic, count=20, seed=0)
    assert positions(fond, "霜", 0) == [1] * 20
    cold = generate_poems(Fond({"霜": -50.0}, bad=9.0), VOCAB, acrostic, count=50, seed=0)
    assert positions(cold, "霜", 0) == [4] * 50
    assert all(check_form(p.text, 5, 4, acrostic="春风明月") for p in cold)


def test_a_keyword_kept_for_a_tone_slot_makes_way_for_it():
    # 7-character lines with --tones: the adversary hates 月 (仄); wherever the model leaves it
    # to a late slot, an oblique slot must stay open for it, and 霜 (平) stays level-placeable
    spec = PoemSpec(7, 8, keywords="月,霜,花,雨", rhyme=True, tones=True)
    model = Fond({"月": -50.0, "霜": -50.0, "花": -50.0, "雨": -50.0}, bad=9.0)
    for cfg in (SamplingConfig(), SamplingConfig(temperature=0), SamplingConfig(top_k=2)):
        poems = generate_poems(model, VOCAB, spec, count=100, cfg=cfg, seed=0)
        for p in poems:
            assert p.form and check_rhyme(p.text) and check_tones(p.text), p.text
            assert p.keywords == "月霜花雨" and "keywords" in p.satisfies


def test_the_keyword_never_forces_a_repeated_line():
    # a model fond of 明, then 月: greedy writes line 3 明明明明月 (its last slot may not repeat
    # 明 or 霜); line 5 must hold 月, and 明明明明 then 月 would copy line 3, so the
    # next-to-last slot takes 月 instead of 明
    model = Fond({"明": 9.0, "月": 8.9})
    spec = PoemSpec(5, 8, keywords="霜,月")
    assert _plan(VOCAB, spec).keyword_lines == {"霜": 0, "月": 4}
    greedy = generate_poems(model, VOCAB, spec, cfg=SamplingConfig(temperature=0), seed=0)[0]
    lines = split_lines(greedy.text)
    assert lines[:3] == ["明明明明霜", "明明明明明", "明明明明月"] and lines[4][:4] == "明明明月"
    assert greedy.form and greedy.keywords == "霜月"
    for cfg in (SamplingConfig(), SamplingConfig(temperature=0.3)):
        for p in generate_poems(model, VOCAB, spec, count=100, cfg=cfg, seed=1):
            assert p.form and p.keywords == "霜月", p.text


def test_the_repetition_penalty_spares_the_keyword_until_it_is_placed():
    # 月 is written first (line 1, where nothing asks for it) and so counts as seen; the
    # penalty then flattens it everywhere but in line 3 while it is still to be placed there
    model = Fond({"月": 12.0})
    cfg = SamplingConfig(repetition_penalty=1e6)
    poems = generate_poems(
        model, VOCAB, PoemSpec(5, 4, keywords="霜,月"), count=40, cfg=cfg, seed=0
    )
    assert positions(poems, "月", 2) == [0] * 40
    assert sum(split_lines(p.text)[1].count("月") for p in poems) < 10  # flattened there


def test_beam_and_candidates_keep_the_keywords(untrained):
    spec = PoemSpec(5, 4, acrostic="春风明月", keywords="霜,鸟", rhyme=True, tones=True)
    for options in ({"beam": 4}, {"candidates": 4}):
        poems = generate_poems(untrained, VOCAB, spec, count=4, seed=0, **options)
        for p in poems:
            assert check_form(p.text, 5, 4, acrostic="春风明月") and p.rhyme and p.tones
            assert p.keywords == "霜鸟" and p.to_dict()["requested"]["keywords"] == "霜鸟"
    # the only free slot of line 1 is its first, and the keyword is forced there at once:
    # the beam's other rows stay dead instead of holding a masked character
    spec = PoemSpec(5, 4, start="床前明月", keywords="霜")
    poems = generate_poems(untrained, VOCAB, spec, count=3, seed=0, beam=3)
    assert [p.text[:6] for p in poems] == ["床前明月霜，"] * 3
    assert all(p.form and p.score is not None and p.score > -1e9 for p in poems)


def test_found_keywords_reads_the_text():
    text = "床前明月光，\n疑是地上霜。\n举头望明月，\n低头思故乡。"
    assert found_keywords(text, "霜月雪") == "霜月"
    assert found_keywords(text, "，") == ""


@pytest.mark.parametrize(
    "kwargs,mention",
    [
        ({"keywords": "明月"}, "split it: --keywords 明,月"),
        ({"keywords": "月,a"}, "'a' is not a Chinese character"),
        ({"keywords": "月,霜,月"}, "'月' is given twice"),
        ({"keywords": "天,地,人,月,山"}, "5 keywords for a poem of 4 lines"),
        ({"keywords": " , "}, "at least one"),
        ({"keywords": "月,龘"}, "'龘' is not in the model's vocabulary"),
        ({"start": "白日依山尽黄河入海流欲穷千里目更上一层楼", "keywords": "霜"}, "fits no free"),
        (
            {"start": "白日依山尽黄河入海流欲穷千里目更上一层", "keywords": "月", "tones": True},
            "with --tones and the given characters",
        ),
        ({"first_line": "床前明月光", "keywords": "天,地,人,山"}, "cannot all be placed"),
        (
            {"start": "白日依山尽黄河入海", "keywords": "月,目,鸟", "tones": True},
            "cannot all be placed, one per line, under one tone pattern",
        ),
    ],
)
def test_keywords_that_cannot_be_met_are_one_line_errors(untrained, kwargs, mention):
    with pytest.raises(ConfigError, match=mention) as info:
        generate_poems(untrained, VOCAB, PoemSpec(**kwargs), seed=0)
    assert "\n" not in str(info.value)
