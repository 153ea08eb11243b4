"""The repetition penalty on hand-made logits and in every decoder, and the detector of output
that collapsed into whitespace or a loop."""

import dataclasses
import math

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError
from rnnlab.generation.fast_step import ForwardStepper
from rnnlab.generation.poetry import PoemSpec, check_form, generate_poems
from rnnlab.generation.repetition import SeenTokens, find_degeneration, penalize_repeats
from rnnlab.generation.sampling import (
    SamplingConfig,
    beam_search,
    find_degenerate_samples,
    generate,
    make_generator,
    pick,
    sample_ids,
)
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel

# ------------------------------------------------------------------------------ the penalty


def test_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([[4.0, -1.0, 2.0, -3.0, 0.0, float("-inf")]])
    seen = torch.tensor([[True, True, False, False, True, True]])
    got = penalize_repeats(logits, seen, 2.0)
    assert got.tolist() == [[2.0, -2.0, 2.0, -3.0, 0.0, float("-inf")]]
    assert penalize_repeats(logits, seen, 1.0).equal(logits)


def test_seen_tokens_count_each_token_once_and_follow_the_window():
    seen = SeenTokens([1, 1, 1, 3], rows=2, vocab_size=5)
    assert seen.seen.tolist() == [[False, True, False, True, False]] * 2
    seen.push(torch.tensor([1, 4]))
    assert seen.seen.tolist() == [
        [False, True, False, True, False],
        [False, True, False, True, True],
    ]
    # a token seen three times is lowered exactly as much as one seen once
    logits = torch.tensor([[3.0, 3.0, 3.0, 3.0, 3.0]]).expand(2, -1)
    once = SeenTokens([1], rows=2, vocab_size=5).seen
    thrice = SeenTokens([1, 1, 1], rows=2, vocab_size=5).seen
    assert penalize_repeats(logits, once, 1.5).equal(penalize_repeats(logits, thrice, 1.5))

    recent = SeenTokens([0, 1, 2], rows=1, vocab_size=5, window=2)
    assert recent.seen.tolist() == [[False, True, True, False, False]]
    recent.push(torch.tensor([2]))  # the window now holds 2, 2
    assert recent.seen.tolist() == [[False, False, True, False, False]]
    recent.push(torch.tensor([4]))
    assert recent.seen.tolist() == [[False, False, True, False, True]]


def test_seen_tokens_select_rows_like_a_beam():
    seen = SeenTokens([0], rows=1, vocab_size=4, window=3)
    seen.select(torch.tensor([0, 0]))
    seen.push(torch.tensor([1, 2]))
    seen.select(torch.tensor([1, 1, 0]))
    seen.push(torch.tensor([3, 0, 3]))
    assert seen.seen.tolist() == [
        [True, False, True, True],
        [True, False, True, False],
        [True, True, False, True],
    ]


def test_pick_applies_the_penalty_before_temperature_and_top_k():
    logits = torch.tensor([[5.0, 3.0, 1.0, -2.0]])
    seen = torch.tensor([[True, False, False, False]])
    greedy = SamplingConfig(temperature=0, repetition_penalty=2.0)
    assert pick(logits, greedy, seen=seen).item() == 1  # 5 / 2 < 3
    assert pick(logits, SamplingConfig(temperature=0), seen=seen).item() == 0  # penalty off
    # top-k 1 after the penalty keeps token 1; before it, it would keep token 0
    top1 = SamplingConfig(temperature=0.5, top_k=1, repetition_penalty=2.0)
    draws = pick(logits.expand(50, -1), top1, make_generator(0), seen=seen.expand(50, -1))
    assert draws.eq(1).all()


def test_sampling_draws_from_the_penalised_distribution():
    logits = torch.tensor([2.0, 1.0, -0.5, 0.0])
    seen = torch.tensor([True, False, True, False])
    cfg = SamplingConfig(temperature=0.7, repetition_penalty=1.6)
    n = 40_000
    drawn = pick(logits.expand(n, -1), cfg, make_generator(1), seen=seen.expand(n, -1))
    expected = torch.softmax(torch.tensor([2.0 / 1.6, 1.0, -0.5 * 1.6, 0.0]) / 0.7, dim=0)
    freq = torch.bincount(drawn, minlength=4).double() / n
    assert torch.allclose(freq, expected.double(), atol=0.01), (freq, expected)


@pytest.mark.parametrize(
    "kwargs,mention",
    [
        ({"repetition_penalty": 0.9}, "repetition penalty"),
        ({"repetition_penalty": 0.0}, "repetition penalty"),
        ({"repetition_penalty": -2.0}, "repetition penalty"),
        ({"repetition_penalty": math.nan}, "nan"),
        ({"repetition_penalty": math.inf}, "inf"),
        ({"repetition_window": 0}, "repetition window"),
    ],
)
def test_bad_repetition_settings_are_config_errors(kwargs, mention):
    with pytest.raises(ConfigError, match=mention):
        SamplingConfig(**kwargs)
    with pytest.raises(ConfigError, match=mention):
        beam_search(object(), [1], **kwargs)


