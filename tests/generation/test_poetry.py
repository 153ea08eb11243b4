"""Poems: the checkers against known poems and a hand-made table, and 1,000 poems from an
untrained (and an adversarial) model that all have the exact form and the asked-for prosody."""

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError
from rnnlab.generation.poetry import (
    PoemSpec,
    check_form,
    check_rhyme,
    check_tones,
    generate_poems,
    is_hanzi,
    match_tone_pattern,
    rhyme_groups,
    shared_rhyme_group,
    tone_classes,
    tone_patterns,
)
from rnnlab.generation.sampling import SamplingConfig
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel

# ------------------------------------------------------------------------------ the checkers

CHARS = [  # character, tone classes (modern readings), one rhyme group it belongs to
    ("天", {"平"}, "言前"),
    ("地", {"仄"}, "一七"),
    ("人", {"平"}, "人辰"),
    ("月", {"仄"}, "乜斜"),
    ("山", {"平"}, "言前"),
    ("水", {"仄"}, "灰堆"),
    ("花", {"平"}, "发花"),
    ("霜", {"平"}, "江阳"),
    ("流", {"平"}, "油求"),
    ("鸟", {"仄"}, "遥条"),
    ("重", {"平", "仄"}, "中东"),  # zhòng / chóng: polyphonic, fits both
]


@pytest.mark.parametrize("char,tones,group", CHARS)
def test_character_table(char, tones, group):
    assert set(tone_classes(char)) == tones
    assert group in rhyme_groups(char)


def test_only_cjk_ideographs_are_hanzi():
    assert all(is_hanzi(c) for c in "天地㐀𠀀")  # main block, Ext A, Ext B
    # punctuation, Latin, specials, a full-width digit, 〇 (a CJK symbol), compatibility 﨑
    bad = ["，", "。", "？", "a", "\n", "<unk>", "１", "天地", "〇", "\uf900"]
    assert not any(is_hanzi(c) for c in bad)


POEMS = {  # name: (text, lines 2/4 rhyme, fits a standard tone pattern)
    "静夜思": ("床前明月光，疑是地上霜。举头望明月，低头思故乡。", True, False),
    "登鹳雀楼": ("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", True, True),
    "春晓": ("春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。", True, False),
    "早发白帝城": (
        "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。",
        True,
        True,
    ),
    # 簪 (zān today) rhymed with 深/心/金 in Middle Chinese: modern readings miss it
    "春望": (
        "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。"
        "烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。",
        False,
        True,
    ),
    "静夜思 (altered)": ("床前明月光，疑是地上霜。举头望明月，低头思故人。", False, False),
}


@pytest.mark.parametrize("name", POEMS)
def test_checkers_on_known_poems(name):
    text, rhymes, tones = POEMS[name]
    assert check_rhyme(text) == rhymes
    assert check_tones(text) == tones


def test_known_poems_details():
    assert shared_rhyme_group(POEMS["静夜思"][0]) == "江阳"
    assert shared_rhyme_group(POEMS["登鹳雀楼"][0]) == "油求"
    assert shared_rhyme_group(POEMS["春晓"][0]) == "遥条"
    assert match_tone_pattern(POEMS["登鹳雀楼"][0]) == "仄起首句不入韵"


