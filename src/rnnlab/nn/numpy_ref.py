"""Pure-NumPy reference: recurrent cells and a one-layer RNN language model, hand-derived BPTT.

This module is for reading and for tests. Every backward pass is written out by hand with the
chain rule in the comments, following the CS224d notes; nothing here is fast.

Conventions (identical to ``torch.nn`` so a ``state_dict`` copies across):

* A cell's parameters are a dict of float arrays named like ``torch.nn.RNNCell`` & co.:
  ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H,)``, ``bias_hh (G*H,)``, where
  G = 1 (RNN), 3 (GRU, gate order r, z, n) or 4 (LSTM, gate order i, f, g, o).
* Inputs are batched: one step takes ``x (B, I)``; a sequence is ``xs (T, B, I)``.
* The state is ``h (B, H)`` for RNN and GRU and the pair ``(h, c)`` for LSTM.
* Gradient arrays always have the shape of the thing they differentiate; ``d<name>`` is
  dLoss/d<name>. The δ ("delta") of a pre-activation ``a`` is dLoss/da.

Derivative facts used throughout (``∘`` is the elementwise product)::

    tanh'(a)    = 1 - tanh(a)^2        (so from the output y = tanh(a): 1 - y^2)
    σ'(a)       = σ(a) (1 - σ(a))      (from the output s = σ(a): s (1 - s))
    relu'(a)    = 1[a > 0]
    y = x W^T + b   =>   dx = dy W,   dW = dy^T x,   db = Σ_batch dy

Truncated BPTT (CS224d): the total loss is J = Σ_t J_t. With ``truncate=τ`` the gradient of
each term J_t is propagated back through at most τ recurrent steps, i.e. through the steps that
produced h_t, h_{t-1}, ..., h_{t-τ+1}: those steps receive J_t's δ in their parameters and
inputs x_s, and the sweep stops at h_{t-τ}, which is treated as a constant. When t ≤ τ (steps
counted from 1, h_0 the initial state) the sweep runs out of steps first: the δ that reaches
h_0 is added to ``dstate0``.
Equivalently, the result is Σ_t ∇J_t computed in a graph where h_{t-τ} is detached whenever
t - τ ≥ 1. τ = 1 keeps only each step's own contribution; τ ≥ T is exactly full BPTT.
``truncate=None`` is full BPTT, computed in one backward sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.errors import ConfigError, DataError
from rnnlab.nn.registry import FAMILIES, find_cell

logger = logging.getLogger(__name__)

Params = dict[str, np.ndarray]
State = np.ndarray | tuple[np.ndarray, np.ndarray]  # h (B, H), or (h, c) for LSTM
Cache = dict[str, Any]

CELL_KINDS = FAMILIES  # the layer families; a NumPy cell is one of them


# ----------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------


def sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^{-a}), computed as (1 + tanh(a/2)) / 2, which never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def gate_count(cell: str) -> int:
    """Number of stacked gate blocks G in ``weight_ih (G*H, I)``: rnn 1, gru 3, lstm 4
    (:mod:`rnnlab.nn.registry`)."""
    if cell not in CELL_KINDS:
        raise ConfigError(f"unknown cell {cell!r}; use one of {', '.join(CELL_KINDS)}")
    return find_cell(cell).gates


def _check_options(cell: str, nonlinearity: str, reset: str) -> None:
    gate_count(cell)
    if nonlinearity not in ("tanh", "relu"):
        raise ConfigError(f"unknown nonlinearity {nonlinearity!r}; use 'tanh' or 'relu'")
    if reset not in ("after", "before"):
        raise ConfigError(f"unknown GRU reset position {reset!r}; use 'after' or 'before'")


def init_cell_params(
    cell: str,
    input_size: int,
    hidden_size: int,
    rng: np.random.Generator,
    dtype: type = np.float64,
) -> Params:
    """Parameters for one cell, drawn like torch.nn: every entry ~ U(-1/√H, 1/√H)."""
    if input_size < 1 or hidden_size < 1:
        raise ConfigError("input_size and hidden_size must be positive integers")
    g, h = gate_count(cell), hidden_size
    k = 1.0 / np.sqrt(h)
    shapes = {
        "weight_ih": (g * h, input_size),
        "weight_hh": (g * h, h),
        "bias_ih": (g * h,),
        "bias_hh": (g * h,),
    }
    return {name: rng.uniform(-k, k, size=s).astype(dtype) for name, s in shapes.items()}


def _linear_backward(
    da: np.ndarray, x: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of a = x W^T + b: returns (dx, dW, db) = (δ W, δ^T x, Σ_batch δ)."""
    return da @ w, da.T @ x, da.sum(axis=0)


