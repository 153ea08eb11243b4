"""rnnlab.nn.recurrent against torch.nn.RNN/GRU/LSTM, NumPy and finite differences."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.nn.recurrent import CELL_NAMES, GRU, LSTM, RNN, Recurrent, make_recurrent

I, H, T, B = 4, 5, 6, 3

# kind -> (rnnlab class, torch.nn class, extra constructor kwargs for both)
KINDS = {
    "rnn-tanh": (RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (RNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (GRU, nn.GRU, {}),
    "lstm": (LSTM, nn.LSTM, {}),
}
TOL = {torch.float32: {"atol": 2e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-10}}


def _flat(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _pair(kind: str, impl: str = "auto", dtype: torch.dtype = torch.float64, **kwargs):
    """An rnnlab layer and a torch.nn layer with the same weights (copied torch -> rnnlab)."""
    ours_cls, torch_cls, extra = KINDS[kind]
    reference = torch_cls(I, H, **extra, **kwargs).to(dtype)
    ours = ours_cls(I, H, **extra, **kwargs, impl=impl).to(dtype)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


def _run_and_grad(
    module: nn.Module, x: Tensor, hx: Tensor | tuple[Tensor, ...] | None, weights: list[Tensor]
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Outputs and gradients of sum(weights * outputs) w.r.t. input, hx and parameters."""
    output, state = module(x, hx)
    outs = (output, *_flat(state))
    inputs = [x, *(() if hx is None else _flat(hx)), *module.parameters()]
    loss = sum((w * o).sum() for w, o in zip(weights, outs, strict=True))
    return outs, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("with_state", [False, True])
