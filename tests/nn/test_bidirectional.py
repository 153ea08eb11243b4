"""bidirectional=True and the LSTM's proj_size, fused and explicit, against torch.nn."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rnnlab.nn.recurrent import GRU, LSTM, RNN, Recurrent

I, H, T, B = 3, 4, 5, 2
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
TOL = {"atol": 1e-12, "rtol": 1e-10}

# kind -> (rnnlab class, torch.nn class, constructor kwargs for both)
KINDS = {
    "rnn-tanh": (RNN, nn.RNN, {"nonlinearity": "tanh", "bidirectional": True}),
    "rnn-relu": (RNN, nn.RNN, {"nonlinearity": "relu", "bidirectional": True}),
    "gru": (GRU, nn.GRU, {"bidirectional": True}),
    "lstm": (LSTM, nn.LSTM, {"bidirectional": True}),
    "lstmp": (LSTM, nn.LSTM, {"proj_size": 2}),
    "lstmp-bi": (LSTM, nn.LSTM, {"proj_size": 2, "bidirectional": True}),
}


def _flat(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _pair(kind: str, impl: str, **kwargs: object) -> tuple[Recurrent, nn.Module]:
    """An rnnlab layer and a torch.nn layer (float64) with the same weights."""
    ours_cls, torch_cls, extra = KINDS[kind]
    reference = torch_cls(I, H, **extra, **kwargs).double()
    ours = ours_cls(I, H, **extra, **kwargs, impl=impl).double()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


def _hx(layer: nn.Module, batch: int | None) -> Tensor | tuple[Tensor, ...]:
    """A random initial state (requiring grad) for ``batch`` sequences, None: unbatched."""
    layers = layer.num_layers * (2 if layer.bidirectional else 1)
    sizes = [layer.proj_size or layer.hidden_size]
    if isinstance(layer, LSTM | nn.LSTM):
        sizes.append(layer.hidden_size)
    states = tuple(
        torch.randn(
            layers, *(() if batch is None else (batch,)), size, dtype=torch.float64
        ).requires_grad_()
        for size in sizes
    )
    return states if len(states) == 2 else states[0]


def _run_and_grad(
    module: nn.Module, x: Tensor, hx: Tensor | tuple[Tensor, ...] | None
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Outputs and the gradients of a fixed random function of them w.r.t. x, hx, parameters."""
    output, state = module(x, hx)
    outs = (output, *_flat(state))
    gen = torch.Generator().manual_seed(11)
    loss = sum((torch.randn(o.shape, generator=gen, dtype=o.dtype) * o).sum() for o in outs)
    inputs = [x, *(() if hx is None else _flat(hx)), *module.parameters()]
    return outs, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_torch(
    kind: str, impl: str, num_layers: int, batch_first: bool, with_state: bool
) -> None:
    torch.manual_seed(0)
    ours, reference = _pair(kind, impl, num_layers=num_layers, batch_first=batch_first)
    x = torch.randn(*((B, T) if batch_first else (T, B)), I, dtype=torch.float64)
    x.requires_grad_()
    hx = _hx(reference, B) if with_state else None
    got, got_grads = _run_and_grad(ours, x, hx)
    want, want_grads = _run_and_grad(reference, x, hx)
    directions = 2 if reference.bidirectional else 1
    out_size = reference.proj_size or H
    assert got[0].shape == (*x.shape[:2], directions * out_size)
    assert got[1].shape == (num_layers * directions, B, out_size)
    for a, b in zip(got + got_grads, want + want_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["gru", "lstmp-bi"])
