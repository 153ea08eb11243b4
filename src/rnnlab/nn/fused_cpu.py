"""rnnlab's own whole-window CPU kernels for the GRU (both reset forms) and the tanh/relu RNN.

On the CPU, torch fuses only the LSTM (oneDNN); ``nn.GRU`` and ``nn.RNN`` run op by op and
record autograd nodes at every step. Here one :class:`torch.autograd.Function` covers one
direction of one layer over the whole window, so autograd sees a single node:

* forward: the input projection of all T steps in one GEMM; then per step one GEMM for the
  recurrence and a handful of in-place pointwise ops (no autograd bookkeeping); it saves the
  gate activations, the states and (GRU) the recurrent pre-activations backward needs;
* backward: the step-independent factors of the gate derivatives for all steps at once, then
  per step one multiply for the step's pre-activation gradients and one GEMM carrying the
  state gradient back; after the loop the weight gradients in one GEMM each
  (``dW_hh = sum_t delta_t^T h_{t-1}``, ``dW_ih = delta^T x``) and the input gradient in one.

The time loops come in three implementations computing the same thing (:func:`loop_kind`):
compiled with numba (:mod:`rnnlab.nn.fused_cpu_numba`: one call per window, a BLAS product and
a compiled gate loop per step; for small steps, :data:`NUMBA_MAX_UNITS`), mixed (the reset-after
GRU above that size: a Python loop with torch's GEMM per step and one compiled call for the
step's gates, forward and backward) and a Python loop of torch ops under no autograd (6-7
in-place ops per step forward, 2-3 backward; for the other cells at larger steps, with
``RNNLAB_CPU_LOOPS=torch``, and as the fallback, with a one-line warning, where numba cannot be
imported). In float32 the compiled GRU gates and the tanh RNN use their own vectorised exp
(tanh from it), within float32 rounding of libm's. ``benchmarks/bench_layers.py --shapes ptb-small
ptb-medium music`` and ``benchmarks/results/fused_cpu/`` hold the measurements behind the
choice: the torch-op loop pays a few microseconds of dispatch per op, which dominates at
small sizes (the music shape: 200 steps of batch 8 x 41 units); numba's BLAS is far slower
than torch's GEMM at PTB-small's 20 x 240 x 720 product.

:func:`supports` says whether a layer call can run here (CPU, float32/float64, padded input,
one direction, grad enabled, no autocast); :func:`run_stack` runs the layer stack with dropout
between layers, as the explicit loop does. First-order gradients only: double backward raises
a one-line error. The equations are those of :mod:`rnnlab.nn.cells`; the tests compare both.

Shapes: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx

if TYPE_CHECKING:  # the layer classes import this module; only annotations need theirs
    from rnnlab.nn.recurrent import Recurrent

DTYPES = (torch.float32, torch.float64)
"""The dtypes the kernels run in; others (bf16, half) keep the layer's other paths."""

_DOUBLE_BACKWARD = (
    "double backward through rnnlab's CPU window kernel is not supported; use impl='explicit' "
    "for higher-order gradients"
)


LOOPS_ENV = "RNNLAB_CPU_LOOPS"
"""Environment variable choosing the time loops: "auto" (default: by size, see
:data:`NUMBA_MAX_UNITS`), "numba" (compiled, :mod:`rnnlab.nn.fused_cpu_numba`), "mixed" (the
reset-after GRU only, others run "torch" then: per step torch's GEMM, then one compiled call for
the step's gate arithmetic) or "torch" (a Python loop of torch ops, no autograd)."""

LOOP_KINDS = ("numba", "mixed", "torch")
"""The time-loop implementations :func:`loop_kind` picks from."""

