"""PackedSequence input to rnnlab.RNN/GRU/LSTM, fused and explicit, against torch.nn."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnlab.nn.recurrent import GRU, LSTM, RNN, Recurrent
from rnnlab.nn.scan import join_window, scan_direction, split_window

I, H, T = 3, 4, 5
LENGTHS = [3, 5, 1, 4, 1]  # unsorted, with ties and length 1
B = len(LENGTHS)
TOL = {"atol": 1e-12, "rtol": 1e-10}

# kind -> (rnnlab class, torch.nn class, constructor kwargs for both)
KINDS = {
    "rnn-tanh": (RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (RNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (GRU, nn.GRU, {}),
    "lstm": (LSTM, nn.LSTM, {}),
    "lstm-proj": (LSTM, nn.LSTM, {"proj_size": 2}),
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


def _hx(layer: nn.Module, batch: int) -> Tensor | tuple[Tensor, ...]:
    """A random initial state of the layer's structure for ``batch`` sequences."""
    directions = 2 if layer.bidirectional else 1
    layers = layer.num_layers * directions
    h = torch.randn(layers, batch, layer.proj_size or layer.hidden_size, dtype=torch.float64)
    if isinstance(layer, LSTM | nn.LSTM):
        return h, torch.randn(layers, batch, layer.hidden_size, dtype=torch.float64)
    return h


