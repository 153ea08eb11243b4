"""rnnlab.nn.cells against torch.nn cells, NumPy and finite differences."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell

I, H, B = 4, 5, 3

# name -> (rnnlab factory, torch.nn factory); both take (input_size, hidden_size, bias)
CELLS = {
    "rnn-tanh": (
        lambda i, h, b=True: RNNCell(i, h, b),
        lambda i, h, b=True: nn.RNNCell(i, h, b),
    ),
    "rnn-relu": (
        lambda i, h, b=True: RNNCell(i, h, b, nonlinearity="relu"),
        lambda i, h, b=True: nn.RNNCell(i, h, b, nonlinearity="relu"),
    ),
    "gru": (lambda i, h, b=True: GRUCell(i, h, b), lambda i, h, b=True: nn.GRUCell(i, h, b)),
    "lstm": (lambda i, h, b=True: LSTMCell(i, h, b), lambda i, h, b=True: nn.LSTMCell(i, h, b)),
}
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-10}}


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _pair(name: str, bias: bool = True, dtype: torch.dtype = torch.float64):
    """An rnnlab cell and a torch.nn cell holding the same weights (copied torch -> rnnlab)."""
    ours_factory, torch_factory = CELLS[name]
    reference = torch_factory(I, H, bias).to(dtype)
    ours = ours_factory(I, H, bias).to(dtype)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cell_matches_torch(
    name: str, dtype: torch.dtype, bias: bool, batched: bool, with_state: bool
) -> None:
    torch.manual_seed(0)
    ours, reference = _pair(name, bias, dtype)
    batch = (B,) if batched else ()
    x = torch.randn(*batch, I, dtype=dtype, requires_grad=True)
    hx = None
    if with_state:
        states = [torch.randn(*batch, H, dtype=dtype, requires_grad=True) for _ in range(2)]
        hx = tuple(states) if name == "lstm" else states[0]
    out_ours = _as_tuple(ours(x, hx))
    out_ref = _as_tuple(reference(x, hx))
    for a, b in zip(out_ours, out_ref, strict=True):
        assert a.shape == b.shape == (*batch, H)
        torch.testing.assert_close(a, b, **TOL[dtype])
    weights = [torch.randn_like(o) for o in out_ref]
    inputs = [x, *(() if hx is None else _as_tuple(hx))]
    grads_ours = torch.autograd.grad(out_ours, [*inputs, *ours.parameters()], weights)
    grads_ref = torch.autograd.grad(out_ref, [*inputs, *reference.parameters()], weights)
    for a, b in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_copies_both_ways_and_init_matches_torch(name: str, bias: bool) -> None:
    ours_factory, torch_factory = CELLS[name]
    torch.manual_seed(3)
    reference = torch_factory(I, H, bias)
    torch.manual_seed(3)
    ours = ours_factory(I, H, bias)
    # Same parameters, in the same order, drawn from the same distribution as torch.nn.
    assert list(ours.state_dict()) == list(reference.state_dict())
    for (key, a), b in zip(ours.state_dict().items(), reference.state_dict().values(), strict=True):
        assert a.shape == b.shape, key
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert a.abs().max() <= 1 / H**0.5
    other = torch_factory(I, H, bias)
    other.load_state_dict(ours_factory(I, H, bias).state_dict(), strict=True)
    ours.load_state_dict(torch_factory(I, H, bias).state_dict(), strict=True)


@pytest.mark.parametrize("cell", [RNNCell, GRUCell, LSTMCell])
def test_zero_default_state(cell: type) -> None:
    torch.manual_seed(0)
    module = cell(I, H).double()
    x = torch.randn(B, I, dtype=torch.float64)
    zeros = torch.zeros(B, H, dtype=torch.float64)
    hx = (zeros, zeros) if cell is LSTMCell else zeros
    for a, b in zip(_as_tuple(module(x)), _as_tuple(module(x, hx)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["rnn-tanh", "lstm"])
def test_step_with_hidden_bias_folded_into_projection(name: str) -> None:
    """step(gi + b_hh, b_hh=None) == step(gi, b_hh): the layer relies on this folding."""
    torch.manual_seed(0)
    cell = CELLS[name][0](I, H).double()
    x = torch.randn(B, I, dtype=torch.float64)
    h = torch.randn(B, H, dtype=torch.float64)
    state = (h, torch.randn(B, H, dtype=torch.float64)) if name == "lstm" else h
    gi = F.linear(x, cell.weight_ih, cell.bias_ih)
    separate = cell.step(gi, state, cell.weight_hh, cell.bias_hh)
    folded = cell.step(gi + cell.bias_hh, state, cell.weight_hh, None)
    for a, b in zip(_as_tuple(separate), _as_tuple(folded), strict=True):
        torch.testing.assert_close(a, b)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def numpy_gru_reset_before(
    x: np.ndarray,
    h: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
) -> np.ndarray:
    """Cho et al. (2014): n = tanh(W_n x + b_in + U_n (r * h) + b_hn), written out in NumPy."""
    w_r, w_z, w_n = np.split(w_ih, 3)
    u_r, u_z, u_n = np.split(w_hh, 3)
    b_ir, b_iz, b_in = np.split(b_ih, 3)
    b_hr, b_hz, b_hn = np.split(b_hh, 3)
    r = _sigmoid(x @ w_r.T + b_ir + h @ u_r.T + b_hr)
    z = _sigmoid(x @ w_z.T + b_iz + h @ u_z.T + b_hz)
    n = np.tanh(x @ w_n.T + b_in + (r * h) @ u_n.T + b_hn)
    return (1 - z) * n + z * h


def test_gru_reset_before_matches_numpy_and_differs_from_after() -> None:
    torch.manual_seed(0)
    before = GRUCell(I, H, reset="before").double()
    after = GRUCell(I, H).double()
    after.load_state_dict(before.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    h = torch.randn(B, H, dtype=torch.float64)
    params = [p.detach().numpy() for p in before.parameters()]  # w_ih, w_hh, b_ih, b_hh
    expected = numpy_gru_reset_before(x.numpy(), h.numpy(), *params)
    np.testing.assert_allclose(before(x, h).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(before(x, h), after(x, h))


def test_gru_reset_before_without_bias_matches_numpy() -> None:
    torch.manual_seed(1)
    cell = GRUCell(I, H, bias=False, reset="before").double()
    x = torch.randn(B, I, dtype=torch.float64)
    h = torch.randn(B, H, dtype=torch.float64)
    w_ih, w_hh = (p.detach().numpy() for p in cell.parameters())
    zero = np.zeros(3 * H)
    expected = numpy_gru_reset_before(x.numpy(), h.numpy(), w_ih, w_hh, zero, zero)
    np.testing.assert_allclose(cell(x, h).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_forget_bias_lands_in_forget_slice_of_bias_ih_only() -> None:
    torch.manual_seed(7)
    plain = LSTMCell(I, H)
    torch.manual_seed(7)
    biased = LSTMCell(I, H, forget_bias=1.0)
    delta = (biased.bias_ih - plain.bias_ih).detach()
    expected = torch.zeros(4 * H)
    expected[H : 2 * H] = 1.0
    torch.testing.assert_close(delta, expected)
    for name in ("weight_ih", "weight_hh", "bias_hh"):
        torch.testing.assert_close(getattr(biased, name), getattr(plain, name), rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RNNCell(3, 2),
        lambda: RNNCell(3, 2, nonlinearity="relu"),
        lambda: GRUCell(3, 2),
        lambda: GRUCell(3, 2, reset="before"),
        lambda: LSTMCell(3, 2, forget_bias=1.0),
        lambda: GRUCell(3, 2, bias=False, reset="before"),
    ],
    ids=["rnn-tanh", "rnn-relu", "gru", "gru-before", "lstm-fb1", "gru-before-nobias"],
)
def test_gradcheck_float64(make: Callable[[], nn.Module]) -> None:
    torch.manual_seed(0)
    cell = make().double()
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def run(x: Tensor, h: Tensor, c: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        hx = (h, c) if isinstance(cell, LSTMCell) else h
        out = torch.func.functional_call(cell, dict(zip(names, params, strict=True)), (x, hx))
        return _as_tuple(out)

    assert torch.autograd.gradcheck(run, (x, h, c, *params))


@pytest.mark.parametrize("cell", [RNNCell, GRUCell, LSTMCell])
def test_errors_are_clear(cell: type) -> None:
    module = cell(I, H)
    with pytest.raises(ValueError, match="expected input of shape"):
        module(torch.randn(2, 3, I))
    with pytest.raises(RuntimeError, match="input_size is 4"):  # torch.nn: RuntimeError
        module(torch.randn(B, I + 1))
    bad = torch.zeros(B + 1, H)
    with pytest.raises(RuntimeError, match="expected a state of shape"):  # as torch.nn
        module(torch.randn(B, I), (bad, bad) if cell is LSTMCell else bad)
    with pytest.raises(ConfigError, match="hidden_size must be a non-negative integer"):
        cell(I, -1)  # 0 is accepted, as torch.nn's cells accept it


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="nonlinearity"):
        RNNCell(I, H, nonlinearity="sigmoid")
    with pytest.raises(ConfigError, match="reset"):
        GRUCell(I, H, reset="sideways")