NUMBA_MAX_UNITS = 1024
"""``auto`` runs the numba loops for the RNN and the reset-before GRU when a step has at most
this many units (batch x hidden), the torch-op loops above (the reset-after GRU:
:data:`NUMBA_MAX_GRU_MACS`). Measured (one thread): at the music shape (8 x 41 = 328 units) the
numba loops are 1.3x faster than the torch-op loops, whose fixed cost of ~10 op dispatches per
step dominates there; at PTB-small (20 x 240 = 4800) they are 1.5x slower. The crossover lies
between; 1024 is its estimate from those per-op and per-unit costs."""

NUMBA_MAX_GRU_MACS = 2**17
"""For the reset-after GRU, which has mixed loops, ``auto`` runs the numba loops when a step's
recurrent product has at most this many multiply-adds (batch x hidden x 3 hidden), the mixed
loops above: numba's BLAS falls behind torch's GEMM as the product grows, whatever the batch.
Measured (2 threads, forward+backward, numba's time / mixed's): batch 32 x 16 units (25k)
0.59, 8 x 41 (the music shape, 40k) 0.76, 8 x 64 (98k) 0.9-1.1, 4 x 128 (197k) 1.45,
8 x 128 (393k) 1.6, 20 x 240 (PTB-small, 3.5M) 1.3-3.5."""

_NUMBA: list[ModuleType | None] = []  # the loaded numba loops (None: unavailable), once


def _load_numba() -> ModuleType | None:
    """The numba loops module, imported once; None (and a one-line warning, once per process)
    where numba cannot be imported."""
    if not _NUMBA:
        try:
            from rnnlab.nn import fused_cpu_numba
        except ImportError as error:  # numba missing or broken for this interpreter
            warnings.warn(
                f"rnnlab: numba is unavailable ({error}); the GRU/RNN CPU window kernel runs its "
                "time loop as torch ops, slower at small sizes (pip install numba)",
                RuntimeWarning,
                stacklevel=3,
            )
            fused_cpu_numba = None
        _NUMBA.append(fused_cpu_numba)
    return _NUMBA[0]


def loop_kind(units: int = 0, mixed: bool = False, macs: int = 0) -> str:
    """Which time loops (one of :data:`LOOP_KINDS`) run a layer whose steps have ``units``
    (batch x hidden) units and a recurrent product of ``macs`` multiply-adds; ``mixed``:
    whether the cell has mixed loops (the reset-after GRU). ``RNNLAB_CPU_LOOPS`` chooses;
    "auto" (default) picks, for a cell with mixed loops, "numba" up to
    :data:`NUMBA_MAX_GRU_MACS` and "mixed" above; for the others "numba" up to
    :data:`NUMBA_MAX_UNITS` units and "torch" above. Without numba: "torch"."""
    choice = os.environ.get(LOOPS_ENV, "auto")
    if choice not in LOOP_KINDS:
        if mixed:
            choice = "numba" if macs <= NUMBA_MAX_GRU_MACS else "mixed"
        else:
            choice = "numba" if units <= NUMBA_MAX_UNITS else "torch"
    if choice == "mixed" and not mixed:
        choice = "torch"
    if choice != "torch" and _load_numba() is None:
        choice = "torch"
    return choice


def compiled_loops(units: int = 0) -> ModuleType | None:
    """The numba-compiled whole-window loops for steps of ``units`` (batch x hidden) units, or
    None where :func:`loop_kind` picks other loops (then a one-line warning, once per process,
    if numba cannot be imported)."""
    return _load_numba() if loop_kind(units) == "numba" else None


def _np(t: Tensor):  # noqa: ANN202 - a NumPy view for the compiled loops
    """A NumPy view of ``t`` (detached; made contiguous first if it is not)."""
    return t.detach().contiguous().numpy()