# ------------------------------------------------------------------------------ in the decoders


class FixedLogits:
    """A model whose next-token logits never change: a weakly trained character model that has
    learned the character frequencies and little else (the space first, by far)."""

    def __init__(self, logits):
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def __call__(self, tokens, state=None):
        return self.logits.expand(*tokens.shape, -1), state

    def eval(self):
        return self


def weak_char_model():
    vocab = Vocab(["<unk>", "\n", " ", "e", "t", "a", "o", "n"], level="char")
    logits = [-5.0, 2.5, 7.0, 2.7, 2.6, 2.4, 2.3, 2.2]  # like a 40-step quick-preset model
    return FixedLogits(logits), vocab


def test_greedy_and_beam_collapse_into_spaces_and_the_penalty_gets_them_out():
    model, vocab = weak_char_model()
    greedy = SamplingConfig(temperature=0)
    assert generate(model, vocab, "char", length=40, cfg=greedy) == [" " * 40]
    assert generate(model, vocab, "char", prime="at ", length=40, beam=3) == ["at " + " " * 40]
    cfg = SamplingConfig(temperature=0, repetition_penalty=3.0)
    for beam in (None, 3):
        text = generate(model, vocab, "char", length=40, cfg=cfg, beam=beam)[0]
        # 7 / 3 < 2.7: after one space the letters come, each lowered in turn once written
        assert text.startswith(" et\na"), repr(text)
        assert find_degeneration(text).kind != "whitespace"


def test_a_window_breaks_the_loop_a_whole_text_penalty_falls_back_into():
    """Once every token has been seen, a whole-text penalty lowers them all alike and greedy
    returns to the space; a window of 4 keeps the recent tokens lowered, so the text cycles
    through the letters instead of collapsing."""
    model, vocab = weak_char_model()
    whole = SamplingConfig(temperature=0, repetition_penalty=3.0)
    text = generate(model, vocab, "char", length=60, cfg=whole)[0]
    assert text.endswith(" " * 40)
    windowed = SamplingConfig(temperature=0, repetition_penalty=3.0, repetition_window=4)
    text = generate(model, vocab, "char", length=60, cfg=windowed)[0]
    assert text.startswith(" et\na et\na et\na") and "  " not in text  # a cycle of 5 > 4


def test_the_prime_counts_for_the_penalty_but_the_boundary_token_does_not():
    model, vocab = weak_char_model()
    cfg = SamplingConfig(temperature=0, repetition_penalty=3.0)
    # the boundary token (a newline) is not text: without a prime, the space comes first
    assert generate(model, vocab, "char", length=1, cfg=cfg) == [" "]
    # the prime's space is lowered (7 / 3 < 2.7): the first pick is "e"; then "e" is lowered too
    assert generate(model, vocab, "char", prime="o ", length=2, cfg=cfg) == ["o et"]


def test_beam_logprob_is_the_penalised_log_probability():
    model, _ = weak_char_model()
    hyps = beam_search(model, [1, 2], beam=2, length=3, repetition_penalty=3.0)
    for h in hyps:
        seen = {1, 2}  # the whole context, by default
        total = 0.0
        for token in h.tokens:
            z = model.logits.clone()  # penalised in the model's float32, then summed in float64
            for s in seen:
                z[s] = z[s] / 3.0 if z[s] > 0 else z[s] * 3.0
            total += float(torch.log_softmax(z.double(), dim=0)[token])
            seen.add(token)
        assert h.logprob == pytest.approx(total, abs=1e-9)
    # history: what counts as already written (here nothing: the space comes first again)
    assert hyps[0].tokens[0] != 2
    fresh = beam_search(model, [1, 2], beam=2, length=3, repetition_penalty=3.0, history=[])
    assert fresh[0].tokens[0] == 2


def tiny_model(vocab_size=11, seed=0):
    torch.manual_seed(seed)
    config = LanguageModelConfig(vocab_size=vocab_size, embed_size=6, hidden_size=10)
    return LanguageModel(config).eval()