def test_layer_matches_torch(
    kind: str,
    impl: str,
    dtype: torch.dtype,
    batch_first: bool,
    num_layers: int,
    with_state: bool,
) -> None:
    torch.manual_seed(num_layers)
    ours, reference = _pair(kind, impl, dtype, num_layers=num_layers, batch_first=batch_first)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    hx = None
    if with_state:
        states = [torch.randn(num_layers, B, H, dtype=dtype, requires_grad=True) for _ in "hc"]
        hx = tuple(states) if kind == "lstm" else states[0]
    expected = reference(x, hx)
    weights = [torch.randn_like(o) for o in (expected[0], *_flat(expected[1]))]
    outs_ours, grads_ours = _run_and_grad(ours, x, hx, weights)
    outs_ref, grads_ref = _run_and_grad(reference, x, hx, weights)
    assert outs_ours[0].shape == (*shape[:2], H)
    for a, b in zip(outs_ours + grads_ours, outs_ref + grads_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_unbatched_input_matches_torch(
    kind: str, impl: str, batch_first: bool, with_state: bool
) -> None:
    torch.manual_seed(0)
    ours, reference = _pair(kind, impl, num_layers=2, batch_first=batch_first)
    x = torch.randn(T, I, dtype=torch.float64, requires_grad=True)
    hx = None
    if with_state:
        states = [torch.randn(2, H, dtype=torch.float64, requires_grad=True) for _ in "hc"]
        hx = tuple(states) if kind == "lstm" else states[0]
    expected = reference(x, hx)
    weights = [torch.randn_like(o) for o in (expected[0], *_flat(expected[1]))]
    outs_ours, grads_ours = _run_and_grad(ours, x, hx, weights)
    outs_ref, grads_ref = _run_and_grad(reference, x, hx, weights)
    assert outs_ours[0].shape == (T, H)
    assert all(s.shape == (2, H) for s in outs_ours[1:])
    for a, b in zip(outs_ours + grads_ours, outs_ref + grads_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_copies_both_ways_and_init_matches_torch(kind: str, bias: bool) -> None:
    ours_cls, torch_cls, extra = KINDS[kind]
    torch.manual_seed(5)
    reference = torch_cls(I, H, num_layers=2, bias=bias, **extra)
    torch.manual_seed(5)
    ours = ours_cls(I, H, num_layers=2, bias=bias, **extra)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for a, b in zip(ours.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same draw, same order, same bound
    torch_cls(I, H, num_layers=2, bias=bias, **extra).load_state_dict(ours.state_dict())
    ours.load_state_dict(torch_cls(I, H, num_layers=2, bias=bias, **extra).state_dict())


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bias", [True, False])
def test_fused_and_explicit_agree(kind: str, bias: bool) -> None:
    torch.manual_seed(0)
    fused, _ = _pair(kind, "fused", num_layers=2, bias=bias)
    explicit = KINDS[kind][0](I, H, num_layers=2, bias=bias, **KINDS[kind][2], impl="explicit")
    explicit = explicit.double()
    explicit.load_state_dict(fused.state_dict())
    assert fused.uses_fused() and not explicit.uses_fused()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(T, B, H, dtype=torch.float64)] + [
        torch.randn(2, B, H, dtype=torch.float64) for _ in range(2 if kind == "lstm" else 1)
    ]
    outs_a, grads_a = _run_and_grad(fused, x, None, weights)
    outs_b, grads_b = _run_and_grad(explicit, x, None, weights)
    for a, b in zip(outs_a + grads_a, outs_b + grads_b, strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    with torch.no_grad():  # the explicit path without autograd bookkeeping
        torch.testing.assert_close(explicit(x)[0], fused(x)[0], **TOL[torch.float64])


def test_impl_auto_picks_fused_unless_equations_differ() -> None:
    assert LSTM(I, H, forget_bias=1.0).uses_fused()
    assert GRU(I, H).uses_fused()
    assert RNN(I, H, nonlinearity="relu").uses_fused()
    assert not GRU(I, H, reset="before").uses_fused()
    assert not LSTM(I, H, impl="explicit").uses_fused()
    with pytest.raises(ConfigError, match="reset='before'"):
        GRU(I, H, reset="before", impl="fused")


def _numpy_gru_before_stack(x: np.ndarray, h0: np.ndarray, layers: list) -> tuple:
    """Multi-layer GRU with n = tanh(W_n x + b_in + U_n (r*h) + b_hn), in plain NumPy."""

    def sigmoid(a: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-a))

    finals = []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
        h = h0[k]
        outputs = []
        for x_t in x:
            gi = x_t @ w_ih.T + b_ih
            i_r, i_z, i_n = np.split(gi, 3, axis=1)
            u_r, u_z, u_n = np.split(w_hh, 3)
            b_hr, b_hz, b_hn = np.split(b_hh, 3)
            r = sigmoid(i_r + h @ u_r.T + b_hr)
            z = sigmoid(i_z + h @ u_z.T + b_hz)
            n = np.tanh(i_n + (r * h) @ u_n.T + b_hn)
            h = (1 - z) * n + z * h
            outputs.append(h)
        x = np.stack(outputs)
        finals.append(h)
    return x, np.stack(finals)


def test_gru_reset_before_layer_matches_numpy() -> None:
    torch.manual_seed(0)
    layer = GRU(I, H, num_layers=2, reset="before").double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(2, B, H, dtype=torch.float64)
    layers = [[w.detach().numpy() for w in layer.layer_weights(k)] for k in range(2)]
    expected_out, expected_h = _numpy_gru_before_stack(x.numpy(), h0.numpy(), layers)
    output, h_n = layer(x, h0)
    np.testing.assert_allclose(output.detach().numpy(), expected_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n.detach().numpy(), expected_h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RNN(3, 2, num_layers=2, impl="explicit"),
        lambda: GRU(3, 2, num_layers=2, impl="explicit"),
        lambda: GRU(3, 2, num_layers=2, reset="before"),
        lambda: GRU(3, 2, bias=False, impl="explicit"),
        lambda: LSTM(3, 2, num_layers=2, impl="explicit"),
        lambda: LSTM(3, 2, bias=False, impl="explicit"),
    ],
    ids=["rnn", "gru", "gru-before", "gru-nobias", "lstm", "lstm-nobias"],
)
def test_gradcheck_explicit_layer_float64(make: Callable[[], Recurrent]) -> None:
    """Finite differences check the explicit loop, batched weight gradient included."""
    torch.manual_seed(0)
    layer = make().double()
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def run(x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        output, state = torch.func.functional_call(layer, dict(zip(names, params, strict=True)), x)
        return (output, *_flat(state))

    assert torch.autograd.gradcheck(run, (x, *params))


def test_forget_bias_lands_in_forget_slice_of_every_layer() -> None:
    torch.manual_seed(11)
    plain = LSTM(I, H, num_layers=2)
    torch.manual_seed(11)
    biased = make_recurrent("lstm-fb1", I, H, num_layers=2)
    expected = torch.zeros(4 * H)
    expected[H : 2 * H] = 1.0
    for name, value in biased.state_dict().items():
        delta = value - plain.state_dict()[name]
        if name.startswith("bias_ih"):
            torch.testing.assert_close(delta, expected)
        else:
            torch.testing.assert_close(delta, torch.zeros_like(delta), rtol=0, atol=0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dropout_has_no_effect_in_eval_mode(kind: str) -> None:
    torch.manual_seed(0)
    ours_cls, _, extra = KINDS[kind]
    with_dropout = ours_cls(I, H, num_layers=3, dropout=0.5, **extra, impl="explicit").eval()
    without = ours_cls(I, H, num_layers=3, **extra)
    without.load_state_dict(with_dropout.state_dict())
    x = torch.randn(T, B, I)
    torch.testing.assert_close(with_dropout(x)[0], without(x)[0])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_dropout_in_training_matches_torch_with_same_seed(kind: str, impl: str) -> None:
    torch.manual_seed(0)
    ours, reference = _pair(kind, impl, torch.float32, num_layers=3, dropout=0.5)
    x = torch.randn(T, B, I)
    torch.manual_seed(42)
    expected = reference(x)
    torch.manual_seed(42)
    got = ours(x)
    torch.testing.assert_close(got[0], expected[0], **TOL[torch.float32])
    for a, b in zip(_flat(got[1]), _flat(expected[1]), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float32])
    torch.manual_seed(43)
    assert not torch.allclose(ours(x)[0], got[0])  # a different mask really changes the output


def test_dropout_with_one_layer_warns() -> None:
    with pytest.warns(UserWarning, match="does nothing with num_layers=1"):  # as torch.nn
        LSTM(I, H, dropout=0.3)


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_zero_state_structure_and_default(cls: type, impl: str) -> None:
    torch.manual_seed(0)
    layer = cls(I, H, num_layers=2, impl=impl).double()
    state = layer.zero_state(B)
    for s in _flat(state):
        assert s.shape == (2, B, H) and s.dtype == torch.float64 and not s.any()
    assert isinstance(state, tuple) == (cls is LSTM)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(layer(x, state)[0], layer(x)[0], rtol=0, atol=0)
    assert layer.zero_state(1, dtype=torch.float32)[0].dtype == torch.float32


def test_fused_path_reads_current_weights() -> None:
    """No stale weight cache: functional_call and in-place edits are seen by the kernel."""
    torch.manual_seed(0)
    layer = LSTM(I, H)
    x = torch.randn(T, B, I)
    before = layer(x)[0]
    params = {n: torch.zeros_like(p) for n, p in layer.named_parameters()}
    zeroed = torch.func.functional_call(layer, params, (x,))[0]
    torch.testing.assert_close(zeroed, torch.zeros_like(zeroed))
    torch.testing.assert_close(layer(x)[0], before)
    with torch.no_grad():
        layer.weight_ih_l0.mul_(2.0)
    assert not torch.allclose(layer(x)[0], before)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("trainable", ["only_weight_hh", "all_but_weight_hh"])
def test_partly_frozen_layer_explicit_path(kind: str, trainable: str) -> None:
    """The batched W_hh gradient also works when W_hh, or everything else, is frozen."""
    torch.manual_seed(0)
    ours, reference = _pair(kind, "explicit", num_layers=2)
    for module in (ours, reference):
        for name, p in module.named_parameters():
            p.requires_grad_(name.startswith("weight_hh") == (trainable == "only_weight_hh"))
    x = torch.randn(T, B, I, dtype=torch.float64)
    grads = []
    for module in (ours, reference):
        trained = [p for p in module.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(module(x)[0].sum(), trained))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_double_backward_through_explicit_layer_raises() -> None:
    layer = GRU(I, H, impl="explicit").double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(layer(x)[0].sum(), layer.weight_hh_l0, create_graph=True)


def test_make_recurrent_builds_every_name() -> None:
    expected = {
        "rnn": (RNN, {"nonlinearity": "tanh"}),
        "rnn-relu": (RNN, {"nonlinearity": "relu"}),
        "gru": (GRU, {"reset": "after"}),
        "gru-reset-before": (GRU, {"reset": "before"}),
        "lstm": (LSTM, {"forget_bias": 0.0}),
        "lstm-fb1": (LSTM, {"forget_bias": 1.0}),
    }
    assert set(CELL_NAMES) == set(expected)
    for name in CELL_NAMES:
        layer = make_recurrent(name, I, H, num_layers=2, dropout=0.1, batch_first=True)
        cls, attrs = expected[name]
        assert type(layer) is cls and isinstance(layer, Recurrent)
        assert (layer.num_layers, layer.dropout, layer.batch_first) == (2, 0.1, True)
        for attr, value in attrs.items():
            assert getattr(layer, attr) == value
        assert layer(torch.randn(B, T, I))[0].shape == (B, T, H)
    assert make_recurrent("lstm", I, H, impl="explicit").impl == "explicit"


def test_make_recurrent_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown cell 'transformer'.*gru-reset-before"):
        make_recurrent("transformer", I, H)


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_input_errors_are_clear(cls: type) -> None:
    layer = cls(I, H, num_layers=2)
    with pytest.raises(ValueError, match=r"expected a 3-D input \(time, batch, features\)"):
        layer(torch.randn(T, B, 1, I))
    with pytest.raises(ValueError, match="expected a 3-D input"):
        layer(torch.randn(I))
    with pytest.raises(RuntimeError, match="input_size is 4"):  # torch.nn: RuntimeError
        layer(torch.randn(T, B, I + 2))
    with pytest.raises(RuntimeError, match="empty"):
        layer(torch.randn(0, B, I))
    bad = torch.zeros(1, B, H)
    with pytest.raises(RuntimeError, match=r"state must have shape \(2, 3, 5\)"):
        layer(torch.randn(T, B, I), (bad, bad) if cls is LSTM else bad)
    bad = torch.zeros(2, 1, H)
    with pytest.raises(RuntimeError, match=r"unbatched input the state must have shape \(2, 5\)"):
        layer(torch.randn(T, I), (bad, bad) if cls is LSTM else bad)
    with pytest.raises(RuntimeError, match="batch_first=True"):
        cls(I, H, batch_first=True)(torch.randn(B, I, T))


def test_lstm_state_must_be_a_pair() -> None:
    with pytest.raises(RuntimeError, match=r"tuple \(h_0, c_0\)"):  # as torch.nn
        LSTM(I, H)(torch.randn(T, B, I), torch.zeros(1, B, H))


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_unsupported_and_bad_options(cls: type) -> None:
    with pytest.raises(ConfigError, match="num_layers must be a positive integer"):
        cls(I, H, num_layers=0)
    with pytest.raises(ConfigError, match="dropout must be in"):
        cls(I, H, dropout=1.5)
    with pytest.raises(ConfigError, match="unknown impl"):
        cls(I, H, impl="cuda")
    if cls is LSTM:
        with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
            LSTM(I, H, proj_size=H)
        with pytest.raises(ValueError, match="proj_size should be a positive integer or zero"):
            LSTM(I, H, proj_size=-1)
    else:
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
            cls(I, H, proj_size=2)
        assert cls(I, H, proj_size=0).proj_size == 0


def test_dtype_conversion_after_construction() -> None:
    torch.manual_seed(0)
    ours, reference = _pair("lstm", "fused", torch.float32)
    ours, reference = ours.double(), reference.double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], reference(x)[0], rtol=0, atol=0)