# ----------------------------------------------------------------------------------------------
# vanilla RNN
# ----------------------------------------------------------------------------------------------


def rnn_step_forward(
    x: np.ndarray, h: np.ndarray, params: Params, nonlinearity: str = "tanh"
) -> tuple[np.ndarray, Cache]:
    """One Elman step: h' = φ(x W_ih^T + b_ih + h W_hh^T + b_hh), φ = tanh or relu.

    x (B, I), h (B, H) -> h' (B, H) and the cache the backward pass needs.
    """
    _check_options("rnn", nonlinearity, "after")
    a = x @ params["weight_ih"].T + params["bias_ih"] + h @ params["weight_hh"].T  # (B, H)
    a = a + params["bias_hh"]
    h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)  # (B, H)
    cache = {"cell": "rnn", "x": x, "h": h, "a": a, "h_new": h_new, "params": params}
    cache["nonlinearity"] = nonlinearity
    return h_new, cache


def rnn_step_backward(dh_new: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, Params]:
    """Backward of :func:`rnn_step_forward`: dh' (B, H) -> (dx, dh, dparams).

    δ = dh' ∘ φ'(a), with tanh'(a) = 1 - h'^2 and relu'(a) = 1[a > 0]. Then, since
    a = x W_ih^T + b_ih + h W_hh^T + b_hh:
    dx = δ W_ih, dh = δ W_hh, dW_ih = δ^T x, dW_hh = δ^T h, db_ih = db_hh = Σ_batch δ.
    """
    p = cache["params"]
    if cache["nonlinearity"] == "tanh":
        delta = dh_new * (1.0 - cache["h_new"] ** 2)  # (B, H)
    else:
        delta = dh_new * (cache["a"] > 0)  # (B, H)
    dx, dw_ih, db = _linear_backward(delta, cache["x"], p["weight_ih"])
    dh, dw_hh, _ = _linear_backward(delta, cache["h"], p["weight_hh"])
    grads = {"weight_ih": dw_ih, "weight_hh": dw_hh, "bias_ih": db, "bias_hh": db.copy()}
    return dx, dh, grads


# ----------------------------------------------------------------------------------------------
# GRU
# ----------------------------------------------------------------------------------------------


def gru_step_forward(
    x: np.ndarray, h: np.ndarray, params: Params, reset: str = "after"
) -> tuple[np.ndarray, Cache]:
    """One GRU step, gate order r, z, n as in torch.nn.GRUCell.

    r  = σ(W_ir x + b_ir + W_hr h + b_hr)                         reset gate
    z  = σ(W_iz x + b_iz + W_hz h + b_hz)                         update gate
    n  = tanh(W_in x + b_in + r ∘ (W_hn h + b_hn))                reset="after" (torch, cuDNN)
    n  = tanh(W_in x + b_in + W_hn (r ∘ h) + b_hn)                reset="before" (Cho et al.)
    h' = (1 - z) ∘ n + z ∘ h

    x (B, I), h (B, H) -> h' (B, H), cache.
    """
    _check_options("gru", "tanh", reset)
    hs = h.shape[1]
    w_hh, b_hh = params["weight_hh"], params["bias_hh"]
    gi = x @ params["weight_ih"].T + params["bias_ih"]  # (B, 3H): input side of r, z, n
    gh_rz = h @ w_hh[: 2 * hs].T + b_hh[: 2 * hs]  # (B, 2H): hidden side of r, z
    r = sigmoid(gi[:, :hs] + gh_rz[:, :hs])  # (B, H)
    z = sigmoid(gi[:, hs : 2 * hs] + gh_rz[:, hs:])  # (B, H)
    if reset == "after":
        gh_n = h @ w_hh[2 * hs :].T + b_hh[2 * hs :]  # (B, H): W_hn h + b_hn
        n = np.tanh(gi[:, 2 * hs :] + r * gh_n)  # (B, H)
    else:
        gh_n = (r * h) @ w_hh[2 * hs :].T + b_hh[2 * hs :]  # (B, H): W_hn (r∘h) + b_hn
        n = np.tanh(gi[:, 2 * hs :] + gh_n)  # (B, H)
    h_new = (1.0 - z) * n + z * h  # (B, H)
    cache = {"cell": "gru", "reset": reset, "x": x, "h": h, "r": r, "z": z, "n": n}
    cache.update(gh_n=gh_n, params=params)
    return h_new, cache