def test_penalty_one_is_the_output_without_it():
    vocab = Vocab(["<unk>", "\n", *"abcdefgh "], level="char")
    model = tiny_model(len(vocab))
    sampling = SamplingConfig(temperature=0.9, top_k=5)
    cases = [
        ({"count": 4, "seed": 3}, sampling),
        ({"count": 4, "seed": 3, "workers": 2}, sampling),
        ({}, SamplingConfig(temperature=0)),
        ({"beam": 3, "count": 2}, SamplingConfig()),
    ]
    for kw, cfg in cases:
        off = dataclasses.replace(cfg, repetition_penalty=1.0, repetition_window=3)
        a = generate(model, vocab, "char", prime="ab", length=30, cfg=cfg, **kw)
        assert a == generate(model, vocab, "char", prime="ab", length=30, cfg=off, **kw)
    on = dataclasses.replace(sampling, repetition_penalty=1.5)
    a = generate(model, vocab, "char", prime="ab", length=30, cfg=sampling, count=4, seed=3)
    assert a != generate(model, vocab, "char", prime="ab", length=30, cfg=on, count=4, seed=3)


def test_sharded_sampling_with_a_penalty_is_reproducible():
    model, _ = weak_char_model()
    cfg = SamplingConfig(repetition_penalty=2.0, repetition_window=5)
    stepper = ForwardStepper(model)

    def draw():
        return sample_ids(
            stepper, [1], length=20, count=6, cfg=cfg, generator=make_generator(4), workers=2
        )

    rows = draw()
    assert rows == draw() and len(rows) == 6 and all(len(r) == 20 for r in rows)


def test_poems_take_the_penalty():
    """A model that prefers one character: greedy poems repeat it in every free slot; with the
    penalty it is written once and the other characters are all different."""
    vocab = Vocab(
        ["<unk>", "\n", "，", "。", *"天地人月山水花霜流鸟春风明光江河云雨东西南北"], level="char"
    )
    logits = torch.ones(len(vocab))
    logits[vocab.stoi["月"]] = 3.0
    model = FixedLogits(logits)
    spec = PoemSpec(5, 4)
    plain = generate_poems(model, vocab, spec, cfg=SamplingConfig(temperature=0))[0]
    assert plain.text.count("月") >= 16
    cfg = SamplingConfig(temperature=0, repetition_penalty=4.0)
    poem = generate_poems(model, vocab, spec, cfg=cfg)[0]
    chars = [c for c in poem.text if c not in "，。\n"]
    assert check_form(poem.text, 5, 4) and len(set(chars)) == 20 and "月" in chars


# ------------------------------------------------------------------------------ the detector


@pytest.mark.parametrize(
    "text,kind,unit",
    [
        (" " * 40, "whitespace", " " * 40),
        ("\n" * 12, "whitespace", "\n" * 12),
        (" \n\t " * 3, "whitespace", " \n\t " * 3),
        ("he" + " te" * 19, "loop", "te "),
        ("he te te te te te te te te t", "loop", "te "),  # cut inside the unit
        ("the the the the the ", "loop", "the "),
        ("def f():\n    return 1" + "\n" * 30, "loop", "\n"),
        ("import context." + " " * 40, "loop", " "),
        ("Once upon a time. " + "abcabcabcabcabcabcabcabc", "loop", "abc"),
    ],
)
def test_degenerate_texts_are_found(text, kind, unit):
    found = find_degeneration(text)
    assert found is not None and (found.kind, found.unit) == (kind, unit), found
    if kind == "loop":
        assert text[found.start :].startswith(text[found.start : found.start + len(unit)])
        assert found.repeats >= 3


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",  # too short to say
        "The quick brown fox jumps over the lazy dog.\nThe five boxing wizards jump quickly.\n",
        "def add(a, b):\n    return a + b\n\n\nclass Point:\n    def norm(self):\n        ",
        "She waited... and waited...",
        "Well, well, well. What have we here? A cat in the hall!!!",
        "The a wt etheteenef t peche e\nrtieietu te hotdrlflotgate tmh acleieretigwolethelol",
        "ab" * 3,  # a short text is not judged by its period alone
    ],
)
def test_ordinary_text_is_not_flagged(text):
    assert find_degeneration(text) is None


def test_descriptions_say_what_happened():
    assert find_degeneration(" " * 40).describe() == "only whitespace (40 spaces)"
    assert find_degeneration("\n" * 9).describe() == "only whitespace (9 newlines)"
    found = find_degeneration("he" + " te" * 19)
    assert found.describe() == 'a loop: "te " repeated 19 times to the end'
    assert "\\n" in find_degeneration("ok." + "\n" * 20).describe()


def test_only_the_generated_part_is_judged():
    texts = ["import " + " " * 40, "import os\nimport sys\n", "import " + "abc" * 10]
    found = find_degenerate_samples(texts, "import ", "char")
    assert found[0].kind == "whitespace" and found[1] is None and found[2].unit == "abc"
    # word level: the prime is tokenized and rejoined; what follows it is the generated part
    found = find_degenerate_samples(["the cat the cat the cat the cat"], "the cat", "word")
    assert found[0] is not None and found[0].unit == "the cat "
