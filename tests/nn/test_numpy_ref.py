"""Tests for rnnlab.nn.numpy_ref: hand-written BPTT against finite differences and torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.errors import ConfigError, DataError
from rnnlab.nn.numpy_ref import (
    NumpyRNNLM,
    gradient_check,
    init_cell_params,
    numerical_gradient,
    relative_error,
    sequence_backward,
    sequence_forward,
    step_backward,
    step_forward,
)

# (cell, nonlinearity, reset): every equation variant the module implements
VARIANTS = [
    ("rnn", "tanh", "after"),
    ("rnn", "relu", "after"),
    ("gru", "tanh", "after"),
    ("gru", "tanh", "before"),
    ("lstm", "tanh", "after"),
]
IDS = ["rnn_tanh", "rnn_relu", "gru_after", "gru_before", "lstm"]
TOL = 1e-6  # gradient-check threshold (float64)
V, D, H, T, B = 7, 4, 5, 4, 3


def random_state(cell: str, rng: np.random.Generator, batch: int = B, hidden: int = H):
    h = rng.standard_normal((batch, hidden))
    return (h, rng.standard_normal((batch, hidden))) if cell == "lstm" else h


def state_dict_of(name: str, state) -> dict[str, np.ndarray]:
    """Name the arrays of a state (or of its gradient) for gradient_check."""
    if isinstance(state, tuple):
        return {f"{name}_h": state[0], f"{name}_c": state[1]}
    return {f"{name}_h": state}


def contract(state, weights) -> float:
    """Σ weights ∘ state over every array of the state: a scalar whose gradient is `weights`."""
    if isinstance(state, tuple):
        return float(sum((w * s).sum() for w, s in zip(weights, state, strict=True)))
    return float((weights * state).sum())


# ---------------------------------------------------------------------------------------------
# torch references
# ---------------------------------------------------------------------------------------------


def tt(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def gru_before_step(x, h, w_ih, w_hh, b_ih, b_hh):
    """GRU with the reset gate applied before W_hn (Cho et al. 2014), written in torch."""
    hs = h.shape[1]
    gi = x @ w_ih.T + b_ih
    gh_rz = h @ w_hh[: 2 * hs].T + b_hh[: 2 * hs]
    r = torch.sigmoid(gi[:, :hs] + gh_rz[:, :hs])
    z = torch.sigmoid(gi[:, hs : 2 * hs] + gh_rz[:, hs:])
    n = torch.tanh(gi[:, 2 * hs :] + (r * h) @ w_hh[2 * hs :].T + b_hh[2 * hs :])
    return (1 - z) * n + z * h


def torch_cell(variant, params: dict[str, np.ndarray]):
    """A torch step function with the same weights, and the leaf tensors it uses."""
    cell, nonlinearity, reset = variant
    inp, hid = params["weight_ih"].shape[1], params["weight_hh"].shape[1]
    if cell == "gru" and reset == "before":
        leaves = {k: tt(v, grad=True) for k, v in params.items()}

        def step(x, state):
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            return gru_before_step(x, state, *(leaves[k] for k in names))

        return step, leaves
    if cell == "rnn":
        module = nn.RNNCell(inp, hid, nonlinearity=nonlinearity)
    elif cell == "gru":
        module = nn.GRUCell(inp, hid)
    else:
        module = nn.LSTMCell(inp, hid)
    module = module.double()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    return module, dict(module.named_parameters())


def torch_state(state, grad: bool = False):
    if isinstance(state, tuple):
        return tuple(tt(s, grad) for s in state)
    return tt(state, grad)


def state_h(state):
    return state[0] if isinstance(state, tuple) else state


# ---------------------------------------------------------------------------------------------
# one step
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_step_forward_matches_torch_cell(variant):
    cell, nonlinearity, reset = variant
    rng = np.random.default_rng(0)
    params = init_cell_params(cell, D, H, rng)
    x, state = rng.standard_normal((B, D)), random_state(cell, rng)
    new_state, _ = step_forward(cell, x, state, params, nonlinearity, reset)
    module, _ = torch_cell(variant, params)
    with torch.no_grad():
        expected = module(tt(x), torch_state(state))
    if cell == "lstm":
        np.testing.assert_allclose(new_state[0], expected[0].numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(new_state[1], expected[1].numpy(), rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_allclose(new_state, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_gru_before_differs_from_after():
    rng = np.random.default_rng(1)
    params = init_cell_params("gru", D, H, rng)
    x, h = rng.standard_normal((B, D)), rng.standard_normal((B, H))
    after, _ = step_forward("gru", x, h, params, reset="after")
    before, _ = step_forward("gru", x, h, params, reset="before")
    assert np.abs(after - before).max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_step_backward_matches_finite_differences(variant):
    cell, nonlinearity, reset = variant
    rng = np.random.default_rng(2)
    params = init_cell_params(cell, D, H, rng)
    x, state = rng.standard_normal((B, D)), random_state(cell, rng)
    dout = random_state(cell, rng)  # the upstream gradient dL/d(new state)
    new_state, cache = step_forward(cell, x, state, params, nonlinearity, reset)
    dx, dstate, dparams = step_backward(dout, cache)

    def f() -> float:  # L = Σ dout ∘ new_state, so dL/d(new state) = dout
        return contract(step_forward(cell, x, state, params, nonlinearity, reset)[0], dout)

    inputs = {"x": x, **state_dict_of("state", state), **params}
    grads = {"x": dx, **state_dict_of("state", dstate), **dparams}
    errors = gradient_check(f, inputs, grads)
    assert max(errors.values()) < TOL, errors


# ---------------------------------------------------------------------------------------------
# sequences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != ("gru", "tanh", "before")])
def test_sequence_forward_matches_torch_layer(variant):
    cell, nonlinearity, reset = variant
    rng = np.random.default_rng(3)
    params = init_cell_params(cell, D, H, rng)
    xs, state0 = rng.standard_normal((T, B, D)), random_state(cell, rng)
    hs, last, _ = sequence_forward(cell, xs, state0, params, nonlinearity, reset)
    if cell == "rnn":
        layer = nn.RNN(D, H, nonlinearity=nonlinearity)
    else:
        layer = nn.GRU(D, H) if cell == "gru" else nn.LSTM(D, H)
    layer = layer.double()
    layer.load_state_dict({f"{k}_l0": torch.from_numpy(v.copy()) for k, v in params.items()})
    hx = tuple(s[None] for s in torch_state(state0)) if cell == "lstm" else tt(state0)[None]
    with torch.no_grad():
        out, last_t = layer(tt(xs), hx)
    np.testing.assert_allclose(hs, out.numpy(), rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(last[1], last_t[1][0].numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state_h(last), hs[-1])


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_sequence_backward_matches_finite_differences(variant):
    """Full BPTT with a gradient on every h_t and on the final state (LSTM: also on c_T)."""
    cell, nonlinearity, reset = variant
    rng = np.random.default_rng(4)
    params = init_cell_params(cell, D, H, rng)
    xs, state0 = rng.standard_normal((T, B, D)), random_state(cell, rng)
    dhs, dfinal = rng.standard_normal((T, B, H)), random_state(cell, rng)
    _, _, caches = sequence_forward(cell, xs, state0, params, nonlinearity, reset)
    dxs, dstate0, dparams = sequence_backward(dhs, caches, dstate_final=dfinal)

    def f() -> float:
        hs, last, _ = sequence_forward(cell, xs, state0, params, nonlinearity, reset)
        return float((dhs * hs).sum()) + contract(last, dfinal)

    inputs = {"xs": xs, **state_dict_of("state0", state0), **params}
    grads = {"xs": dxs, **state_dict_of("state0", dstate0), **dparams}
    errors = gradient_check(f, inputs, grads)
    assert max(errors.values()) < TOL, errors
    # the truncated code path with τ = T must give the same numbers
    dxs_t, dstate0_t, dparams_t = sequence_backward(dhs, caches, dstate_final=dfinal, truncate=T)
    truncated = {"xs": dxs_t, **state_dict_of("state0", dstate0_t), **dparams_t}
    for name, value in grads.items():
        np.testing.assert_allclose(truncated[name], value, rtol=1e-12, atol=1e-14, err_msg=name)


# ---------------------------------------------------------------------------------------------
# language model
# ---------------------------------------------------------------------------------------------


def lm_problem(variant, seed: int = 5):
    cell, nonlinearity, reset = variant
    model = NumpyRNNLM.create(cell, V, D, H, nonlinearity=nonlinearity, reset=reset, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tokens = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    return model, tokens, targets, random_state(cell, rng)


def lm_grad_names(cell: str) -> list[str]:
    names = ["embedding", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_out"]
    return names + ["bias_out", "h0"] + (["c0"] if cell == "lstm" else [])


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_lm_full_bptt_matches_finite_differences(variant):
    model, tokens, targets, h0 = lm_problem(variant)
    loss, grads, _ = model.loss_and_grads(tokens, targets, h0)
    assert sorted(grads) == sorted(lm_grad_names(model.cell))
    assert loss == pytest.approx(model.loss(tokens, targets, h0), rel=1e-14)
    state0 = dict(zip(("h0", "c0"), h0, strict=True)) if model.cell == "lstm" else {"h0": h0}
    errors = gradient_check(
        lambda: model.loss(tokens, targets, h0), {**model.params, **state0}, grads
    )
    assert max(errors.values()) < TOL, errors


def torch_lm_grads(model: NumpyRNNLM, tokens, targets, h0, truncate: int | None):
    """Loss and gradients from torch autograd on the same model.

    truncate=None: nn.Embedding -> nn.RNN/GRU/LSTM -> nn.Linear (a hand loop for GRU
    reset="before"). truncate=τ: the truncation written out explicitly: for each loss term J_t
    (0-indexed t) run steps max(0, t-τ+1)..t from the forward state there, detached unless it is
    h0, and sum the terms.
    """
    p, variant = model.params, (model.cell, model.nonlinearity, model.reset)
    emb = nn.Embedding(V, D).double()
    dec = nn.Linear(H, V).double()
    with torch.no_grad():
        emb.weight.copy_(tt(p["embedding"]))
        dec.weight.copy_(tt(p["weight_out"]))
        dec.bias.copy_(tt(p["bias_out"]))
    state0 = torch_state(h0, grad=True)
    xs = emb(torch.from_numpy(tokens))  # (T, B, D)
    y = torch.from_numpy(targets)
    cell_params = {k: p[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    step, leaves = torch_cell(variant, cell_params)

    if truncate is None and variant != ("gru", "tanh", "before"):
        if model.cell == "rnn":
            layer = nn.RNN(D, H, nonlinearity=model.nonlinearity)
        else:
            layer = nn.GRU(D, H) if model.cell == "gru" else nn.LSTM(D, H)
        layer = layer.double()
        layer.load_state_dict({f"{k}_l0": tt(v) for k, v in cell_params.items()})
        leaves = {k: getattr(layer, f"{k}_l0") for k in cell_params}
        hx = tuple(s[None] for s in state0) if model.cell == "lstm" else state0[None]
        hs, _ = layer(xs, hx)
        loss = F.cross_entropy(dec(hs).reshape(-1, V), y.reshape(-1))
    elif truncate is None:
        state, outs = state0, []
        for t in range(T):
            state = step(xs[t], state)
            outs.append(state)
        loss = F.cross_entropy(dec(torch.stack(outs)).reshape(-1, V), y.reshape(-1))
    else:
        with torch.no_grad():
            states = [state0]
            for t in range(T):
                states.append(step(xs[t], states[-1]))
        loss = torch.zeros((), dtype=torch.float64)
        for t in range(T):
            start = max(0, t - truncate + 1)
            if start == 0:
                state = state0
            elif model.cell == "lstm":
                state = tuple(s.detach() for s in states[start])
            else:
                state = states[start].detach()
            for s in range(start, t + 1):
                state = step(xs[s], state)
            logits = dec(state_h(state))  # (B, V)
            loss = loss + F.cross_entropy(logits, y[t], reduction="sum") / (T * B)
    loss.backward()
    grads = {"embedding": emb.weight.grad, "weight_out": dec.weight.grad, "bias_out": dec.bias.grad}
    grads.update({k: v.grad for k, v in leaves.items()})
    if model.cell == "lstm":
        grads["h0"], grads["c0"] = state0[0].grad, state0[1].grad
    else:
        grads["h0"] = state0.grad
    return float(loss.detach()), {k: v.numpy() for k, v in grads.items()}


def assert_grads_close(ours: dict, ref: dict) -> None:
    assert sorted(ours) == sorted(ref)
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_lm_full_bptt_matches_torch_autograd(variant):
    model, tokens, targets, h0 = lm_problem(variant, seed=7)
    loss, grads, last = model.loss_and_grads(tokens, targets, h0)
    ref_loss, ref_grads = torch_lm_grads(model, tokens, targets, h0, truncate=None)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert_grads_close(grads, ref_grads)
    _, expected_last, _, _ = model.forward(tokens, h0)
    np.testing.assert_array_equal(state_h(last), state_h(expected_last))


@pytest.mark.parametrize("tau", [1, 2, 3, T, T + 3])
@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_truncated_bptt_matches_explicit_torch_truncation(variant, tau):
    model, tokens, targets, h0 = lm_problem(variant, seed=11)
    loss, grads, _ = model.loss_and_grads(tokens, targets, h0, bptt_truncate=tau)
    ref_loss, ref_grads = torch_lm_grads(model, tokens, targets, h0, truncate=tau)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert_grads_close(grads, ref_grads)
    full = model.loss_and_grads(tokens, targets, h0)[1]
    differs = max(np.abs(grads[k] - full[k]).max() for k in ("weight_hh", "embedding"))
    if tau >= T:  # no term is more than T steps from h0: truncation changes nothing
        assert_grads_close(grads, full)
    else:
        assert differs > 1e-6


def test_truncation_keeps_the_decoder_gradient():
    """Truncation only cuts paths through the recurrence; the decoder sees each h_t directly."""
    model, tokens, targets, h0 = lm_problem(("lstm", "tanh", "after"), seed=13)
    full = model.loss_and_grads(tokens, targets, h0)[1]
    cut = model.loss_and_grads(tokens, targets, h0, bptt_truncate=1)[1]
    np.testing.assert_array_equal(cut["weight_out"], full["weight_out"])
    np.testing.assert_array_equal(cut["bias_out"], full["bias_out"])


# ---------------------------------------------------------------------------------------------
# the gradient checker itself, and errors
# ---------------------------------------------------------------------------------------------


def test_gradient_check_detects_wrong_gradients():
    model, tokens, targets, h0 = lm_problem(("gru", "tanh", "after"), seed=17)
    _, grads, _ = model.loss_and_grads(tokens, targets, h0)
    truncated = model.loss_and_grads(tokens, targets, h0, bptt_truncate=1)[1]
    names = ["weight_hh", "weight_ih"]

    def check(candidate: dict) -> dict[str, float]:
        return gradient_check(
            lambda: model.loss(tokens, targets, h0), model.params, {n: candidate[n] for n in names}
        )

    assert max(check(grads).values()) < TOL
    # a one-entry slip, a sign error and a missing term (truncated BPTT is not the gradient)
    slipped = {n: grads[n].copy() for n in names}
    flat = slipped["weight_hh"].reshape(-1)
    k = int(np.abs(flat).argmax())
    flat[k] *= 1.01
    assert check(slipped)["weight_hh"] > 1e-3
    flipped = {"weight_hh": -grads["weight_hh"], "weight_ih": grads["weight_ih"]}
    assert check(flipped)["weight_hh"] == pytest.approx(2.0, rel=1e-6)  # |a - (-a)| / |a|
    assert min(check(truncated).values()) > 1e-3


def test_numerical_gradient_of_a_closed_form_and_restores_the_array():
    a = np.array([[0.3, -1.2], [2.0, 0.5]])
    before = a.copy()
    grad = numerical_gradient(lambda: float(np.sum(np.sin(a)) + np.sum(a**3)), a)
    np.testing.assert_allclose(grad, np.cos(a) + 3 * a**2, rtol=1e-9)
    np.testing.assert_array_equal(a, before)


def test_relative_error_is_scaled_by_the_largest_entry():
    assert relative_error(np.array([1.0, 1e-9]), np.array([1.0, 2e-9])) < 1e-8
    assert relative_error(np.array([1.0, 0.5]), np.array([1.0, 0.4])) == pytest.approx(0.1)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_bad_settings_and_inputs_raise_user_errors():
    with pytest.raises(ConfigError):
        NumpyRNNLM.create("transformer", V, D, H)
    with pytest.raises(ConfigError):
        NumpyRNNLM.create("rnn", V, D, H, nonlinearity="gelu")
    with pytest.raises(ConfigError):
        NumpyRNNLM.create("gru", V, D, H, reset="sideways")
    model, tokens, targets, h0 = lm_problem(("rnn", "tanh", "after"))
    with pytest.raises(ConfigError):
        model.loss_and_grads(tokens, targets, h0, bptt_truncate=0)
    with pytest.raises(DataError):
        model.loss_and_grads(tokens + V, targets, h0)
    with pytest.raises(DataError):
        model.loss_and_grads(tokens, targets[:-1], h0)