def gru_step_backward(dh_new: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, Params]:
    """Backward of :func:`gru_step_forward`: dh' (B, H) -> (dx, dh, dparams).

    From h' = (1 - z) ∘ n + z ∘ h:
        dn = dh' ∘ (1 - z),   dz = dh' ∘ (h - n),   dh gets dh' ∘ z directly.
    Through the nonlinearities (δ_* is the gradient of a gate's pre-activation):
        δ_n = dn ∘ (1 - n^2),   δ_z = dz ∘ z (1 - z),   δ_r = dr ∘ r (1 - r).
    reset="after":  pre_n = W_in x + b_in + r ∘ (W_hn h + b_hn), so
        dr = δ_n ∘ (W_hn h + b_hn), and the hidden-side δ of the n block is δ_n ∘ r.
    reset="before": pre_n = W_in x + b_in + W_hn (r ∘ h) + b_hn, so with u = r ∘ h:
        du = δ_n W_hn,  dW_hn = δ_n^T u,  dr = du ∘ h,  and dh gets du ∘ r.
    The input side always sees δ_i = [δ_r, δ_z, δ_n]: dx = δ_i W_ih, dW_ih = δ_i^T x.
    """
    p = cache["params"]
    x, h, r, z, n = cache["x"], cache["h"], cache["r"], cache["z"], cache["n"]
    hs = h.shape[1]
    w_hh = p["weight_hh"]
    dn = dh_new * (1.0 - z)  # (B, H)
    dz = dh_new * (h - n)  # (B, H)
    dh = dh_new * z  # (B, H): the direct path h -> h'
    d_n = dn * (1.0 - n**2)  # (B, H): δ of n's pre-activation
    if cache["reset"] == "after":
        dr = d_n * cache["gh_n"]  # (B, H)
        dgh_n = d_n * r  # (B, H): δ of W_hn h + b_hn
        dh_n, dw_hn, db_hn = _linear_backward(dgh_n, h, w_hh[2 * hs :])
    else:
        du, dw_hn, db_hn = _linear_backward(d_n, r * h, w_hh[2 * hs :])  # u = r ∘ h
        dr = du * h  # (B, H)
        dh_n = du * r  # (B, H)
    d_r = dr * r * (1.0 - r)  # (B, H)
    d_z = dz * z * (1.0 - z)  # (B, H)
    d_rz = np.concatenate([d_r, d_z], axis=1)  # (B, 2H)
    dh_rz, dw_hrz, db_hrz = _linear_backward(d_rz, h, w_hh[: 2 * hs])
    dh = dh + dh_rz + dh_n
    d_i = np.concatenate([d_r, d_z, d_n], axis=1)  # (B, 3H)
    dx, dw_ih, db_ih = _linear_backward(d_i, x, p["weight_ih"])
    grads = {
        "weight_ih": dw_ih,
        "weight_hh": np.concatenate([dw_hrz, dw_hn], axis=0),
        "bias_ih": db_ih,
        "bias_hh": np.concatenate([db_hrz, db_hn]),
    }
    return dx, dh, grads


# ----------------------------------------------------------------------------------------------
# LSTM
# ----------------------------------------------------------------------------------------------


def lstm_step_forward(
    x: np.ndarray, state: tuple[np.ndarray, np.ndarray], params: Params
) -> tuple[tuple[np.ndarray, np.ndarray], Cache]:
    """One LSTM step, gate order i, f, g, o as in torch.nn.LSTMCell.

    [a_i, a_f, a_g, a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh
    i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o)
    c' = f ∘ c + i ∘ g
    h' = o ∘ tanh(c')

    x (B, I), state (h, c) each (B, H) -> (h', c'), cache.
    """
    h, c = state
    hs = h.shape[1]
    a = x @ params["weight_ih"].T + params["bias_ih"] + h @ params["weight_hh"].T  # (B, 4H)
    a = a + params["bias_hh"]
    i = sigmoid(a[:, :hs])  # (B, H) input gate
    f = sigmoid(a[:, hs : 2 * hs])  # (B, H) forget gate
    g = np.tanh(a[:, 2 * hs : 3 * hs])  # (B, H) candidate
    o = sigmoid(a[:, 3 * hs :])  # (B, H) output gate
    c_new = f * c + i * g  # (B, H)
    tc = np.tanh(c_new)  # (B, H)
    h_new = o * tc  # (B, H)
    cache = {"cell": "lstm", "x": x, "h": h, "c": c, "i": i, "f": f, "g": g, "o": o, "tc": tc}
    cache["params"] = params
    return (h_new, c_new), cache