def supports(layer: Recurrent, input: Tensor) -> bool:
    """Whether this call of ``layer`` on the padded ``input`` can run the CPU window kernel:
    an RNN or GRU, CPU tensors of float32/float64, one direction, autograd on (inference keeps
    torch's kernel, which is faster without backward) and no CPU autocast."""
    return (
        layer.family in ("rnn", "gru")
        and not layer.bidirectional
        and input.device.type == "cpu"
        and input.dtype in DTYPES
        and layer.weight_ih_l0.dtype == input.dtype
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def auto_picks(layer: Recurrent) -> bool:
    """Whether ``impl="auto"`` runs this kernel for ``layer`` where :func:`supports` allows.

    Chosen by measurement (``benchmarks/results/fused_cpu/``, forward+backward, 2 threads):
    the kernel beat torch's op-by-op GRU by 1.3-4.3x and its RNN by 1.4-2.3x at all three
    shapes of issue 18 (PTB small and medium, Chung's music), and the reset-before GRU has no
    torch kernel (its alternative is the slower explicit loop). Its results equal torch's
    kernel's up to float rounding, not bitwise, and its dropout masks are the explicit loop's,
    so a GRU or RNN trained with ``impl="auto"`` moved in the last bits when it arrived (the
    pinned GRU runs were re-recorded then, on purpose); ``impl="fused"`` keeps torch's kernel.
    """
    return layer.family in ("rnn", "gru")


def run_stack(
    layer: Recurrent, x: Tensor, states: tuple[Tensor, ...]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The whole stack of ``layer`` over x (T, B, I) from h0 = states[0] (L, B, H): output
    (T, B, H) of the last layer and the final states (L, B, H). Dropout acts on every layer's
    output but the last, in training mode, as in the explicit loop (same calls, same masks)."""
    h0 = states[0]
    finals = []
    for k in range(layer.num_layers):
        w_ih, w_hh, b_ih, b_hh = layer.layer_weights(k)
        if layer.family == "gru":
            out = _GRUWindow.apply(x, h0[k], w_ih, w_hh, b_ih, b_hh, layer.reset == "before")
        else:
            out = _RNNWindow.apply(x, h0[k], w_ih, w_hh, b_ih, b_hh, layer.nonlinearity == "relu")
        finals.append(out[-1])
        x = out
        if layer.dropout and layer.training and k < layer.num_layers - 1:
            x = F.dropout(x, layer.dropout, training=True)
    return x, (torch.stack(finals),)


def _gru_slices(hidden: int) -> tuple[tuple[int, int], ...]:
    """The last-axis ranges of (r and z), r, z and n in a GRU's (..., 3H) gate tensor."""
    return ((0, 2 * hidden), (0, hidden), (hidden, 2 * hidden), (2 * hidden, 3 * hidden))


def _plus(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """a + b where either bias may be absent (None): the one present, or None."""
    return b if a is None else (a if b is None else a + b)


def _input_projection(x: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """x W_ih^T + bias for the whole window in one GEMM: (T, B, G*H), a fresh buffer."""
    x2d = x.reshape(-1, x.size(-1))  # (T*B, I)
    gi = x2d.mm(w_ih.t()) if bias is None else torch.addmm(bias, x2d, w_ih.t())
    return gi.view(x.size(0), x.size(1), w_ih.size(0))


def _window_grads(
    ctx: FunctionCtx,
    delta: Tensor,
    x: Tensor,
    w_ih: Tensor,
    dh0: Tensor | None,
    dw_hh: Tensor | None,
    d_hh: Tensor,
) -> tuple[Tensor | None, ...]:
    """The layer's gradients in ``forward``'s argument order (x, h0, W_ih, W_hh, b_ih, b_hh,
    the variant flag), each None where not needed. From delta (T, B, G*H), the gradient of
    every step's input projection, x, W_ih and b_ih take one GEMM or sum each; ``d_hh``
    (T, B, G*H), the gradient of every step's U h + b_hh, gives b_hh's. ``dh0`` and ``dw_hh``
    come from the caller's backward loop."""
    delta2d = delta.view(-1, delta.size(-1))  # (T*B, G*H)
    dx = delta2d.mm(w_ih).view_as(x) if ctx.needs_input_grad[0] else None
    dh0 = dh0 if ctx.needs_input_grad[1] else None
    dw_ih = delta2d.t().mm(x.reshape(-1, x.size(-1))) if ctx.needs_input_grad[2] else None
    dw_hh = dw_hh if ctx.needs_input_grad[3] else None
    db_ih = delta2d.sum(0) if ctx.needs_input_grad[4] else None
    db_hh = d_hh.sum((0, 1)) if ctx.needs_input_grad[5] else None
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None


class _RNNWindow(torch.autograd.Function):
    r"""One Elman layer over a window: :math:`h_t = \phi(W x_t + b_{ih} + U h_{t-1} + b_{hh})`.

    forward(x (T, B, I), h0 (B, H), W (H, I), U (H, H), b_ih, b_hh (H,) or None, relu) ->
    the states h_1..h_T (T, B, H)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        h0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        relu: bool,
    ) -> Tensor:
        bias = _plus(b_ih, b_hh)
        pre = _input_projection(x, w_ih, bias)  # (T, B, H): W x + b_ih + b_hh
        steps = pre.size(0)
        hs = x.new_empty(steps + 1, *h0.shape)  # h_0 .. h_T
        hs[0] = h0
        ctx.relu, ctx.loops = relu, compiled_loops(h0.numel())
        if ctx.loops is not None:
            f32 = x.dtype == torch.float32
            forward = ctx.loops.rnn_forward_f32 if f32 else ctx.loops.rnn_forward
            forward(_np(pre), _np(hs), _np(w_hh.t()), relu)
            ctx.save_for_backward(x, w_ih, w_hh, hs)
            return hs[1:]
        w_hh_t = w_hh.t()
        pre_t, h_t = pre.unbind(0), hs.unbind(0)  # per-step views, made once
        for t in range(steps):
            h = torch.addmm(pre_t[t], h_t[t], w_hh_t, out=h_t[t + 1])  # (B, H)
            h.relu_() if relu else h.tanh_()
        ctx.save_for_backward(x, w_ih, w_hh, hs)
        return hs[1:]

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: Tensor | None) -> tuple:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        x, w_ih, w_hh, hs = ctx.saved_tensors
        out = hs[1:]  # (T, B, H)
        steps = out.size(0)
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        delta = torch.empty_like(out)  # dL/d pre_t
        if ctx.loops is not None:
            dh0 = torch.from_numpy(
                ctx.loops.rnn_backward(_np(grad_out), _np(hs), _np(w_hh), _np(delta), ctx.relu)
            )
        else:
            # phi'(pre) from phi's output, for every step at once
            slope = (out > 0).to(out.dtype) if ctx.relu else 1 - out * out
            dh = grad_out[steps - 1].clone()  # dL/dh_T (the final state is out[-1])
            delta_t, slope_t, go_t = delta.unbind(0), slope.unbind(0), grad_out.unbind(0)
            for t in range(steps - 1, -1, -1):
                torch.mul(dh, slope_t[t], out=delta_t[t])
                if t:
                    dh = torch.addmm(go_t[t - 1], delta_t[t], w_hh)  # dL/dh_{t-1}
            dh0 = delta[0].mm(w_hh)
        dw_hh = None
        if ctx.needs_input_grad[3]:
            delta2d = delta.view(-1, delta.size(-1))
            dw_hh = delta2d.t().mm(hs[:-1].reshape(-1, hs.size(-1)))  # one GEMM: (H, H)
        return _window_grads(ctx, delta, x, w_ih, dh0, dw_hh, delta)


class _GRUWindow(torch.autograd.Function):
    r"""One GRU layer over a window, gates r, z, n (see :class:`rnnlab.nn.cells.GRUCell`).

    reset after (torch):  n = tanh(W_n x + b_in + r ∘ (U_n h + b_hn));
    reset before (Cho):   n = tanh(W_n x + b_in + U_n (r ∘ h) + b_hn);
    h_t = (1 - z) ∘ n + z ∘ h_{t-1}.

    forward(x (T, B, I), h0 (B, H), W (3H, I), U (3H, H), b_ih, b_hh (3H,) or None, before)
    -> the states h_1..h_T (T, B, H)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        h0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        before: bool,
    ) -> Tensor:
        hidden = w_hh.size(1)
        two = 2 * hidden
        if before:  # every b_hh slice adds straight to its pre-activation: fold it in
            bias = _plus(b_ih, b_hh)
        else:  # b_hn sits inside r ∘ (U_n h + b_hn): only r's and z's slices fold
            rz = None if b_hh is None else torch.cat((b_hh[:two], b_hh.new_zeros(hidden)))
            bias = _plus(b_ih, rz)
        gates = _input_projection(x, w_ih, bias)  # (T, B, 3H); becomes r, z, n in place
        steps, batch = gates.size(0), gates.size(1)
        hs = x.new_empty(steps + 1, batch, hidden)  # h_0 .. h_T
        hs[0] = h0
        units, macs = batch * hidden, batch * hidden * 3 * hidden
        ctx.before, ctx.kind = before, loop_kind(units, mixed=not before, macs=macs)
        ctx.loops = None if ctx.kind == "torch" else _load_numba()
        if ctx.kind == "mixed":
            b_n = x.new_zeros(hidden) if b_hh is None else b_hh[two:]
            hn = _GRUWindow._forward_mixed(ctx.loops, gates, hs, w_hh, b_n)
            ctx.save_for_backward(x, w_ih, w_hh, hs, gates, hn)
            return hs[1:]
        if ctx.loops is not None:
            extra = x.new_empty(steps, batch, hidden)  # before: r ∘ h_{t-1}; after: U_n h + b_hn
            if before:
                w_rz_t, w_n_t = _np(w_hh[:two].t()), _np(w_hh[two:].t())
                ctx.loops.gru_before_forward(_np(gates), _np(hs), _np(extra), w_rz_t, w_n_t)
            else:
                b_n = x.new_zeros(hidden) if b_hh is None else b_hh[two:]
                forward = ctx.loops.gru_after_forward
                if x.dtype == torch.float32:
                    forward = ctx.loops.gru_after_forward_f32
                forward(_np(gates), _np(hs), _np(extra), _np(w_hh.t()), _np(b_n))
            ctx.save_for_backward(x, w_ih, w_hh, hs, gates, extra)
            return hs[1:]
        if before:
            w_rz_t, w_n_t = w_hh[:two].t(), w_hh[two:].t()
            rh = x.new_empty(steps, batch, hidden)  # r ∘ h_{t-1}: the factor of dU_n
            gh = x.new_empty(batch, two)
            rz, r, z, n = (gates[..., a:b].unbind(0) for a, b in _gru_slices(hidden))
            h_t, rh_t = hs.unbind(0), rh.unbind(0)
            for t in range(steps):
                rz[t].add_(torch.mm(h_t[t], w_rz_t, out=gh)).sigmoid_()  # r, z
                torch.mul(r[t], h_t[t], out=rh_t[t])
                n[t].addmm_(rh_t[t], w_n_t).tanh_()  # n
                torch.lerp(n[t], h_t[t], z[t], out=h_t[t + 1])
            ctx.save_for_backward(x, w_ih, w_hh, hs, gates, rh)
        else:
            w_hh_t = w_hh.t()
            b_n = x.new_zeros(hidden) if b_hh is None else b_hh[two:]
            hn = x.new_empty(steps, batch, hidden)  # U_n h_{t-1} + b_hn
            gh = x.new_empty(batch, 3 * hidden)
            gh_rz, gh_n = gh[:, :two], gh[:, two:]
            # per-step views made once (slicing in the loop would cost an op each)
            rz, r, z, n = (gates[..., a:b].unbind(0) for a, b in _gru_slices(hidden))
            h_t, hn_t = hs.unbind(0), hn.unbind(0)
            for t in range(steps):
                torch.mm(h_t[t], w_hh_t, out=gh)
                rz[t].add_(gh_rz).sigmoid_()  # r, z
                torch.add(gh_n, b_n, out=hn_t[t])
                n[t].addcmul_(r[t], hn_t[t]).tanh_()  # n
                torch.lerp(n[t], h_t[t], z[t], out=h_t[t + 1])
            ctx.save_for_backward(x, w_ih, w_hh, hs, gates, hn)
        return hs[1:]

    @staticmethod
    def _forward_mixed(
        loops: ModuleType, gates: Tensor, hs: Tensor, w_hh: Tensor, b_n: Tensor
    ) -> Tensor:
        """The reset-after forward loop, mixed: per step torch's GEMM h U^T into one buffer,
        then one compiled call for the gates (:func:`fused_cpu_numba.gru_after_step`). Fills
        ``gates`` (r, z, n) and ``hs[1:]`` in place; returns U_n h_{t-1} + b_hn (T, B, H)."""
        steps, batch, hidden = hs.size(0) - 1, hs.size(1), hs.size(2)
        hn = hs.new_empty(steps, batch, hidden)
        gh = hs.new_empty(batch, 3 * hidden)
        w_hh_t = w_hh.t().contiguous()  # GEMMs run faster on it than on the transposed view
        step = loops.gru_after_step_f32 if hs.dtype == torch.float32 else loops.gru_after_step
        buf, scale = _np(hs.new_empty(3 * hidden)), _np(hs.new_empty(3 * hidden))
        g_np, hs_np, hn_np, gh_np, b_np = _np(gates), _np(hs), _np(hn), _np(gh), _np(b_n)
        h_t = hs.unbind(0)
        for t in range(steps):
            torch.mm(h_t[t], w_hh_t, out=gh)
            step(g_np[t], gh_np, hs_np[t], hs_np[t + 1], hn_np[t], b_np, buf, scale)
        return hn

    @staticmethod
    def _backward_mixed(
        loops: ModuleType,
        grad_out: Tensor,
        gates: Tensor,
        hs: Tensor,
        hn: Tensor,
        w_hh: Tensor,
        dgh: Tensor,
        delta: Tensor,
    ) -> Tensor:
        """The reset-after backward loop, mixed: per step one compiled call for the gates'
        gradients (:func:`fused_cpu_numba.gru_after_back_step`), then torch's GEMM carrying
        dL/dh back through U. Fills ``dgh`` and ``delta`` as the numba loop does; returns
        dL/dh0."""
        steps = hs.size(0) - 1
        dh = grad_out[-1].clone()  # dL/dh_T
        zero = torch.zeros_like(dh)
        go_np, g_np, hs_np, hn_np = _np(grad_out), _np(gates), _np(hs), _np(hn)
        dgh_np, delta_np, dh_np, zero_np = _np(dgh), _np(delta), _np(dh), _np(zero)
        step, dgh_t = loops.gru_after_back_step, dgh.unbind(0)
        for t in range(steps - 1, -1, -1):
            below = go_np[t - 1] if t else zero_np
            # dh becomes the carry d z + below in place (each unit read before it is written)
            step(dh_np, below, g_np[t], hs_np[t], hn_np[t], dgh_np[t], delta_np[t], dh_np)
            dh.addmm_(dgh_t[t], w_hh)  # dL/dh_{t-1}
        return dh

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: Tensor | None) -> tuple:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        x, w_ih, w_hh, hs, gates, extra = ctx.saved_tensors
        steps, batch, hidden = hs.size(0) - 1, hs.size(1), hs.size(2)
        two = 2 * hidden
        if grad_out is None:
            grad_out = torch.zeros_like(hs[1:])
        if ctx.kind != "torch":
            return _GRUWindow._backward_compiled(ctx, grad_out, x, w_ih, w_hh, hs, gates, extra)
        r, z, n = gates.split(hidden, dim=2)  # (T, B, H) each
        h_prev = hs[:-1]
        # The step-independent factors, for all steps at once: with d = dL/dh_t,
        #   dn_pre = d (1 - z)(1 - n^2),   dz_pre = d (h_{t-1} - n) z (1 - z)
        dn_factor = (1 - z) * (1 - n * n)
        dz_factor = (h_prev - n) * z * (1 - z)
        dr_sig = r * (1 - r)  # sigmoid' of r's pre-activation
        if ctx.before:
            return _GRUWindow._backward_before(
                ctx, grad_out, x, w_ih, w_hh, hs, r, z, extra, dn_factor, dz_factor, dr_sig
            )
        hn = extra  # U_n h_{t-1} + b_hn
        # after: dr_pre = dn_pre hn r(1-r); dL/d(U_n h + b_hn) = dn_pre r
        factors = torch.stack((dn_factor * hn * dr_sig, dz_factor, dn_factor * r), dim=2)
        dgh = torch.empty(steps, batch, 3, hidden, dtype=hs.dtype)  # dL/d(U h + b_hh)
        dhs = torch.empty_like(hs[1:])  # dL/dh_t of every step
        dhs[-1] = grad_out[-1]
        d_t, g_t, f_t, z_t = (
            dhs.unsqueeze(2).unbind(0),
            dgh.unbind(0),
            factors.unbind(0),
            z.unbind(0),
        )
        go_t, dgh_t, dh_t = grad_out.unbind(0), dgh.view(steps, batch, -1).unbind(0), dhs.unbind(0)
        for t in range(steps - 1, -1, -1):
            d = d_t[t]  # (B, 1, H)
            torch.mul(d, f_t[t], out=g_t[t])
            if t:
                prev = torch.addcmul(go_t[t - 1], dh_t[t], z_t[t], out=dh_t[t - 1])
                prev.addmm_(dgh_t[t], w_hh)
        dgh = dgh.view(steps, batch, 3 * hidden)
        dh0 = None
        if ctx.needs_input_grad[1]:
            dh0 = torch.addmm(dhs[0] * z[0], dgh[0], w_hh)
        # dL/d(input projection): r and z as dgh, n without the r factor
        delta = dgh.clone()
        torch.mul(dhs, dn_factor, out=delta[:, :, two:])
        dw_hh = None
        if ctx.needs_input_grad[3]:
            dgh2d = dgh.view(-1, 3 * hidden)
            dw_hh = dgh2d.t().mm(h_prev.reshape(-1, hidden))  # one GEMM: (3H, H)
        return _window_grads(ctx, delta, x, w_ih, dh0, dw_hh, dgh)

    @staticmethod
    def _backward_compiled(
        ctx: FunctionCtx,
        grad_out: Tensor,
        x: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        hs: Tensor,
        gates: Tensor,
        extra: Tensor,
    ) -> tuple:
        """Backward with the numba loops: the loop fills the pre-activation gradients, then
        the same GEMMs as the torch-op loops give the weight and input gradients."""
        steps, batch, hidden = hs.size(0) - 1, hs.size(1), hs.size(2)
        two = 2 * hidden
        h_prev = hs[:-1].reshape(-1, hidden)
        if ctx.before:
            d_rz = hs.new_empty(steps, batch, two)
            d_n = hs.new_empty(steps, batch, hidden)
            dh0 = torch.from_numpy(
                ctx.loops.gru_before_backward(
                    _np(grad_out),
                    _np(gates),
                    _np(hs),
                    _np(w_hh[:two]),
                    _np(w_hh[two:]),
                    _np(d_rz),
                    _np(d_n),
                )  # fmt: skip
            )
            delta = torch.cat((d_rz, d_n), dim=2)  # every slice adds to its pre-activation
            dgh = delta
            dw_hh = None
            if ctx.needs_input_grad[3]:
                dw_hh = torch.cat(
                    (
                        d_rz.view(-1, two).t().mm(h_prev),  # (2H, H)
                        d_n.view(-1, hidden).t().mm(extra.view(-1, hidden)),  # (H, H): r ∘ h
                    )
                )
        else:
            dgh = hs.new_empty(steps, batch, 3 * hidden)  # dL/d(U h + b_hh)
            delta = hs.new_empty(steps, batch, 3 * hidden)  # dL/d(input projection)
            if ctx.kind == "mixed":
                dh0 = _GRUWindow._backward_mixed(
                    ctx.loops, grad_out, gates, hs, extra, w_hh, dgh, delta
                )
            else:
                dh0 = torch.from_numpy(
                    ctx.loops.gru_after_backward(
                        _np(grad_out),
                        _np(gates),
                        _np(hs),
                        _np(extra),
                        _np(w_hh),
                        _np(dgh),
                        _np(delta),
                    )  # fmt: skip
                )
            dw_hh = None
            if ctx.needs_input_grad[3]:
                dw_hh = dgh.view(-1, 3 * hidden).t().mm(h_prev)  # one GEMM: (3H, H)
        return _window_grads(ctx, delta, x, w_ih, dh0, dw_hh, dgh)

    @staticmethod
    def _backward_before(
        ctx: FunctionCtx,
        grad_out: Tensor,
        x: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        hs: Tensor,
        r: Tensor,
        z: Tensor,
        rh: Tensor,
        dn_factor: Tensor,
        dz_factor: Tensor,
        dr_sig: Tensor,
    ) -> tuple:
        """Backward of the reset-before GRU. Every slice of the input projection and of b_hh
        adds straight to its gate's pre-activation, so one delta (T, B, 3H) serves W_ih,
        b_ih and b_hh; U_rz's factor is h_{t-1}, U_n's is r ∘ h_{t-1}."""
        steps, batch, hidden = hs.size(0) - 1, hs.size(1), hs.size(2)
        two = 2 * hidden
        w_rz, w_n = w_hh[:two], w_hh[two:]
        h_prev = hs[:-1]
        zn_factors = torch.stack((dz_factor, dn_factor), dim=2)  # (T, B, 2, H)
        dr_factor = h_prev * dr_sig  # dr_pre = dL/d(r∘h) h r(1-r)
        delta = torch.empty(steps, batch, 3 * hidden, dtype=hs.dtype)  # r, z, n pre-acts
        d_rh = torch.empty(batch, hidden, dtype=hs.dtype)
        d = grad_out[-1].clone()  # dL/dh_T
        zn_t = delta[:, :, hidden:].view(steps, batch, 2, hidden).unbind(0)  # per-step views
        rz_t, r_t, n_t = (
            delta[..., a:b].unbind(0) for a, b in _gru_slices(hidden)[:2] + ((two, 3 * hidden),)
        )
        f_t, drf_t, go_t, z_t, rr_t = (
            zn_factors.unbind(0),
            dr_factor.unbind(0),
            grad_out.unbind(0),
            z.unbind(0),
            r.unbind(0),
        )
        for t in range(steps - 1, -1, -1):
            torch.mul(d.unsqueeze(1), f_t[t], out=zn_t[t])
            torch.mm(n_t[t], w_n, out=d_rh)  # dL/d(r ∘ h_{t-1})
            torch.mul(d_rh, drf_t[t], out=r_t[t])
            if t or ctx.needs_input_grad[1]:
                base = go_t[t - 1] if t else torch.zeros_like(d)
                d_new = torch.addcmul(base, d, z_t[t])
                d_new.addcmul_(d_rh, rr_t[t]).addmm_(rz_t[t], w_rz)
                d = d_new
        dh0 = d
        dw_hh = None
        if ctx.needs_input_grad[3]:
            d_rz = delta[:, :, :two].reshape(-1, two)
            d_n = delta[:, :, two:].reshape(-1, hidden)
            dw_hh = torch.cat(
                (
                    d_rz.t().mm(h_prev.reshape(-1, hidden)),  # (2H, H)
                    d_n.t().mm(rh.view(-1, hidden)),  # (H, H)
                )
            )
        return _window_grads(ctx, delta, x, w_ih, dh0, dw_hh, delta)
