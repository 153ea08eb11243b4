"""The time loops of :mod:`rnnlab.nn.fused_cpu`, compiled with numba: one call per window.

Each function runs the whole recurrence of one layer over a window, forward or backward, on
NumPy views of the tensors :mod:`rnnlab.nn.fused_cpu` allocates: per step one BLAS product
(``np.dot`` into a preallocated buffer; two for the reset-before GRU) and one compiled loop over
the step's B x H units for the gate arithmetic. What does not depend on the recurrence (the
input projection, the weight and input gradients) stays in torch GEMMs outside.

Importing this module needs numba (a dependency of rnnlab); compiled code is cached on disk
(``cache=True``), so the compile (a few seconds per cell and dtype) happens once per machine.
Arrays: C-contiguous float32 or float64, all of one dtype. Shapes as in fused_cpu: T time,
B batch, H hidden size; ``gates`` is (T, B, 3H) for the GRU, in the order r, z, n.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def _sigmoid(a: float) -> float:  # pragma: no cover - compiled
    return 1.0 / (1.0 + math.exp(-a))


# float32 constants of the vectorisable exp below (float32 globals stay float32 when compiled)
_F = np.float32
_ZERO, _ONE, _TWO, _HALF = _F(0.0), _F(1.0), _F(2.0), _F(0.5)
_EXP_LO, _EXP_HI = _F(-87.0), _F(87.0)  # 2^k stays a normal float32 for k in [-126, 127]
_LOG2E = _F(1.4426950408889634)
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)  # ln 2 = HI + LO; k * HI is exact
_C2, _C3, _C4, _C5, _C6, _C7 = (
    _F(1 / 2),
    _F(1 / 6),
    _F(1 / 24),
    _F(1 / 120),
    _F(1 / 720),
    _F(1 / 5040),
)


@njit(cache=True, inline="always", error_model="numpy")
def _exp32_inplace(x, scale_i, scale_f, n):  # pragma: no cover - compiled
    """x[:n] = exp(x[:n]) in float32 (arguments clamped to [-87, 87]; relative error < 1e-7),
    in loops LLVM vectorises, unlike calls to libm: exp(x) = 2^k exp(r), |r| <= ln2 / 2, with
    exp(r) by its Taylor polynomial to degree 7 and 2^k written as float32 bits into
    ``scale_i``, an int32 view of the float32 scratch ``scale_f``."""
    for i in range(n):
        v = min(max(x[i], _EXP_LO), _EXP_HI)
        k = np.floor(v * _LOG2E + _HALF)
        r = v - k * _LN2_HI - k * _LN2_LO
        x[i] = _ONE + r * (
            _ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7)))))
        )
        scale_i[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for i in range(n):
        x[i] *= scale_f[i]


@njit(cache=True, inline="always")
def _gru_after_gates(g, gh, h, h_next, v, b_n):  # pragma: no cover - compiled
    """One reset-after step's gates, libm's exp and tanh: ``g`` (B, 3H) in: the input
    projection, out: r, z, n; ``gh`` (B, 3H) = h U^T; ``v`` (B, H) out: U_n h + b_hn; ``h_next``
    (B, H) out: the new state."""
    batch, hidden = h.shape
    for b in range(batch):
        for j in range(hidden):
            r = _sigmoid(g[b, j] + gh[b, j])
            z = _sigmoid(g[b, hidden + j] + gh[b, hidden + j])
            u = gh[b, 2 * hidden + j] + b_n[j]
            n = math.tanh(g[b, 2 * hidden + j] + r * u)
            g[b, j] = r
            g[b, hidden + j] = z
            g[b, 2 * hidden + j] = n
            v[b, j] = u
            h_next[b, j] = n + z * (h[b, j] - n)


@njit(cache=True, inline="always", error_model="numpy")
def _gru_after_gates32(g, gh, h, h_next, v, b_n, buf, scale_i, scale_f):  # pragma: no cover
    """:func:`_gru_after_gates` for float32 with the loops vectorised: sigmoid(a) =
    1 / (1 + exp(-a)) and tanh(a) = 1 - 2 / (exp(2a) + 1) over a row's units at once, exp by
    :func:`_exp32_inplace` (libm's scalar tanh costs ~8x more per unit). Results differ from
    the libm ones in the last bits (tanh's absolute error < 2e-7). ``buf``, ``scale_f``: float32
    scratch of 2H; ``scale_i`` its int32 view."""
    batch, hidden = h.shape
    two = 2 * hidden
    for b in range(batch):
        gb, ghb, hb, hn_b, vb = g[b], gh[b], h[b], h_next[b], v[b]
        for j in range(two):
            buf[j] = -(gb[j] + ghb[j])
        _exp32_inplace(buf, scale_i, scale_f, two)
        for j in range(two):
            gb[j] = _ONE / (_ONE + buf[j])  # r, z
        for j in range(hidden):
            u = ghb[two + j] + b_n[j]
            vb[j] = u
            buf[j] = _TWO * (gb[two + j] + gb[j] * u)
        _exp32_inplace(buf, scale_i, scale_f, hidden)
        for j in range(hidden):
            n = _ONE - _TWO / (buf[j] + _ONE)
            gb[two + j] = n
            hn_b[j] = n + gb[hidden + j] * (hb[j] - n)


@njit(cache=True, inline="always", error_model="numpy")
def _gru_after_back_gates(d, below, g, h_prev, v, d_gh, d_in, carry):  # pragma: no cover
    """One reset-after step backward, before the recurrent product: from ``d`` = dL/dh_t
    (B, H), fills ``d_gh`` (B, 3H) = dL/d(U h + b_hh), ``d_in`` (B, 3H) = dL/d(input
    projection) and ``carry`` = d z + ``below`` (dL/dh_{t-1} from above, without U; ``carry``
    may be ``d`` itself: each unit is read before it is written). The
    constants are float32 so that float32 arrays are computed in float32 (vectorised 8 wide)."""
    batch, hidden = d.shape
    two = 2 * hidden
    for b in range(batch):
        gb, hb, vb, db, gh_b, in_b, cb, lb = (
            g[b],
            h_prev[b],
            v[b],
            d[b],
            d_gh[b],
            d_in[b],
            carry[b],
            below[b],
        )
        for j in range(hidden):
            r, z, n = gb[j], gb[hidden + j], gb[two + j]
            dn = db[j] * (_ONE - z) * (_ONE - n * n)
            dr = dn * vb[j] * r * (_ONE - r)
            dz = db[j] * (hb[j] - n) * z * (_ONE - z)
            gh_b[j] = dr
            gh_b[hidden + j] = dz
            gh_b[two + j] = dn * r
            in_b[j] = dr
            in_b[hidden + j] = dz
            in_b[two + j] = dn
            cb[j] = db[j] * z + lb[j]


@njit(cache=True)
def gru_after_forward(gates, hs, hn, w_hh_t, b_n):  # pragma: no cover - compiled
    """Reset-after GRU forward. In: ``gates`` holds the input projection (b_hh's r and z
    slices folded in), ``hs[0]`` = h0; ``w_hh_t`` (H, 3H), ``b_n`` (H,). Out, in place:
    ``gates`` = r, z, n; ``hs[1:]`` the states; ``hn`` = U_n h_{t-1} + b_hn."""
    steps, batch, three = gates.shape
    gh = np.empty((batch, three), dtype=gates.dtype)
    for t in range(steps):
        np.dot(hs[t], w_hh_t, gh)
        _gru_after_gates(gates[t], gh, hs[t], hs[t + 1], hn[t], b_n)


@njit(cache=True, error_model="numpy")
def gru_after_forward_f32(gates, hs, hn, w_hh_t, b_n):  # pragma: no cover - compiled
    """:func:`gru_after_forward` for float32, gates by :func:`_gru_after_gates32`."""
    steps, batch, three = gates.shape
    gh = np.empty((batch, three), dtype=gates.dtype)
    scale_f = np.empty(three, dtype=gates.dtype)
    buf = np.empty(three, dtype=gates.dtype)
    scale_i = scale_f.view(np.int32)
    for t in range(steps):
        np.dot(hs[t], w_hh_t, gh)
        _gru_after_gates32(gates[t], gh, hs[t], hs[t + 1], hn[t], b_n, buf, scale_i, scale_f)


@njit(cache=True)
def gru_after_step(g, gh, h, h_next, v, b_n, buf, scale_f):  # pragma: no cover - compiled
    """One reset-after forward step's gates after the product ``gh`` = h U^T (which the
    caller computes, e.g. with torch's GEMM): :func:`_gru_after_gates`; ``buf`` and
    ``scale_f`` are unused (the float32 variant's scratch)."""
    _gru_after_gates(g, gh, h, h_next, v, b_n)


@njit(cache=True, error_model="numpy")
def gru_after_step_f32(g, gh, h, h_next, v, b_n, buf, scale_f):  # pragma: no cover
    """:func:`gru_after_step` for float32: :func:`_gru_after_gates32`; ``buf`` and
    ``scale_f`` float32 scratch of at least 2H."""
    _gru_after_gates32(g, gh, h, h_next, v, b_n, buf, scale_f.view(np.int32), scale_f)


@njit(cache=True, error_model="numpy")
def gru_after_back_step(d, below, g, h_prev, v, d_gh, d_in, carry):  # pragma: no cover
    """One reset-after backward step before the product with U (the caller's):
    :func:`_gru_after_back_gates`."""
    _gru_after_back_gates(d, below, g, h_prev, v, d_gh, d_in, carry)


@njit(cache=True, error_model="numpy")
def gru_after_backward(grad_out, gates, hs, hn, w_hh, dgh, delta):  # pragma: no cover
    """Reset-after GRU backward. Fills ``dgh`` (T, B, 3H) = dL/d(U h + b_hh) and ``delta``
    (T, B, 3H) = dL/d(W x + b_ih) (r and z as in dgh; n without dgh's factor r); returns
    dL/dh0 (B, H). ``w_hh`` is (3H, H)."""
    steps = gates.shape[0]
    dh = grad_out[steps - 1].copy()
    zero = np.zeros_like(dh)
    carry = np.empty_like(dh)
    back = np.empty_like(dh)
    for t in range(steps - 1, -1, -1):
        below = grad_out[t - 1] if t > 0 else zero
        _gru_after_back_gates(dh, below, gates[t], hs[t], hn[t], dgh[t], delta[t], carry)
        np.dot(dgh[t], w_hh, back)
        for b in range(dh.shape[0]):
            for j in range(dh.shape[1]):
                dh[b, j] = carry[b, j] + back[b, j]
    return dh


@njit(cache=True)
def gru_before_forward(gates, hs, rh, w_rz_t, w_n_t):  # pragma: no cover - compiled
    """Reset-before GRU forward. In: ``gates`` holds the input projection with all of b_hh
    folded in, ``hs[0]`` = h0; ``w_rz_t`` (H, 2H), ``w_n_t`` (H, H). Out, in place: ``gates`` =
    r, z, n; ``hs[1:]``; ``rh`` = r ∘ h_{t-1}."""
    steps, batch, three = gates.shape
    hidden = three // 3
    gh = np.empty((batch, 2 * hidden), dtype=gates.dtype)
    un = np.empty((batch, hidden), dtype=gates.dtype)
    for t in range(steps):
        np.dot(hs[t], w_rz_t, gh)
        g, h, h_next, rht = gates[t], hs[t], hs[t + 1], rh[t]
        for b in range(batch):
            for j in range(hidden):
                r = _sigmoid(g[b, j] + gh[b, j])
                g[b, j] = r
                g[b, hidden + j] = _sigmoid(g[b, hidden + j] + gh[b, hidden + j])
                rht[b, j] = r * h[b, j]
        np.dot(rht, w_n_t, un)
        for b in range(batch):
            for j in range(hidden):
                n = math.tanh(g[b, 2 * hidden + j] + un[b, j])
                z = g[b, hidden + j]
                g[b, 2 * hidden + j] = n
                h_next[b, j] = n + z * (h[b, j] - n)


@njit(cache=True)
def gru_before_backward(grad_out, gates, hs, w_rz, w_n, d_rz, d_n):  # pragma: no cover
    """Reset-before GRU backward. Fills ``d_rz`` (T, B, 2H) and ``d_n`` (T, B, H), the
    gradients of the r/z and n pre-activations; returns dL/dh0. ``w_rz`` (2H, H), ``w_n``
    (H, H)."""
    steps, batch, three = gates.shape
    hidden = three // 3
    dh = grad_out[steps - 1].copy()
    carry = np.empty_like(dh)
    d_rh = np.empty_like(dh)
    back = np.empty_like(dh)
    for t in range(steps - 1, -1, -1):
        g, h_prev, drz, dn_t = gates[t], hs[t], d_rz[t], d_n[t]
        for b in range(batch):
            for j in range(hidden):
                z, n, d = g[b, hidden + j], g[b, 2 * hidden + j], dh[b, j]
                dn_t[b, j] = d * (1.0 - z) * (1.0 - n * n)
                drz[b, hidden + j] = d * (h_prev[b, j] - n) * z * (1.0 - z)
                carry[b, j] = d * z + (grad_out[t - 1, b, j] if t > 0 else 0.0)
        np.dot(dn_t, w_n, d_rh)  # dL/d(r ∘ h_{t-1})
        for b in range(batch):
            for j in range(hidden):
                r = g[b, j]
                drz[b, j] = d_rh[b, j] * h_prev[b, j] * r * (1.0 - r)
                carry[b, j] += d_rh[b, j] * r
        np.dot(drz, w_rz, back)
        for b in range(batch):
            for j in range(hidden):
                dh[b, j] = carry[b, j] + back[b, j]
    return dh


@njit(cache=True)
def rnn_forward(pre, hs, w_hh_t, relu):  # pragma: no cover - compiled
    """Elman forward: ``hs[t+1] = phi(pre[t] + hs[t] w_hh_t)``; ``w_hh_t`` (H, H)."""
    steps, batch, hidden = pre.shape
    acc = np.empty((batch, hidden), dtype=pre.dtype)
    for t in range(steps):
        np.dot(hs[t], w_hh_t, acc)
        p, h_next = pre[t], hs[t + 1]
        for b in range(batch):
            for j in range(hidden):
                a = p[b, j] + acc[b, j]
                h_next[b, j] = (a if a > 0.0 else 0.0) if relu else math.tanh(a)


@njit(cache=True, error_model="numpy")
def rnn_forward_f32(pre, hs, w_hh_t, relu):  # pragma: no cover - compiled
    """:func:`rnn_forward` for float32 with the tanh loop vectorised: tanh(a) =
    1 - 2 / (exp(2a) + 1) over a row's units at once, exp by :func:`_exp32_inplace` (as the
    float32 GRU's gates; absolute error < 2e-7 against libm's). ReLU as in rnn_forward."""
    steps, batch, hidden = pre.shape
    acc = np.empty((batch, hidden), dtype=pre.dtype)
    buf = np.empty(hidden, dtype=pre.dtype)
    scale_f = np.empty(hidden, dtype=pre.dtype)
    scale_i = scale_f.view(np.int32)
    for t in range(steps):
        np.dot(hs[t], w_hh_t, acc)
        p, h_next = pre[t], hs[t + 1]
        for b in range(batch):
            pb, ab, hb = p[b], acc[b], h_next[b]
            if relu:
                for j in range(hidden):
                    a = pb[j] + ab[j]
                    hb[j] = a if a > _ZERO else _ZERO
                continue
            for j in range(hidden):
                buf[j] = _TWO * (pb[j] + ab[j])
            _exp32_inplace(buf, scale_i, scale_f, hidden)
            for j in range(hidden):
                hb[j] = _ONE - _TWO / (buf[j] + _ONE)


@njit(cache=True, error_model="numpy")
def rnn_backward(grad_out, hs, w_hh, delta, relu):  # pragma: no cover - compiled
    """Elman backward: fills ``delta`` (T, B, H) = dL/d pre-activation; returns dL/dh0."""
    steps, batch, hidden = delta.shape
    dh = grad_out[steps - 1].copy()
    back = np.empty_like(dh)
    for t in range(steps - 1, -1, -1):
        out, dt = hs[t + 1], delta[t]
        for b in range(batch):
            yb, db, tb = out[b], dh[b], dt[b]
            if relu:
                for j in range(hidden):
                    tb[j] = db[j] * (_ONE if yb[j] > _ZERO else _ZERO)
            else:  # float32 constants: a float32 loop stays float32 (vectorised 8 wide)
                for j in range(hidden):
                    y = yb[j]
                    tb[j] = db[j] * (_ONE - y * y)
        np.dot(dt, w_hh, back)
        if t > 0:
            for b in range(batch):
                for j in range(hidden):
                    dh[b, j] = grad_out[t - 1, b, j] + back[b, j]
        else:
            dh[:, :] = back
    return dh