def lstm_step_backward(
    dstate_new: tuple[np.ndarray, np.ndarray], cache: Cache
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], Params]:
    """Backward of :func:`lstm_step_forward`: (dh', dc') -> (dx, (dh, dc), dparams).

    c' reaches the loss twice: directly (dc' from the next step) and through h' = o ∘ tanh(c'):
        dc'_total = dc' + dh' ∘ o ∘ (1 - tanh(c')^2),   do = dh' ∘ tanh(c').
    From c' = f ∘ c + i ∘ g:
        df = dc'_total ∘ c,  di = dc'_total ∘ g,  dg = dc'_total ∘ i,  dc = dc'_total ∘ f.
    Gate pre-activations: δ_i = di ∘ i (1 - i), δ_f = df ∘ f (1 - f), δ_g = dg ∘ (1 - g^2),
    δ_o = do ∘ o (1 - o); with δ = [δ_i, δ_f, δ_g, δ_o] (B, 4H):
        dx = δ W_ih, dh = δ W_hh, dW_ih = δ^T x, dW_hh = δ^T h, db_ih = db_hh = Σ_batch δ.
    """
    dh_new, dc_new = dstate_new
    p = cache["params"]
    i, f, g, o, tc = cache["i"], cache["f"], cache["g"], cache["o"], cache["tc"]
    do = dh_new * tc  # (B, H)
    dc_total = dc_new + dh_new * o * (1.0 - tc**2)  # (B, H)
    df = dc_total * cache["c"]  # (B, H)
    di = dc_total * g  # (B, H)
    dg = dc_total * i  # (B, H)
    dc = dc_total * f  # (B, H): the cell-state highway, only scaled by f
    delta = np.concatenate(
        [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g**2), do * o * (1.0 - o)], axis=1
    )  # (B, 4H)
    dx, dw_ih, db = _linear_backward(delta, cache["x"], p["weight_ih"])
    dh, dw_hh, _ = _linear_backward(delta, cache["h"], p["weight_hh"])
    grads = {"weight_ih": dw_ih, "weight_hh": dw_hh, "bias_ih": db, "bias_hh": db.copy()}
    return dx, (dh, dc), grads


# ----------------------------------------------------------------------------------------------
# any cell: one step, and a whole sequence
# ----------------------------------------------------------------------------------------------


def step_forward(
    cell: str,
    x: np.ndarray,
    state: State,
    params: Params,
    nonlinearity: str = "tanh",
    reset: str = "after",
) -> tuple[State, Cache]:
    """One step of ``cell`` ("rnn", "gru" or "lstm"); options that do not apply are ignored."""
    _check_options(cell, nonlinearity, reset)
    if cell == "rnn":
        return rnn_step_forward(x, state, params, nonlinearity)
    if cell == "gru":
        return gru_step_forward(x, state, params, reset)
    return lstm_step_forward(x, state, params)


def step_backward(dstate_new: State, cache: Cache) -> tuple[np.ndarray, State, Params]:
    """Backward of :func:`step_forward`; the cache remembers which cell made it."""
    if cache["cell"] == "rnn":
        return rnn_step_backward(dstate_new, cache)
    if cache["cell"] == "gru":
        return gru_step_backward(dstate_new, cache)
    return lstm_step_backward(dstate_new, cache)


def zero_state(cell: str, batch_size: int, hidden_size: int, dtype: type = np.float64) -> State:
    """The all-zeros initial state: h (B, H), or (h, c) for LSTM."""
    h = np.zeros((batch_size, hidden_size), dtype=dtype)
    return (h, h.copy()) if cell == "lstm" else h


def _state_h(state: State) -> np.ndarray:
    return state[0] if isinstance(state, tuple) else state