def test_tone_patterns_are_the_textbook_ones():
    free5, free7 = (0, 2), (0, 2, 4)
    textbook = {  # the four standard 五绝 and 七绝 patterns, written out in full
        (5, "仄起首句不入韵"): "仄仄平平仄 平平仄仄平 平平平仄仄 仄仄仄平平",
        (5, "仄起首句入韵"): "仄仄仄平平 平平仄仄平 平平平仄仄 仄仄仄平平",
        (5, "平起首句不入韵"): "平平平仄仄 仄仄仄平平 仄仄平平仄 平平仄仄平",
        (5, "平起首句入韵"): "平平仄仄平 仄仄仄平平 仄仄平平仄 平平仄仄平",
        (7, "平起首句入韵"): "平平仄仄仄平平 仄仄平平仄仄平 仄仄平平平仄仄 平平仄仄仄平平",
        (7, "仄起首句入韵"): "仄仄平平仄仄平 平平仄仄仄平平 平平仄仄平平仄 仄仄平平仄仄平",
        (7, "平起首句不入韵"): "平平仄仄平平仄 仄仄平平仄仄平 仄仄平平平仄仄 平平仄仄仄平平",
        (7, "仄起首句不入韵"): "仄仄平平平仄仄 平平仄仄仄平平 平平仄仄平平仄 仄仄平平仄仄平",
    }
    for (chars, name), lines in textbook.items():
        free = free5 if chars == 5 else free7
        want = ["".join("中" if i in free else t for i, t in enumerate(x)) for x in lines.split()]
        assert tone_patterns(chars, 4)[name] == want
        # 律诗: lines 5-8 go on by the same rules, so they are the 首句不入韵 quatrain of the
        # same 起 (the first line no longer rhymes)
        plain = textbook[(chars, name.replace("首句入韵", "首句不入韵"))].split()[0]
        again = ["".join("中" if i in free else t for i, t in enumerate(plain))] + want[1:]
        assert tone_patterns(chars, 8)[name] == want + again


def test_check_form():
    good = "白日依山尽，\n黄河入海流。\n欲穷千里目，\n更上一层楼。"
    assert check_form(good, 5, 4)
    assert check_form(good, 5, 4, acrostic="白黄欲更", first_line="白日依山尽")
    assert not check_form(good, 5, 4, acrostic="白黄欲天")
    assert not check_form(good, 7, 4) and not check_form(good, 5, 8)
    assert not check_form(good.replace("流。", "流？"), 5, 4)  # wrong punctuation
    assert not check_form(good.replace("海", "a"), 5, 4)  # a Latin letter
    assert not check_form(good.replace("千里目", "千里目目"), 5, 4)  # a long line
    assert not check_form(good.replace("欲穷千里目", "白日依山尽"), 5, 4)  # a repeated line
    assert not check_form(good + "\n", 5, 4)


# ------------------------------------------------------------------------------ generation

HANZI = (
    "床前明月光疑是地上霜举头望低思故乡白日依山尽黄河入海流欲穷千里目更一层楼春眠不觉晓处"
    "闻啼鸟夜来风雨声花落知多少朝辞帝彩云间江陵还两岸猿住轻舟已过万重天人长城东西南北红豆"
    "生国愿君采此物最相秋水清香阳方堂王"
)


def poem_vocab():
    """Chinese characters among everything a poem must never contain."""
    return Vocab(["<unk>", "\n", "，", "。", "？", "！", "a", "b", "Z", " ", *HANZI], level="char")


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    vocab = poem_vocab()
    model = LanguageModel(
        LanguageModelConfig(vocab_size=len(vocab), embed_size=16, hidden_size=32, num_layers=1)
    )
    return model.eval(), vocab


class Adversary:
    """A model that wants nothing but the tokens a poem must not contain."""

    def __init__(self, vocab):
        bad = [vocab.stoi[t] for t in ["<unk>", "\n", "？", "a", " ", "，"]]
        self.logits = torch.full((len(vocab),), -12.0)
        self.logits[bad] = 8.0

    def __call__(self, tokens, state=None):
        return self.logits.expand(*tokens.shape, -1), state


