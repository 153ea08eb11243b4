"""The neural cache and dynamic evaluation: against static evaluation and a hand computation,
and every token scored before the model learns from it."""

import math

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.evaluation.adapt import (
    AdaptationRequest,
    CacheSettings,
    DynamicSettings,
    cache_grid_losses,
    evaluate_adaptive,
    gradient_rms,
)
from rnnlab.evaluation.text import evaluate
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import AdaptiveLanguageModel, LanguageModel

V = 13


def softmax_model(seed: int = 3) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = LanguageModelConfig(vocab_size=V, embed_size=6, hidden_size=8, num_layers=2)
    return LanguageModel(cfg).eval()


def adaptive_model(tied: bool, seed: int = 4) -> AdaptiveLanguageModel:
    torch.manual_seed(seed)
    cfg = LanguageModelConfig(
        vocab_size=V,
        embed_size=8,
        hidden_size=8,
        num_layers=1,
        head="adaptive",
        cutoffs=(4, 8),
        tie_weights=tied,
        **({} if tied else {"div_value": 2.0}),
    )
    model = AdaptiveLanguageModel(cfg).eval()
    with torch.no_grad():  # nonzero biases, so the head is not trivially uniform
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


MODELS = {
    "softmax": softmax_model,
    "adaptive": lambda: adaptive_model(False),
    "tied adaptive": lambda: adaptive_model(True),
}


def ids_of(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n,), generator=g)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("batch_size,bptt", [(1, 7), (3, 5), (4, 100)])
def test_cache_with_lambda_zero_is_static_evaluation_exactly(kind, batch_size, bptt):
    model = MODELS[kind]()
    ids = ids_of(90)
    static = evaluate(model, ids, batch_size=batch_size, bptt=bptt, level="char")
    cached = evaluate_adaptive(
        model,
        ids,
        cache=CacheSettings(size=6, theta=0.7, lam=0.0),
        batch_size=batch_size,
        bptt=bptt,
        level="char",
    ).result
    assert cached.loss == static.loss
    assert cached.bpc == static.bpc
    assert cached.tokens == static.tokens


def hand_cache_logprobs(model, ids: torch.Tensor, size: int, theta: float, lam: float):
    """Step by step: h_t of the last layer for the whole stream, the full model distribution,
    and the cache over the last ``size`` (h_i, ids[i+1]) pairs before t."""
    with torch.no_grad():
        emb = model.embedding(ids[:-1, None])
        out, _ = model.rnn(emb)
        h = out[:, 0]  # (N-1, H)
        logits = model.readout(h)
        p_model = torch.softmax(logits.double(), -1)  # full softmax or adaptive log-probs alike
    result = []
    for t in range(len(ids) - 1):
        y = int(ids[t + 1])
        past = list(range(max(0, t - size), t))
        if not past:
            result.append(math.log(p_model[t, y]))
            continue
        weights = [math.exp(theta * float(h[t] @ h[i])) for i in past]
        p_cache = sum(w for w, i in zip(weights, past, strict=True) if int(ids[i + 1]) == y) / sum(
            weights
        )
        result.append(math.log((1 - lam) * float(p_model[t, y]) + lam * p_cache))
    return torch.tensor(result, dtype=torch.float64)


@pytest.mark.parametrize("kind", list(MODELS))
def test_cache_equals_a_step_by_step_hand_computation(kind):
    model = MODELS[kind]()
    ids = torch.tensor([1, 2, 3, 1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 9, 9, 1, 2, 3, 0, 12, 1, 2])
    size, theta, lam = 4, 0.8, 0.3
    expected = hand_cache_logprobs(model, ids, size, theta, lam)
    for bptt in (3, 5, 100):  # the cache carries across windows as the state does
        r = evaluate_adaptive(
            model,
            ids,
            cache=CacheSettings(size=size, theta=theta, lam=lam),
            batch_size=1,
            bptt=bptt,
            keep_scores=True,
        )
        assert torch.allclose(r.logprobs, expected, rtol=1e-5, atol=1e-6)
        assert r.result.loss == pytest.approx(float(-expected.mean()), rel=1e-6)