def _add_state(a: State, b: State) -> State:
    if isinstance(a, tuple):
        return (a[0] + b[0], a[1] + b[1])
    return a + b


def _with_dh(dstate_like: State, dh: np.ndarray) -> State:
    """A state gradient whose h part is ``dh`` and whose c part (LSTM) is zero."""
    if isinstance(dstate_like, tuple):
        return (dh, np.zeros_like(dstate_like[1]))
    return dh


def _add_params(total: Params, part: Params) -> None:
    for name, value in part.items():
        total[name] += value


def sequence_forward(
    cell: str,
    xs: np.ndarray,
    state0: State | None,
    params: Params,
    nonlinearity: str = "tanh",
    reset: str = "after",
) -> tuple[np.ndarray, State, list[Cache]]:
    """Run ``cell`` over xs (T, B, I) from state0 (zeros if None).

    Returns hs (T, B, H), the last state, and one cache per step for :func:`sequence_backward`.
    """
    _check_options(cell, nonlinearity, reset)
    if xs.ndim != 3:
        raise ConfigError(f"xs must have shape (T, B, I), got {xs.shape}; add the missing axes")
    hidden = params["weight_hh"].shape[1]
    state = zero_state(cell, xs.shape[1], hidden, xs.dtype) if state0 is None else state0
    hs, caches = [], []
    for x in xs:  # x (B, I)
        state, cache = step_forward(cell, x, state, params, nonlinearity, reset)
        hs.append(_state_h(state))
        caches.append(cache)
    return np.stack(hs), state, caches


def sequence_backward(
    dhs: np.ndarray,
    caches: Sequence[Cache],
    dstate_final: State | None = None,
    truncate: int | None = None,
) -> tuple[np.ndarray, State, Params]:
    """Backpropagation through time over the steps recorded in ``caches``.

    dhs (T, B, H) is the gradient of the loss that reaches each h_t directly (for a language
    model: from the decoder at step t). ``dstate_final`` is the gradient arriving at the last
    state from outside the window; it counts as part of the last step's term.

    Full BPTT (truncate=None) is one sweep from t = T down to 1 (steps counted from 1):
        dstate_t  = direct_t + (what step t+1's backward sends into its input state)
        step t's backward turns dstate_t into dx_t, dstate_{t-1} and its parameter gradients,
    which are summed over t because the same parameters are used at every step.

    Truncated (truncate=τ, see the module docstring): for each t the direct gradient direct_t
    alone is swept back through steps t, t-1, ..., max(1, t-τ+1) and then dropped (or, at step
    1, added to dstate0). This costs O(T τ) step backwards, as in the CS224d notes.

    Returns dxs (T, B, I), dstate0 and the summed parameter gradients.
    """
    if truncate is not None and truncate < 1:
        raise ConfigError(f"truncate must be a positive number of steps or None, got {truncate}")
    n_steps = len(caches)
    if n_steps == 0 or dhs.shape[0] != n_steps:
        raise ConfigError(f"need one dhs row per cached step, got {dhs.shape[0]} for {n_steps}")
    p = caches[0]["params"]
    dparams = {name: np.zeros_like(value) for name, value in p.items()}
    dxs = np.zeros((n_steps,) + caches[0]["x"].shape, dtype=dhs.dtype)
    zero = zero_state(caches[0]["cell"], dhs.shape[1], dhs.shape[2], dhs.dtype)
    dstate_final = zero if dstate_final is None else dstate_final

    if truncate is None:
        dstate = dstate_final
        for t in reversed(range(n_steps)):
            dstate = _add_state(dstate, _with_dh(zero, dhs[t]))  # δ reaching h_t: direct + later
            dxs[t], dstate, dp = step_backward(dstate, caches[t])
            _add_params(dparams, dp)
        return dxs, dstate, dparams

    dstate0 = zero
    for t in range(n_steps):
        dstate = _with_dh(zero, dhs[t])  # the term J_t enters at h_t
        if t == n_steps - 1:
            dstate = _add_state(dstate, dstate_final)
        for s in range(t, max(-1, t - truncate), -1):  # steps t, ..., t-τ+1 (0-indexed)
            dx, dstate, dp = step_backward(dstate, caches[s])
            dxs[s] += dx
            _add_params(dparams, dp)
        if t - truncate < 0:  # the sweep went all the way through step 1: reached h0
            dstate0 = _add_state(dstate0, dstate)
    return dxs, dstate0, dparams


