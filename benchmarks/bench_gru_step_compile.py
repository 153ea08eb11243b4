"""Candidate for issue 18: the reset-after GRU window with its step functions ``torch.compile``d.

The window loop is the one of :mod:`rnnlab.nn.fused_cpu` (input projection in one GEMM, per
step the recurrent GEMM and the gates, backward per step the gates' gradients and one GEMM,
weight gradients in one GEMM each after the loop), with the per-step work written as plain
torch functions and compiled by ``torch.compile`` (inductor, fused C++ loops) instead of
numba. Timed interleaved against rnnlab's kernel (``impl="cpu"``, auto loops) and
``nn.LSTM`` at its matched size, forward+backward of one window, for the record in
``benchmarks/results/fused_cpu/candidates.json``:

    cd benchmarks && python bench_gru_step_compile.py --threads 2 --shapes ptb-small music
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from bench_layers import SHAPES, hidden_for
from torch import Tensor, nn

import rnnlab.nn.recurrent as rr


def _forward_step(gi: Tensor, h: Tensor, w_hh_t: Tensor, b_n: Tensor) -> tuple[Tensor, ...]:
    """One reset-after step: the new state, r, z, n and U_n h + b_hn."""
    hidden = h.size(1)
    gh = h @ w_hh_t
    rz = torch.sigmoid(gi[:, : 2 * hidden] + gh[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    hn = gh[:, 2 * hidden :] + b_n
    n = torch.tanh(gi[:, 2 * hidden :] + r * hn)
    return n + z * (h - n), r, z, n, hn


def _backward_step(
    d: Tensor, below: Tensor, r: Tensor, z: Tensor, n: Tensor, h: Tensor, hn: Tensor, w: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One reset-after step backward: dL/dh_{t-1}, dL/d(U h + b_hh) and dL/d n's pre-act."""
    dn = d * (1 - z) * (1 - n * n)
    dgh = torch.cat((dn * hn * r * (1 - r), d * (h - n) * z * (1 - z), dn * r), dim=1)
    return d * z + below + dgh @ w, dgh, dn


def make_window(
    step_f: Callable[..., tuple[Tensor, ...]], step_b: Callable[..., tuple[Tensor, ...]]
) -> Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], list[Tensor]]:
    """Forward+backward of one window (h0 = 0) with the given step functions: returns the
    gradients of x, W_ih, W_hh, b_ih, b_hh for the output gradient ``grad``."""

    def window(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, grad: Tensor,
               h0: Tensor) -> list[Tensor]:  # fmt: skip
        steps, hidden = x.size(0), w_hh.size(1)
        two = 2 * hidden
        bias = b_ih + torch.cat((b_hh[:two], b_hh.new_zeros(hidden)))
        gi = torch.addmm(bias, x.reshape(-1, x.size(2)), w_ih.t()).view(steps, x.size(1), -1)
        w_hh_t, b_n = w_hh.t().contiguous(), b_hh[two:]
        hs, saved = [h0], []
        for t in range(steps):
            h, *rest = step_f(gi[t], hs[-1], w_hh_t, b_n)
            hs.append(h)
            saved.append(rest)
        d, dghs, dns = grad[-1], [None] * steps, [None] * steps
        for t in range(steps - 1, -1, -1):
            r, z, n, hn = saved[t]
            below = grad[t - 1] if t else torch.zeros_like(d)
            d, dghs[t], dns[t] = step_b(d, below, r, z, n, hs[t], hn, w_hh)
        dgh = torch.stack(dghs)
        delta = torch.cat((dgh[..., :two], torch.stack(dns)), dim=2).view(-1, 3 * hidden)
        h_prev = torch.stack(hs[:-1]).view(-1, hidden)
        dgh2d = dgh.view(-1, 3 * hidden)
        return [(delta @ w_ih).view_as(x), delta.t() @ x.reshape(-1, x.size(2)), dgh2d.t() @ h_prev,
                delta.sum(0), dgh2d.sum(0)]  # fmt: skip

    return window


def bench_shape(name: str, reps: int, iters: int) -> dict:
    """The candidate, rnnlab's kernel and nn.LSTM at one shape of ``bench_layers.SHAPES``."""
    shape = SHAPES[name]
    steps, batch, inputs = shape["steps"], shape["batch"], shape["input_size"]
    hidden, lstm_hidden = hidden_for(shape, "gru"), hidden_for(shape, "lstm")
    x = torch.randn(steps, batch, inputs)
    grad = torch.randn(steps, batch, hidden)
    ours = rr.GRU(inputs, hidden, impl="cpu")
    lstm = nn.LSTM(inputs, lstm_hidden)
    lstm_grad = torch.randn(steps, batch, lstm_hidden)
    weights = [p.detach() for p in ours.layer_weights(0)]
    h0 = torch.zeros(batch, hidden)
    started = time.perf_counter()
    compiled = make_window(torch.compile(_forward_step), torch.compile(_backward_step))
    with torch.no_grad():
        compiled(x, *weights, grad, h0)
    compile_s = time.perf_counter() - started
    eager = make_window(_forward_step, _backward_step)
    xg = x.clone().requires_grad_()  # the compiled window computes what rnnlab's kernel does
    out, _ = ours(xg)
    out.backward(grad)
    want = [xg.grad, *(p.grad for p in ours.parameters())]
    with torch.no_grad():
        got = compiled(x, *weights, grad, h0)
    error = max((a - b).abs().max().item() for a, b in zip(got, want, strict=True))

    def run_ours() -> None:
        for p in ours.parameters():
            p.grad = None
        out, _ = ours(x)
        out.backward(grad)

    def run_lstm() -> None:
        for p in lstm.parameters():
            p.grad = None
        out, _ = lstm(x)
        out.backward(lstm_grad)

    def run_window(window: Callable[..., list[Tensor]]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                window(x, *weights, grad, h0)

        return run

    contenders = {"nn_lstm": run_lstm, "rnnlab_cpu": run_ours,
                  "compiled_steps": run_window(compiled), "eager_steps": run_window(eager)}  # fmt: skip
    seconds: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        for key, fn in contenders.items():
            fn()
            started = time.perf_counter()
            for _ in range(iters):
                fn()
            seconds[key].append((time.perf_counter() - started) / iters)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "ms": {k: round(1e3 * v, 3) for k, v in median.items()},
        "time_vs_lstm": {k: round(v / median["nn_lstm"], 3) for k, v in median.items()},
        "compile_s": round(compile_s, 1),
        "max_abs_grad_difference_vs_rnnlab_cpu": error,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the shapes asked for; print and (``--out``) write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["ptb-small", "music"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict = {}
    for name in args.shapes:
        results[name] = bench_shape(name, args.reps, args.iters)
        print(name, json.dumps(results[name]), flush=True)
    report = {"threads": args.threads, "torch": torch.__version__, "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