def _packed_run(
    module: nn.Module, packed: PackedSequence, hx: Tensor | tuple[Tensor, ...] | None
) -> tuple[PackedSequence, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Output, states, and the gradients of a fixed random function of them w.r.t. the packed
    data, hx and every parameter."""
    output, state = module(packed, hx)
    outs = (output.data, *_flat(state))
    gen = torch.Generator().manual_seed(7)
    loss = sum((torch.randn(o.shape, generator=gen, dtype=o.dtype) * o).sum() for o in outs)
    inputs = [packed.data, *(() if hx is None else _flat(hx)), *module.parameters()]
    return output, _flat(state), torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_matches_torch(
    kind: str, impl: str, enforce_sorted: bool, with_state: bool, bidirectional: bool
) -> None:
    torch.manual_seed(0)
    ours, reference = _pair(kind, impl, num_layers=2, bidirectional=bidirectional)
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    x = torch.randn(T, B, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    packed.data.requires_grad_()
    hx = _hx(reference, B) if with_state else None
    if hx is not None:
        hx = tuple(s.requires_grad_() for s in _flat(hx))
        hx = hx if kind.startswith("lstm") else hx[0]
    got_out, got_state, got_grads = _packed_run(ours, packed, hx)
    want_out, want_state, want_grads = _packed_run(reference, packed, hx)
    assert isinstance(got_out, PackedSequence)
    assert torch.equal(got_out.batch_sizes, want_out.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        a, b = getattr(got_out, name), getattr(want_out, name)
        assert (a is None and b is None) or torch.equal(a, b)
    torch.testing.assert_close(got_out.data, want_out.data, **TOL)
    for a, b in zip(got_state + got_grads, want_state + want_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["gru", "lstm-proj"])
@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_packed_batch_first_matches_torch(kind: str, impl: str) -> None:
    """batch_first only changes how the caller packs; the packed layout is the same."""
    torch.manual_seed(1)
    ours, reference = _pair(kind, impl, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    got, _ = pad_packed_sequence(ours(packed)[0], batch_first=True)
    want, _ = pad_packed_sequence(reference(packed)[0], batch_first=True)
    assert got.shape == (B, T, 2 * (ours.proj_size or H))
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_states_are_each_sequence_at_its_own_last_step(
    impl: str, bidirectional: bool
) -> None:
    """Each packed sequence gives what that sequence alone, unpadded, gives."""
    torch.manual_seed(2)
    layer = LSTM(I, H, num_layers=2, bidirectional=bidirectional, impl=impl).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = _hx(layer, B)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    output, (h_n, c_n) = layer(packed, hx)
    padded, out_lengths = pad_packed_sequence(output)
    assert out_lengths.tolist() == LENGTHS
    for i, length in enumerate(LENGTHS):
        alone_out, (h_i, c_i) = layer(x[:length, i], (hx[0][:, i], hx[1][:, i]))
        torch.testing.assert_close(padded[:length, i], alone_out, **TOL)
        assert not padded[length:, i].any()  # padding stays zero
        torch.testing.assert_close(h_n[:, i], h_i, **TOL)
        torch.testing.assert_close(c_n[:, i], c_i, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_gru_reset_before_runs_each_sequence_alone(bidirectional: bool) -> None:
    """The variant torch has no kernel for: packed equals one sequence at a time."""
    torch.manual_seed(3)
    layer = GRU(I, H, num_layers=2, reset="before", bidirectional=bidirectional).double()
    assert not layer.uses_fused()
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = _hx(layer, B)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    output, h_n = layer(packed, hx)
    padded, _ = pad_packed_sequence(output)
    for i, length in enumerate(LENGTHS):
        alone_out, h_i = layer(x[:length, i], hx[:, i])
        torch.testing.assert_close(padded[:length, i], alone_out, **TOL)
        torch.testing.assert_close(h_n[:, i], h_i, **TOL)


@pytest.mark.parametrize("kind", ["gru", "lstm-proj"])
@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_packed_dropout_in_training_matches_torch_with_same_seed(kind: str, impl: str) -> None:
    """Dropout on the packed output of every layer but the last; on the CPU the explicit path
    draws the very mask torch's kernel draws."""
    torch.manual_seed(0)
    ours, reference = _pair(kind, impl, num_layers=3, dropout=0.5, bidirectional=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    torch.manual_seed(42)
    want_out, want_state = reference(packed)
    torch.manual_seed(42)
    got_out, got_state = ours(packed)
    torch.testing.assert_close(got_out.data, want_out.data, **TOL)
    for a, b in zip(_flat(got_state), _flat(want_state), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    torch.manual_seed(43)
    assert not torch.allclose(ours(packed)[0].data, got_out.data)
    torch.testing.assert_close(ours.eval()(packed)[0].data, reference.eval()(packed)[0].data)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_explicit_full_length_packed_equals_padded(kind: str) -> None:
    torch.manual_seed(4)
    layer = KINDS[kind][0](I, H, bidirectional=True, **KINDS[kind][2], impl="explicit").double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.full((B,), T))
    out_packed, state_packed = layer(packed)
    out_padded, state_padded = layer(x)
    torch.testing.assert_close(pad_packed_sequence(out_packed)[0], out_padded, rtol=0, atol=0)
    for a, b in zip(_flat(state_packed), _flat(state_padded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GRU(2, 2, bidirectional=True, impl="explicit"),
        lambda: GRU(2, 2, reset="before", bidirectional=True),
        lambda: LSTM(2, 3, num_layers=2, proj_size=2, bidirectional=True, impl="explicit"),
    ],
    ids=["gru", "gru-before", "lstm-proj"],
)
def test_gradcheck_explicit_packed(make: object) -> None:
    """Finite differences through the active-row loop, batched weight gradient included."""
    torch.manual_seed(5)
    layer = make().double()
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(3, 3, 2, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([2, 3, 1]), enforce_sorted=False)
    data = packed.data.detach().requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def run(data: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        seq = PackedSequence(
            data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )
        weights = dict(zip(names, params, strict=True))
        output, state = torch.func.functional_call(layer, weights, (seq,))
        return (output.data, *_flat(state))

    assert torch.autograd.gradcheck(run, (data, *params))


def test_scan_direction_steps_only_active_rows() -> None:
    """The loop alone: row i advances at the steps where it is active, in either direction."""
    batch_sizes = [3, 2, 2, 1]
    data = torch.arange(1.0, 9.0).unsqueeze(1)  # (N=8, 1): step t holds batch_sizes[t] rows

    def step(state: tuple[Tensor, ...], x: Tensor) -> tuple[Tensor, ...]:
        return (state[0] * 10 + x,)  # a state that spells out the inputs it saw, in order

    start = (torch.zeros(3, 1),)
    inputs = [(x,) for x in split_window(data, batch_sizes)]
    prev: list[Tensor] = []
    outputs, (final,) = scan_direction(step, inputs, start, prev_h=prev)
    # rows 0, 1, 2 saw (1, 4, 6, 8), (2, 5, 7), (3): steps of 3, 2, 2, 1 rows
    assert final.squeeze(1).tolist() == [1468.0, 257.0, 3.0]
    assert join_window(outputs, packed=True).squeeze(1).tolist() == [
        1.0, 2.0, 3.0, 14.0, 25.0, 146.0, 257.0, 1468.0
    ]  # fmt: skip
    assert join_window(prev, packed=True).squeeze(1).tolist() == [
        0.0, 0.0, 0.0, 1.0, 2.0, 14.0, 25.0, 146.0
    ]  # fmt: skip
    outputs, (final,) = scan_direction(step, inputs, start, reverse=True)
    assert final.squeeze(1).tolist() == [8641.0, 752.0, 3.0]  # each row from its own end
    assert join_window(outputs, packed=True).squeeze(1).tolist()[:3] == [8641.0, 752.0, 3.0]


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_packed_input_errors_are_clear(cls: type) -> None:
    layer = cls(I, H, num_layers=2)
    packed = pack_padded_sequence(
        torch.randn(T, B, I + 1), torch.tensor(LENGTHS), enforce_sorted=False
    )
    with pytest.raises(RuntimeError, match="input_size is 3"):
        layer(packed)
    packed = pack_padded_sequence(torch.randn(T, B, I), torch.tensor(LENGTHS), enforce_sorted=False)
    bad = torch.zeros(2, B - 1, H)
    with pytest.raises(RuntimeError, match=r"state must have shape \(2, 5, 4\)"):
        layer(packed, (bad, bad) if cls is LSTM else bad)