def test_cache_helps_on_repetitive_text_and_columns_keep_their_own_cache():
    model = softmax_model()
    ids = torch.tensor([3, 7, 1, 9, 4] * 40)
    static = evaluate(model, ids, batch_size=2, bptt=9).loss
    cached = evaluate_adaptive(
        model, ids, cache=CacheSettings(size=50, theta=0.5, lam=0.5), batch_size=2, bptt=9
    ).result.loss
    assert cached < static - 0.3
    # each column's first token has an empty cache: the model's own score
    r = evaluate_adaptive(
        model,
        ids,
        cache=CacheSettings(size=50, theta=0.5, lam=0.5),
        batch_size=2,
        bptt=9,
        keep_scores=True,
    )
    s = evaluate_adaptive(model, ids, batch_size=2, bptt=200, keep_scores=True)
    assert r.logprobs[0] == s.logprobs[0]
    column = math.ceil((len(ids) - 1) / 2)
    assert r.logprobs[column] == s.logprobs[column]


def test_grid_of_cache_settings_matches_single_evaluations():
    model = softmax_model()
    ids = ids_of(120, seed=5)
    static, losses = cache_grid_losses(
        model, ids, thetas=(0.2, 1.0), sizes=(3, 30), lambdas=(0.0, 0.25), batch_size=3, bptt=11
    )
    assert static == evaluate(model, ids, batch_size=3, bptt=11).loss
    for (theta, size, lam), loss in losses.items():
        single = evaluate_adaptive(
            model, ids, cache=CacheSettings(size, theta, lam), batch_size=3, bptt=11
        )
        assert loss == pytest.approx(single.result.loss, rel=1e-9)


