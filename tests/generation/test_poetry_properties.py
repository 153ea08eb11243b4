"""Property: whatever the request, the model's weights, the seed and the sampling settings, every
generated poem passes the independent form checker (and the rhyme / tone checkers when asked).

A companion of tests/generation/test_poetry.py (fixed requests, 1,000 poems each): here hypothesis draws the
requests, acrostics and keywords included, and random untrained models.
"""

import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError
from rnnlab.generation.poetry import (
    PoemSpec,
    _plan,
    check_form,
    check_rhyme,
    check_tones,
    generate_poems,
    split_lines,
)
from rnnlab.generation.sampling import SamplingConfig
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel

HANZI = list(
    dict.fromkeys(
        "空山新雨后天气晚来秋明月松间照清泉石上流竹喧归浣女莲动下渔舟随意春芳歇王孙自可留"
        "独在异乡为客每逢佳节倍思亲遥知兄弟登高处遍插茱萸少一人红豆生南国发几枝愿君多采撷"
        "此物最相千山鸟飞绝万径踪灭孤蓑笠翁寒江雪风花"
    )
)
OTHERS = ["<unk>", "\n", "，", "。", "、", "？", "x", "y", " ", "1"]  # never in a poem
VOCAB = Vocab(OTHERS + HANZI, level="char")


@st.composite
def requests(draw):
    chars = draw(st.sampled_from([5, 7]))
    lines = draw(st.sampled_from([4, 8]))
    acrostic = None
    if draw(st.booleans()):
        acrostic = "".join(draw(st.lists(st.sampled_from(HANZI), min_size=lines, max_size=lines)))
    return PoemSpec(
        chars, lines, acrostic=acrostic, rhyme=draw(st.booleans()), tones=draw(st.booleans())
    )


@settings(max_examples=40, deadline=None)
@given(
    spec=requests(),
    weights_seed=st.integers(0, 2**31),
    seed=st.integers(0, 2**31),
    temperature=st.sampled_from([0.0, 0.3, 1.0, 5.0]),
    top_k=st.sampled_from([None, 1, 3]),
)
def test_every_poem_has_the_form_asked_for(spec, weights_seed, seed, temperature, top_k):
    torch.manual_seed(weights_seed)
    config = LanguageModelConfig(vocab_size=len(VOCAB), embed_size=8, hidden_size=16, num_layers=1)
    model = LanguageModel(config)
    cfg = SamplingConfig(temperature=temperature, top_k=top_k)
    try:
        poems = generate_poems(model, VOCAB, spec, count=6, cfg=cfg, seed=seed)
    except ConfigError as e:  # a request this vocabulary cannot meet: said in one line
        assert "\n" not in str(e)
        event(f"refused: {str(e)[:40]}")
        assume(False)
    assert len(poems) == 6
    for p in poems:
        assert check_form(p.text, spec.chars, spec.lines, acrostic=spec.acrostic), p.text
        assert p.form
        assert check_rhyme(p.text) or not spec.rhyme, p.text
        assert check_tones(p.text) or not spec.tones, p.text


@st.composite
def keyword_requests(draw):
    """A request with 1 to ``lines`` keywords, and maybe an acrostic or starting text."""
    chars = draw(st.sampled_from([5, 7]))
    lines = draw(st.sampled_from([4, 8]))
    keywords = draw(st.lists(st.sampled_from(HANZI), min_size=1, max_size=lines, unique=True))
    given = draw(st.sampled_from(["none", "none", "acrostic", "start"]))
    acrostic = start = None
    if given == "acrostic":
        acrostic = "".join(draw(st.lists(st.sampled_from(HANZI), min_size=lines, max_size=lines)))
    elif given == "start":
        size = draw(st.integers(1, chars + 3))
        start = "".join(draw(st.lists(st.sampled_from(HANZI), min_size=size, max_size=size)))
    sep = draw(st.sampled_from([",", "，", "、", " "]))
    return PoemSpec(
        chars,
        lines,
        acrostic=acrostic,
        start=start,
        rhyme=draw(st.booleans()),
        tones=draw(st.booleans()),
        keywords=sep.join(keywords),
    )


@settings(max_examples=60, deadline=None)
@given(
    spec=keyword_requests(),
    weights_seed=st.integers(0, 2**31),
    seed=st.integers(0, 2**31),
    mode=st.sampled_from(["sample", "candidates", "beam"]),
    temperature=st.sampled_from([0.0, 1.0, 5.0]),
    penalty=st.sampled_from([1.0, 3.0]),
)
def test_every_poem_holds_every_keyword_in_its_line(
    spec, weights_seed, seed, mode, temperature, penalty
):
    torch.manual_seed(weights_seed)
    config = LanguageModelConfig(vocab_size=len(VOCAB), embed_size=8, hidden_size=16, num_layers=1)
    model = LanguageModel(config)
    cfg = SamplingConfig(temperature=temperature, repetition_penalty=penalty)
    options = {"sample": {}, "candidates": {"candidates": 3}, "beam": {"beam": 3}}[mode]
    count = 3 if mode == "beam" else 5
    try:
        placed = _plan(VOCAB, spec).keyword_lines
        poems = generate_poems(model, VOCAB, spec, count=count, cfg=cfg, seed=seed, **options)
    except ConfigError as e:  # a request this vocabulary cannot meet: said in one line
        assert "\n" not in str(e)
        event(f"refused: {str(e)[:40]}")
        assume(False)
    assert len(poems) == count
    assert list(placed) == list(spec.keyword_chars)
    event(f"{mode}, {len(placed)} keywords")
    for p in poems:
        assert check_form(p.text, spec.chars, spec.lines, acrostic=spec.acrostic), p.text
        assert (
            p.text.replace("\n", "")
            .replace("，", "")
            .replace("。", "")
            .startswith(spec.start or "")
        )
        assert check_rhyme(p.text) or not spec.rhyme, p.text
        assert check_tones(p.text) or not spec.tones, p.text
        lines = split_lines(p.text)
        for ch, line in placed.items():
            assert ch in lines[line], (ch, line, p.text)
        assert p.keywords == spec.keyword_chars and "keywords" in p.satisfies
