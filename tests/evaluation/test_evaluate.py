"""Exact evaluation: every target scored once, equal to a direct computation."""

import math

import pytest
import torch

from rnnlab.errors import DataError
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


def test_unscored_tokens_are_read_but_not_scored(model):
    """A titled corpus's titles are context: the mean is over the other targets, and the
    context still shapes their predictions (the state runs through the unscored tokens)."""
    torch.manual_seed(3)
    ids = torch.randint(0, model.config.vocab_size, (40,))
    unscored = torch.zeros(40, dtype=torch.bool)
    unscored[5:12] = True
    unscored[30:33] = True
    whole = evaluate(model, ids, batch_size=1, bptt=7)
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(1), model.init_state(1))
    nll = torch.nn.functional.cross_entropy(logits.squeeze(1), ids[1:], reduction="none")
    keep = ~unscored[1:]
    for batch in (1, 3):
        part = evaluate(model, ids, batch_size=batch, bptt=7, unscored=unscored)
        assert part.tokens == int(keep.sum()) == 39 - 10
        if batch == 1:
            assert part.loss == pytest.approx(float(nll[keep].mean()), rel=1e-5)
    assert whole.tokens == 39
    with pytest.raises(DataError, match="no scored tokens"):
        evaluate(model, ids, unscored=torch.ones(40, dtype=torch.bool))