@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_unbatched_matches_torch(kind: str, impl: str) -> None:
    torch.manual_seed(1)
    ours, reference = _pair(kind, impl, num_layers=2)
    x = torch.randn(T, I, dtype=torch.float64, requires_grad=True)
    hx = _hx(reference, None)
    got, got_grads = _run_and_grad(ours, x, hx)
    want, want_grads = _run_and_grad(reference, x, hx)
    assert got[0].shape == (T, 2 * (reference.proj_size or H))
    for a, b in zip(got + got_grads, want + want_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bias", [True, False])
def test_parameters_init_and_state_dict_round_trip(kind: str, bias: bool) -> None:
    """Torch's names, shapes, order and initial draw; torch -> rnnlab -> torch is lossless."""
    ours_cls, torch_cls, extra = KINDS[kind]
    torch.manual_seed(5)
    reference = torch_cls(I, H, num_layers=2, bias=bias, **extra)
    torch.manual_seed(5)
    ours = ours_cls(I, H, num_layers=2, bias=bias, **extra)
    assert ours._flat_weights_names == reference._flat_weights_names
    assert ours._all_weights == reference._all_weights
    assert [n for n, _ in ours.named_parameters()] == reference._flat_weights_names
    for a, b in zip(ours.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same draw, same order, same shape
    torch.manual_seed(6)
    source = torch_cls(I, H, num_layers=2, bias=bias, **extra)
    ours.load_state_dict(source.state_dict())
    back = torch_cls(I, H, num_layers=2, bias=bias, **extra)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I)
    torch.testing.assert_close(back(x)[0], source(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(ours(x)[0], source(x)[0], rtol=0, atol=0)


def test_weight_names_per_layer_and_direction() -> None:
    layer = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)
    assert layer.weight_names(1, reverse=True) == [
        "weight_ih_l1_reverse",
        "weight_hh_l1_reverse",
        "bias_ih_l1_reverse",
        "bias_hh_l1_reverse",
        "weight_hr_l1_reverse",
    ]
    assert layer.projection_weight(0, reverse=True) is layer.weight_hr_l0_reverse
    assert layer.layer_weights(1, reverse=True)[0].shape == (4 * H, 2 * 2)  # (4H, D*P)
    with pytest.raises(IndexError):
        GRU(I, H).weight_names(0, reverse=True)
    assert GRU(I, H).projection_weight(0) is None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fused_dropout_in_training_matches_torch_with_same_seed(kind: str) -> None:
    torch.manual_seed(0)
    ours, reference = _pair(kind, "fused", num_layers=3, dropout=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(42)
    expected = reference(x)
    torch.manual_seed(42)
    got = ours(x)
    for a, b in zip((got[0], *_flat(got[1])), (expected[0], *_flat(expected[1])), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_explicit_dropout_between_layers(kind: str) -> None:
    """Same seed, same mask (on the CPU, the very mask torch's kernel draws); another seed,
    another output; eval mode drops nothing."""
    torch.manual_seed(0)
    ours, reference = _pair(kind, "explicit", num_layers=3, dropout=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(42)
    expected = reference(x)
    torch.manual_seed(42)
    first = ours(x)
    for a, b in zip((first[0], *_flat(first[1])), (expected[0], *_flat(expected[1])), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    torch.manual_seed(42)
    again = ours(x)
    assert first[0].shape == (T, B, (2 if ours.bidirectional else 1) * (ours.proj_size or H))
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    torch.manual_seed(43)
    assert not torch.allclose(ours(x)[0], first[0])
    no_dropout, _ = _pair(kind, "explicit", num_layers=3)
    no_dropout.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours.eval()(x)[0], no_dropout(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gru_reset_before_reverse_direction_is_the_forward_loop_on_reversed_time(
    num_layers: int,
) -> None:
    """rnnlab's own GRU variant, bidirectional: the backward half of layer 0 equals a
    unidirectional layer with the reverse weights run on the time-reversed input."""
    torch.manual_seed(2)
    bi = GRU(I, H, num_layers=num_layers, reset="before", bidirectional=True).double()
    uni = GRU(I, H, reset="before").double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(uni, f"{name}_l0").copy_(getattr(bi, f"{name}_l0_reverse"))
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(2 * num_layers, B, H, dtype=torch.float64)
    bi_single = GRU(I, H, reset="before", bidirectional=True).double()
    bi_single.load_state_dict({k: v for k, v in bi.state_dict().items() if "_l0" in k})
    output, h_n = bi_single(x, h0[:2])
    backward, h_back = uni(x.flip(0), h0[1:2])
    torch.testing.assert_close(output[..., H:], backward.flip(0), **TOL)
    torch.testing.assert_close(h_n[1:], h_back, **TOL)
    assert bi(x, h0)[0].shape == (T, B, 2 * H)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RNN(2, 2, num_layers=2, bidirectional=True, impl="explicit"),
        lambda: GRU(2, 2, num_layers=2, reset="before", bidirectional=True),
        lambda: LSTM(2, 3, proj_size=2, bidirectional=True, impl="explicit"),
        lambda: LSTM(2, 3, num_layers=2, proj_size=1, bias=False, impl="explicit"),
    ],
    ids=["rnn-bi", "gru-before-bi", "lstmp-bi", "lstmp-nobias"],
)
def test_gradcheck_explicit(make: object) -> None:
    torch.manual_seed(3)
    layer = make().double()
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def run(x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        weights = dict(zip(names, params, strict=True))
        output, state = torch.func.functional_call(layer, weights, x)
        return (output, *_flat(state))

    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_zero_state_and_state_shape_errors(impl: str) -> None:
    layer = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, impl=impl)
    h, c = layer.zero_state(B)
    assert h.shape == (4, B, 2) and c.shape == (4, B, H) and not h.any() and not c.any()
    x = torch.randn(T, B, I)
    torch.testing.assert_close(layer(x, (h, c))[0], layer(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"state must have shape \(4, 2, 2\)"):
        layer(x, (torch.zeros(2, B, 2), c))  # num_layers, not num_layers * 2
    with pytest.raises(RuntimeError, match=r"state must have shape \(4, 2, 2\).*proj_size"):
        layer(x, (torch.zeros(4, B, H), c))  # h has proj_size features, not hidden_size
    with pytest.raises(RuntimeError, match=r"state must have shape \(4, 2, 4\)"):
        layer(x, (h, torch.zeros(4, B, 2)))  # c keeps hidden_size
    assert GRU(I, H, bidirectional=True).zero_state(B).shape == (2, B, H)


def test_forget_bias_lands_in_both_directions() -> None:
    layer = LSTM(I, H, num_layers=2, bidirectional=True, forget_bias=1.0)
    for name in layer._flat_weights_names:
        if name.startswith("bias_ih"):
            forget = getattr(layer, name)[H : 2 * H]
            assert (forget > 1.0 - 0.5).all() and (forget < 1.0 + 0.5).all()
    assert "bidirectional=True" in repr(layer)
    assert "proj_size=2" in repr(LSTM(I, H, proj_size=2))


def test_impl_auto_stays_fused_with_directions_and_projection() -> None:
    assert LSTM(I, H, bidirectional=True, proj_size=2).uses_fused()
    assert GRU(I, H, bidirectional=True).uses_fused()
    assert not GRU(I, H, bidirectional=True, reset="before").uses_fused()
