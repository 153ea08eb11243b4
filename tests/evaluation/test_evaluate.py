"""Exact evaluation: every target scored once, equal to a direct computation."""

import math

import pytest
import torch

from rnnlab.evaluation.text import IGNORE, eval_layout, evaluate, score_tokens
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel


@pytest.mark.parametrize("n,b", [(2, 1), (10, 3), (101, 10), (7, 20), (64, 8)])
def test_layout_scores_every_target_exactly_once(n, b):
    ids = torch.arange(n) + 1000
    inputs, targets = eval_layout(ids, b)
    mask = targets != IGNORE
    assert int(mask.sum()) == n - 1
    assert sorted(targets[mask].tolist()) == list(range(1001, 1000 + n))
    # each target is the token right after its input
    assert torch.equal(targets[mask], inputs[mask] + 1)


def direct_loss(model: LanguageModel, ids: torch.Tensor) -> float:
    logits, _ = model(ids[:-1].unsqueeze(1))
    logp = torch.log_softmax(logits.squeeze(1).double(), -1)
    return float(-logp.gather(1, ids[1:].unsqueeze(1)).mean())


@pytest.fixture
def model():
    torch.manual_seed(3)
    return LanguageModel(
        LanguageModelConfig(vocab_size=11, embed_size=6, hidden_size=6, num_layers=1)
    ).eval()


def test_batch_one_equals_direct_computation_for_any_window(model):
    ids = torch.randint(0, 11, (97,))
    with torch.no_grad():
        expected = direct_loss(model, ids)
    for bptt in (1, 5, 96, 200):
        r = evaluate(model, ids, batch_size=1, bptt=bptt, level="char")
        assert r.loss == pytest.approx(expected, rel=1e-5)
        assert r.bpc == pytest.approx(expected / math.log(2), rel=1e-5)


def test_columns_equal_direct_computation_per_column(model):
    ids = torch.randint(0, 11, (50,))
    r = evaluate(model, ids, batch_size=4, bptt=3)
    # columns of length ceil(49/4) = 13 over the 49 targets
    total = 0.0
    with torch.no_grad():
        for start in range(0, 49, 13):
            piece = ids[start : min(start + 13, 49) + 1]
            total += direct_loss(model, piece) * (len(piece) - 1)
    assert r.loss == pytest.approx(total / 49, rel=1e-5)
    assert r.tokens == 49


def test_score_tokens_matches_direct(model):
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    scores = score_tokens(model, 0, ids, [str(i) for i in range(11)])
    with torch.no_grad():
        logits, _ = model(torch.tensor([0, *ids[:-1]]).unsqueeze(1))
        logp = torch.log_softmax(logits.squeeze(1), -1)
    assert [s.token for s in scores] == [str(i) for i in ids]
    for t, s in enumerate(scores):
        assert s.logprob == pytest.approx(float(logp[t, ids[t]]), abs=1e-5)
