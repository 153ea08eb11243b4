"""``score_surprisal``: per-token log-probabilities whose sum is evaluate()'s exact total (one
column), the same values as ``score_tokens``, windows that carry the state, and alternatives
that are the model's likeliest tokens."""

import math

import pytest
import torch

from rnnlab.errors import DataError
from rnnlab.evaluation.text import evaluate, score_surprisal, score_tokens
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import AdaptiveLanguageModel, LanguageModel

ITOS = ["<unk>", "\n", " ", *"abcdefghij"]


def model(head: str = "softmax"):
    torch.manual_seed(0)
    config = LanguageModelConfig(
        vocab_size=len(ITOS), embed_size=8, hidden_size=16, num_layers=2, head=head,
        cutoffs=[4] if head == "adaptive" else [],
    )  # fmt: skip
    return (AdaptiveLanguageModel if head == "adaptive" else LanguageModel)(config)


IDS = torch.randint(2, len(ITOS), (300,), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.mark.parametrize("head", ["softmax", "adaptive"])
def test_the_sum_is_evaluate_s_total(head):
    m = model(head)
    scored = score_surprisal(m, 1, IDS, ITOS, chunk=64)
    result = evaluate(m, torch.tensor([1, *IDS]), batch_size=1, bptt=50)
    assert result.tokens == len(IDS)
    total = sum(s.logprob for s in scored)
    assert total == pytest.approx(-result.loss * result.tokens, rel=1e-5)
    assert math.exp(-total / len(IDS)) == pytest.approx(result.perplexity, rel=1e-5)


def test_windows_carry_the_state_and_agree_with_score_tokens():
    m = model()
    plain = score_tokens(m, 1, IDS, ITOS)
    for chunk in (1, 7, 1000):
        scored = score_surprisal(m, 1, IDS, ITOS, chunk=chunk)
        assert [s.token for s in scored] == [ITOS[i] for i in IDS]
        for a, b in zip(scored, plain, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_alternatives_are_the_likeliest_tokens_in_order():
    m = model()
    scored = score_surprisal(m, 1, IDS[:20], ITOS, top=3)
    for s in scored:
        probs = [p for _, p in s.alternatives]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert math.exp(s.logprob) <= probs[0] + 1e-6
        d = s.to_dict()
        assert d["surprisal"] == pytest.approx(-s.logprob)
        assert d["p"] == pytest.approx(math.exp(s.logprob))


def test_an_empty_text_is_refused():
    with pytest.raises(DataError, match="no tokens"):
        score_surprisal(model(), 1, [], ITOS)
