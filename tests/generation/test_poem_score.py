"""Scoring given poems: against a step-by-step hand computation, against the score of the same
poems when they were generated (sampling, candidates, beam; titled and untitled; both heads),
batching and ordering, ``<unk>`` counting and one-line refusals."""

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError
from rnnlab.generation.poem_score import count_unknown, poem_lines, poem_text, score_poems
from rnnlab.generation.poetry import PoemSpec, check_form, generate_poems
from rnnlab.generation.sampling import SamplingConfig
from rnnlab.models.build import build_model
from rnnlab.models.config import LanguageModelConfig

HANZI = (
    "床前明月光疑是地上霜举头望低思故乡白日依山尽黄河入海流欲穷千里目更一层楼春眠不觉晓处"
    "闻啼鸟夜来风雨声花落知多少朝辞帝彩云间江陵还两岸猿住轻舟已过万重天人长城东西南北"
)
JING_YE_SI = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
DENG_LOU = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
SEP = ":"


def make_model(head: str = "softmax", seed: int = 0):
    torch.manual_seed(seed)
    vocab = Vocab(["<unk>", "\n", "，", "。", "？", SEP, *HANZI], level="char")
    extra = {"cutoffs": (8, 30)} if head == "adaptive" else {}
    config = LanguageModelConfig(
        vocab_size=len(vocab), embed_size=12, hidden_size=24, num_layers=2, head=head, **extra
    )
    return build_model(config).eval(), vocab


@pytest.fixture(scope="module", params=["softmax", "adaptive"])
def tiny(request):
    return make_model(request.param)


def by_hand(model, vocab, poem: str, title: str | None = None) -> float:
    """One token at a time through the model, log-softmax of each step's output."""
    unk = vocab.unk_id
    context = [vocab.stoi["\n"]]
    if title is not None:
        context += [vocab.stoi.get(c, unk) for c in title] + [vocab.stoi[SEP]]
    ids = [vocab.stoi.get(c, unk) for c in poem]
    seq = context + ids
    state = model.init_state(1)
    total = 0.0
    with torch.no_grad():
        for t in range(len(seq) - 1):
            out, state = model(torch.tensor([[seq[t]]]), state)
            if t + 1 >= len(context):
                logp = torch.log_softmax(out[0, 0].double(), dim=-1)
                total += float(logp[seq[t + 1]])
    return total / len(ids)


def test_a_score_is_the_step_by_step_mean_log_probability(tiny):
    model, vocab = tiny
    poems = [JING_YE_SI, DENG_LOU, "春眠不觉晓，处处闻啼鸟。"]
    got = score_poems(model, vocab, poems)
    for poem, score in zip(poems, got, strict=True):
        assert score == pytest.approx(by_hand(model, vocab, poem), abs=1e-6)
    titled = score_poems(model, vocab, poems, ["静夜思", "登楼", "春"], title_sep=SEP)
    for poem, title, score in zip(poems, ["静夜思", "登楼", "春"], titled, strict=True):
        assert score == pytest.approx(by_hand(model, vocab, poem, title), abs=1e-6)
    assert titled != got  # the title is read: the scores change


@pytest.mark.parametrize("kwargs", [{}, {"candidates": 4}, {"beam": 6}], ids=str)
@pytest.mark.parametrize("title", [None, "春夜"])
def test_generated_poems_score_what_generation_said(tiny, kwargs, title):
    model, vocab = tiny
    sep = SEP if title else None
    spec = PoemSpec(5, 4, title=title, rhyme=bool(kwargs))
    poems = generate_poems(
        model, vocab, spec, count=5, cfg=SamplingConfig(temperature=0.9), seed=3, title_sep=sep,
        **kwargs,
    )  # fmt: skip
    titles = [title] * len(poems) if title else None
    got = score_poems(model, vocab, [p.text for p in poems], titles, title_sep=sep)
    for poem, score in zip(poems, got, strict=True):
        assert score == pytest.approx(poem.score, abs=1e-6)