@pytest.mark.parametrize("method", ["sgd", "rms"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_dynamic_with_lr_zero_is_static_evaluation(kind, method):
    model = MODELS[kind]()
    ids = ids_of(80)
    rms = gradient_rms(model, ids_of(200, seed=9), batch_size=2, bptt=10, windows=5)
    static = evaluate(model, ids, batch_size=2, bptt=10)
    dyn = evaluate_adaptive(
        model,
        ids,
        dynamic=DynamicSettings(method=method, lr=0.0, decay=0.1),
        rms=rms,
        batch_size=2,
        bptt=10,
    ).result
    # the same weights throughout; torch's kernels with autograd on may differ in the last bits
    assert dyn.loss == pytest.approx(static.loss, rel=1e-7)
    assert dyn.tokens == static.tokens


@pytest.mark.parametrize("method,lr", [("sgd", 10.0), ("rms", 0.1)])
def test_each_token_is_scored_before_the_model_learns_from_it(method, lr):
    model = softmax_model()
    segment = ids_of(41, seed=7)
    stream = torch.cat((segment, segment[1:]))  # the segment's 40 targets, then again
    before = [p.detach().clone() for p in model.parameters()]
    settings = DynamicSettings(method=method, lr=lr, decay=0.0)
    rms = gradient_rms(model, ids_of(300, seed=8), batch_size=1, bptt=40, windows=5)
    dyn = evaluate_adaptive(
        model, stream, dynamic=settings, rms=rms, batch_size=1, bptt=40, keep_scores=True
    )
    static = evaluate_adaptive(model, stream, batch_size=1, bptt=40, keep_scores=True)
    first, repeat = slice(0, 40), slice(40, 80)
    # the first occurrence is scored by the trained weights: no better than static
    assert torch.allclose(dyn.logprobs[first], static.logprobs[first], rtol=1e-6, atol=1e-6)
    # the repeat is scored after learning the first: much better
    assert dyn.logprobs[repeat].mean() > static.logprobs[repeat].mean() + 0.1
    # changing the future changes nothing scored before it
    changed = stream.clone()
    changed[60:] = (changed[60:] + 1) % V
    other = evaluate_adaptive(
        model, changed, dynamic=settings, rms=rms, batch_size=1, bptt=40, keep_scores=True
    )
    assert torch.equal(other.logprobs[:59], dyn.logprobs[:59])
    # and the model is the trained one again afterwards
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_cache_and_dynamic_together_score_no_token_after_seeing_it():
    model = adaptive_model(True)
    stream = torch.cat((ids_of(31, seed=2), ids_of(30, seed=2)[1:]))
    kwargs = dict(
        cache=CacheSettings(size=20, theta=0.5, lam=0.2),
        dynamic=DynamicSettings(method="sgd", lr=0.5, decay=0.0),
        batch_size=1,
        bptt=10,
        keep_scores=True,
    )
    both = evaluate_adaptive(model, stream, **kwargs)
    changed = stream.clone()
    changed[35:] = (changed[35:] + 3) % V
    other = evaluate_adaptive(model, changed, **kwargs)
    assert torch.equal(other.logprobs[:34], both.logprobs[:34])
    cache_only = evaluate_adaptive(model, stream, **dict(kwargs, dynamic=None))
    # the first window is scored before any update: dynamic adds nothing there
    assert torch.allclose(both.logprobs[:10], cache_only.logprobs[:10], rtol=1e-6, atol=1e-6)


def test_dynamic_decay_pulls_back_to_the_trained_weights():
    model = softmax_model()
    ids = ids_of(200, seed=4)
    free = evaluate_adaptive(
        model, ids, dynamic=DynamicSettings("sgd", lr=1.0, decay=0.0), batch_size=1, bptt=10
    )
    held = evaluate_adaptive(
        model, ids, dynamic=DynamicSettings("sgd", lr=1.0, decay=1.0), batch_size=1, bptt=10
    )
    static = evaluate(model, ids, batch_size=1, bptt=10)
    assert free.result.loss != pytest.approx(static.loss, rel=1e-4)
    # decay 1 puts the trained weights back before each step adds its own change only
    assert held.result.loss != free.result.loss


def test_rms_statistics_are_positive_and_leave_the_model_alone():
    model = softmax_model()
    before = [p.detach().clone() for p in model.parameters()]
    rms = gradient_rms(model, ids_of(300), batch_size=2, bptt=10, windows=4)
    assert len(rms) == len(before)
    assert all(r.shape == p.shape for r, p in zip(rms, before, strict=True))
    assert all(float(r.max()) > 0 for r in rms)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_rms_statistics_over_the_whole_training_split():
    model, ids = softmax_model(), ids_of(200, seed=9)  # batch 2, windows of 10: 10 windows

    def rms(windows):
        return gradient_rms(model, ids, batch_size=2, bptt=10, windows=windows)

    whole = rms(0)
    assert all(torch.equal(a, b) for a, b in zip(whole, rms(10**6), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(whole, rms(3), strict=True))


def test_rms_update_needs_its_statistics():
    with pytest.raises(ConfigError, match="gradient statistics"):
        evaluate_adaptive(softmax_model(), ids_of(30), dynamic=DynamicSettings("rms"))


@pytest.mark.parametrize(
    "kwargs,mention",
    [
        (dict(cache=True, cache_size=0), "--cache-size must be a positive integer"),
        (dict(cache=True, cache_size=-3), "--cache-size must be a positive integer"),
        (dict(cache=True, cache_lambda=1.5), "--cache-lambda must be between 0 and 1"),
        (dict(cache=True, cache_lambda=-0.1), "--cache-lambda must be between 0 and 1"),
        (dict(cache=True, cache_theta=-1.0), "--cache-theta must be 0 or more"),
        (dict(cache=True, cache_theta=math.inf), "--cache-theta must be a finite number"),
        (dict(dynamic=True, dynamic_lr=-1e-3), "--dynamic-lr must be 0 or more"),
        (dict(dynamic=True, dynamic_decay=1.5), "--dynamic-decay must be between 0 and 1"),
        (dict(dynamic=True, dynamic_method="adam"), "--dynamic-method must be one of"),
        (dict(cache_size=5), "--cache-size is a setting of --cache"),
        (dict(dynamic_lr=0.1), "--dynamic-lr is a setting of --dynamic"),
        (dict(dynamic=True, dynamic_stat_windows=-1), "--dynamic-stat-windows must be 0"),
        (dict(dynamic_stat_windows=0), "--dynamic-stat-windows is a setting of --dynamic"),
    ],
)
def test_bad_settings_are_refused_in_one_line(kwargs, mention):
    with pytest.raises(ConfigError, match=mention) as e:
        AdaptationRequest(**kwargs)
    assert "\n" not in str(e.value)