SPECS = [
    PoemSpec(5, 4),
    PoemSpec(7, 4),
    PoemSpec(5, 8),
    PoemSpec(7, 8),
    PoemSpec(5, 4, acrostic="春风明月"),
    PoemSpec(7, 8, acrostic="春风明月千里江山"),
    PoemSpec(5, 4, first_line="床前明月光"),
    PoemSpec(7, 4, first_line="朝辞白帝彩云间"),
    PoemSpec(5, 8, start="春风"),
    PoemSpec(5, 4, rhyme=True),
    PoemSpec(7, 4, tones=True),
    PoemSpec(5, 4, rhyme=True, tones=True),
    PoemSpec(7, 8, rhyme=True, tones=True),
    PoemSpec(7, 8, acrostic="春风明月千里江山", rhyme=True, tones=True),
    PoemSpec(5, 4, first_line="白日依山尽", rhyme=True, tones=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_a_thousand_untrained_poems_all_have_the_form(untrained, spec):
    model, vocab = untrained
    poems = generate_poems(model, vocab, spec, count=1000, seed=1, batch_size=500)
    assert len(poems) == 1000
    heads = spec.acrostic
    first = spec.first_line
    for p in poems:
        assert check_form(p.text, spec.chars, spec.lines, acrostic=heads, first_line=first), p.text
        assert p.form and p.text == "\n".join(p.lines)
        if spec.start:
            assert p.text.startswith(spec.start)
        if spec.rhyme:
            assert check_rhyme(p.text) and p.rhyme, p.text
        if spec.tones:
            assert check_tones(p.text) and p.tones, p.text
    assert len({p.text for p in poems}) > 900  # samples, not one poem repeated


@pytest.mark.parametrize(
    "spec",
    [PoemSpec(5, 4), PoemSpec(7, 8, acrostic="春风明月千里江山", rhyme=True, tones=True)],
    ids=repr,
)
def test_an_adversarial_model_cannot_break_the_form(spec):
    vocab = poem_vocab()
    for cfg in (
        SamplingConfig(),
        SamplingConfig(temperature=0),
        SamplingConfig(top_k=3, top_p=0.5),
    ):
        poems = generate_poems(Adversary(vocab), vocab, spec, count=200, cfg=cfg, seed=0)
        assert all(p.form and p.rhyme >= spec.rhyme and p.tones >= spec.tones for p in poems)


def test_same_seed_same_poems(untrained):
    model, vocab = untrained
    spec = PoemSpec(5, 4, rhyme=True)
    a = [p.text for p in generate_poems(model, vocab, spec, count=5, seed=3)]
    b = [p.text for p in generate_poems(model, vocab, spec, count=5, seed=3)]
    c = [p.text for p in generate_poems(model, vocab, spec, count=5, seed=4)]
    assert a == b != c


def test_poem_reports_what_it_satisfies(untrained):
    model, vocab = untrained
    poem = generate_poems(model, vocab, PoemSpec(5, 4, rhyme=True, tones=True), seed=0)[0]
    d = poem.to_dict()
    assert d["text"] == poem.text and {"form", "rhyme", "tones"} <= set(d["satisfies"])
    assert d["rhyme_group"] and d["tone_pattern"]


@pytest.mark.parametrize(
    "kwargs,mention",
    [
        ({"acrostic": "春风明"}, "one character per line"),
        ({"acrostic": "春风明龘"}, "not in the model's vocabulary"),
        ({"acrostic": "春风明a"}, "not a Chinese character"),
        ({"first_line": "床前明月"}, "must have 5 characters"),
        ({"chars": 6}, "5 or 7"),
        ({"lines": 6}, "4 or 8"),
        ({"first_line": "天天天天天", "tones": True}, "tone pattern"),
        ({"first_line": "床前明月光", "acrostic": "春风明月"}, "cannot start with both"),
        ({"start": "床前明月光床前明月光"}, "repeats a line"),
    ],
)
def test_impossible_requests_are_config_errors(untrained, kwargs, mention):
    model, vocab = untrained
    with pytest.raises(ConfigError, match=mention):
        generate_poems(model, vocab, PoemSpec(**kwargs), seed=0)


def test_non_chinese_model_is_refused():
    vocab = Vocab(["<unk>", "\n", *"abcdefghij ,."], level="char")
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), embed_size=4, hidden_size=8))
    with pytest.raises(ConfigError, match="Chinese characters"):
        generate_poems(model, vocab, PoemSpec(), seed=0)


def test_too_few_rhyming_characters_is_refused_not_looped():
    vocab = Vocab(["<unk>", "\n", "，", "。", *"天地人月山水花鸟"], level="char")
    model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), embed_size=4, hidden_size=8))
    with pytest.raises(ConfigError, match="rhyme"):
        generate_poems(model, vocab, PoemSpec(5, 8, rhyme=True), seed=0)
    assert all(p.form for p in generate_poems(model, vocab, PoemSpec(5, 4), count=50, seed=0))