# ----------------------------------------------------------------------------------------------
# one-layer language model
# ----------------------------------------------------------------------------------------------


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over N rows and its gradient.

    logits (N, V), targets (N,) ints. With p = softmax(logits):
        J = -(1/N) Σ_n log p[n, y_n],    dJ/dlogits = (p - onehot(y)) / N.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)  # same softmax, no overflow
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, V)
    rows = np.arange(len(targets))
    loss = -log_p[rows, targets].mean()
    dlogits = np.exp(log_p)  # (N, V) = p
    dlogits[rows, targets] -= 1.0
    return float(loss), dlogits / len(targets)


@dataclass
class NumpyRNNLM:
    """Embedding -> one recurrent cell -> linear decoder -> softmax, in NumPy.

    x_t = E[w_t]                     E (V, D)            (torch: nn.Embedding.weight)
    h_t = cell(x_t, h_{t-1})         cell params         (torch: nn.RNN/GRU/LSTM *_l0)
    ŷ_t = softmax(W_out h_t + b_out) W_out (V, H), b_out (torch: nn.Linear weight, bias)
    J   = mean over all T*B tokens of -log ŷ_t[w_{t+1}]

    ``params`` keys: embedding, weight_ih, weight_hh, bias_ih, bias_hh, weight_out, bias_out.
    """

    cell: str
    params: Params
    nonlinearity: str = "tanh"
    reset: str = "after"

    @classmethod
    def create(
        cls,
        cell: str,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        *,
        nonlinearity: str = "tanh",
        reset: str = "after",
        seed: int = 0,
    ) -> NumpyRNNLM:
        """A model initialized like torch.nn (embedding N(0, 1), the rest U(-1/√H, 1/√H))."""
        _check_options(cell, nonlinearity, reset)
        if vocab_size < 1:
            raise ConfigError("vocab_size must be a positive integer")
        rng = np.random.default_rng(seed)
        params = {"embedding": rng.standard_normal((vocab_size, embed_size))}
        params.update(init_cell_params(cell, embed_size, hidden_size, rng))
        k = 1.0 / np.sqrt(hidden_size)
        params["weight_out"] = rng.uniform(-k, k, size=(vocab_size, hidden_size))
        params["bias_out"] = rng.uniform(-k, k, size=(vocab_size,))
        return cls(cell, params, nonlinearity, reset)

    def cell_params(self) -> Params:
        """The four recurrent parameters, by their torch names (views, not copies)."""
        return {k: self.params[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

    def _check_tokens(self, tokens: np.ndarray, what: str) -> None:
        vocab = self.params["embedding"].shape[0]
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise DataError(f"{what} must be an integer array of shape (T, B)")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab):
            raise DataError(f"{what} holds ids outside [0, {vocab}); rebuild them with the vocab")

    def forward(
        self, tokens: np.ndarray, state0: State | None = None
    ) -> tuple[np.ndarray, State, list[Cache], np.ndarray]:
        """tokens (T, B) -> logits (T, B, V), last state, per-step caches, hs (T, B, H)."""
        self._check_tokens(tokens, "tokens")
        xs = self.params["embedding"][tokens]  # (T, B, D)
        hs, state, caches = sequence_forward(
            self.cell, xs, state0, self.cell_params(), self.nonlinearity, self.reset
        )
        logits = hs @ self.params["weight_out"].T + self.params["bias_out"]  # (T, B, V)
        return logits, state, caches, hs

    def loss(self, tokens_in: np.ndarray, targets: np.ndarray, h0: State | None = None) -> float:
        """Mean cross-entropy of predicting ``targets`` (T, B) from ``tokens_in`` (T, B)."""
        self._check_tokens(targets, "targets")
        logits, _, _, _ = self.forward(tokens_in, h0)
        return softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))[0]

    def loss_and_grads(
        self,
        tokens_in: np.ndarray,
        targets: np.ndarray,
        h0: State | None = None,
        bptt_truncate: int | None = None,
    ) -> tuple[float, Params, State]:
        """Loss, gradients of every parameter, and the final state (to carry to the next window).

        Backward, top to bottom:
            dlogits = (p - onehot) / N                                (T, B, V)
            dW_out  = Σ_{t,b} dlogits^T h,  db_out = Σ dlogits,  dh_t (direct) = dlogits W_out
            BPTT through the cell (full, or truncated to ``bptt_truncate`` steps per loss term)
            dE[w] += dx_t for every position where token w was the input (np.add.at).
        ``grads`` also holds "h0" (and "c0" for LSTM): the gradient w.r.t. the initial state.
        """
        if targets.shape != tokens_in.shape:
            raise DataError(f"targets {targets.shape} must match tokens_in {tokens_in.shape}")
        self._check_tokens(targets, "targets")
        logits, state, caches, hs = self.forward(tokens_in, h0)
        n_steps, batch, vocab = logits.shape
        loss, dlogits = softmax_cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        dlogits = dlogits.reshape(n_steps, batch, vocab)  # (T, B, V)
        grads = {
            "weight_out": np.einsum("tbv,tbh->vh", dlogits, hs),  # (V, H)
            "bias_out": dlogits.sum(axis=(0, 1)),  # (V,)
        }
        dhs = dlogits @ self.params["weight_out"]  # (T, B, H)
        dxs, dstate0, dcell = sequence_backward(dhs, caches, truncate=bptt_truncate)
        grads.update(dcell)
        d_emb = np.zeros_like(self.params["embedding"])  # (V, D)
        np.add.at(d_emb, tokens_in, dxs)  # repeated ids accumulate
        grads["embedding"] = d_emb
        if isinstance(dstate0, tuple):
            grads["h0"], grads["c0"] = dstate0
        else:
            grads["h0"] = dstate0
        logger.debug("numpy LM loss %.6f over %d tokens", loss, n_steps * batch)
        return loss, grads, state