def test_a_titled_model_that_draws_its_own_titles_scores_the_same():
    model, vocab = make_model(seed=4)
    poems = generate_poems(model, vocab, PoemSpec(7, 4), count=6, seed=0, title_sep=SEP)
    got = score_poems(model, vocab, [p.text for p in poems], [p.title for p in poems], SEP)
    assert got == pytest.approx([p.score for p in poems], abs=1e-6)


def test_batches_and_order_do_not_change_the_scores(tiny):
    model, vocab = tiny
    poems = [DENG_LOU, "春眠不觉晓，", JING_YE_SI + DENG_LOU, JING_YE_SI, "月"]
    one = [score_poems(model, vocab, [p])[0] for p in poems]
    assert score_poems(model, vocab, poems, batch_size=2) == pytest.approx(one, abs=1e-6)
    assert score_poems(model, vocab, poems[::-1]) == pytest.approx(one[::-1], abs=1e-6)
    assert score_poems(model, vocab, []) == []


def test_newlines_and_spaces_are_joined_away(tiny):
    model, vocab = tiny
    lines = "床前明月光，\n疑是地上霜。\n举头望明月，\n低头思故乡。\n"
    assert poem_text(lines) == JING_YE_SI
    assert score_poems(model, vocab, [lines, " " + JING_YE_SI]) == pytest.approx(
        score_poems(model, vocab, [JING_YE_SI, JING_YE_SI]), abs=1e-6
    )


def test_unknown_characters_are_unk_and_counted(tiny):
    model, vocab = tiny
    odd = JING_YE_SI.replace("霜", "雴").replace("乡", "竺")  # neither is in the vocabulary
    other = JING_YE_SI.replace("霜", "㐀").replace("乡", "𠀀")
    a, b, known = score_poems(model, vocab, [odd, other, JING_YE_SI])
    assert a == pytest.approx(b, abs=1e-9)  # both read as <unk> twice
    assert abs(a - known) > 1e-3
    assert a == pytest.approx(by_hand(model, vocab, odd), abs=1e-6)
    assert count_unknown(vocab, [odd, JING_YE_SI], ["雴夜", "夜"]) == {
        "poem_chars": 48,
        "poem_unknown": 2,
        "title_chars": 3,
        "title_unknown": 1,
    }


def test_poem_lines_writes_one_line_per_row_for_the_checkers():
    assert poem_lines(JING_YE_SI) == "床前明月光，\n疑是地上霜。\n举头望明月，\n低头思故乡。"
    assert check_form(poem_lines(DENG_LOU), 5, 4)
    notes = "两宴书长，一与家天斜。出寒看阶帆，竺却参雴飞。"
    assert poem_lines(notes).split("\n")[0] == "两宴书长，"
    assert not check_form(poem_lines(notes), 5, 4)
    assert poem_lines("何时复采菱？江中密相遇。") == "何时复采菱？\n江中密相遇。"


@pytest.mark.parametrize(
    "texts,titles,sep,error,mention",
    [
        ([JING_YE_SI], None, SEP, ConfigError, "give a title for each poem"),
        ([JING_YE_SI], ["夜"], None, ConfigError, "trained without titles"),
        ([JING_YE_SI, DENG_LOU], ["夜"], SEP, ConfigError, "2 poems need 2 titles"),
        ([JING_YE_SI], ["夜:思"], SEP, ConfigError, "one line without ':'"),
        ([JING_YE_SI], [None], SEP, ConfigError, "title 1"),
        (["  \n"], None, None, DataError, "poem 1 is empty"),
        (["静夜思:" + JING_YE_SI], ["夜"], SEP, DataError, "title separator"),
    ],
)
def test_refusals_are_one_line(tiny, texts, titles, sep, error, mention):
    model, vocab = tiny
    with pytest.raises(error) as e:
        score_poems(model, vocab, texts, titles, title_sep=sep)
    assert mention in str(e.value) and "\n" not in str(e.value)


def test_a_word_model_is_refused():
    vocab = Vocab(["<unk>", "<eos>", "the", "cat"], level="word")
    model = build_model(LanguageModelConfig(vocab_size=4, embed_size=4, hidden_size=4))
    with pytest.raises(ConfigError, match="character-level"):
        score_poems(model, vocab, ["the cat"])