# ----------------------------------------------------------------------------------------------
# finite-difference gradient check
# ----------------------------------------------------------------------------------------------


def numerical_gradient(
    f: Callable[[], float], param_array: np.ndarray, eps: float = 1e-5
) -> np.ndarray:
    """Central differences: df/dθ_k ≈ (f(θ + ε e_k) - f(θ - ε e_k)) / (2ε) for every entry k.

    ``f`` takes no arguments and must read ``param_array``, which is perturbed in place (one entry
    at a time) and restored exactly. The error is O(ε^2) from truncation plus O(u/ε) from rounding
    (u ≈ 1e-16 in float64), so ε = 1e-5 gives about 1e-10 absolute error for f of order 1.
    """
    grad = np.zeros_like(param_array, dtype=np.float64)
    flat = param_array.reshape(-1)  # a view: writing it perturbs param_array
    if not np.shares_memory(flat, param_array):
        raise ConfigError("param_array must be contiguous so it can be perturbed in place")
    gflat = grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        f_plus = f()
        flat[k] = old - eps
        f_minus = f()
        flat[k] = old
        gflat[k] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max_k |a_k - n_k| / max_k max(|a_k|, |n_k|): the worst error relative to the gradient's size.

    Why not entry by entry: finite differences are only accurate to about 1e-10 in *absolute*
    terms, so an entry whose true gradient is 1e-6 has a per-entry relative error near 1e-4 even
    when the hand-written gradient is exact. Dividing by the parameter's largest gradient entry
    keeps the test sharp (a wrong term still shows up at 1e-3 or more) without that noise.
    """
    scale = max(float(np.abs(analytic).max(initial=0.0)), float(np.abs(numeric).max(initial=0.0)))
    diff = float(np.abs(analytic - numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def gradient_check(
    f: Callable[[], float],
    params: Params,
    grads: Params,
    eps: float = 1e-5,
) -> dict[str, float]:
    """Max relative error (see :func:`relative_error`) of ``grads[name]`` for every ``name``.

    ``f()`` must compute the scalar loss from the arrays in ``params``, which are perturbed in
    place; ``grads`` are the hand-written gradients evaluated at the unperturbed point. A correct
    float64 gradient gives errors near 1e-9; a wrong one gives errors of 1e-3 or more.
    """
    errors = {}
    for name, analytic in grads.items():
        if name not in params:
            raise ConfigError(f"gradient {name!r} has no parameter of that name; pass both dicts")
        numeric = numerical_gradient(f, params[name], eps)
        errors[name] = relative_error(analytic, numeric)
        logger.debug("gradient check %s: max relative error %.3g", name, errors[name])
    return errors
