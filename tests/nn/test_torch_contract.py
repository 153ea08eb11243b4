"""rnnlab.RNN/GRU/LSTM keep torch.nn's contract: same exceptions, warnings, saving, scripting.

The behaviour table below was written by probing torch 2.13 (each misuse: what torch.nn
raises). Every row runs against ``torch.nn`` and ``rnnlab`` side by side and asserts that
rnnlab raises an exception of the type torch raised, which is also an ``RnnlabError`` (so the
CLI prints it as one line), or that both accept it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.errors import LayerUnsupportedError, RnnlabError

I, H, T, B, L = 4, 5, 3, 2, 2

FAMILIES = ("RNN", "GRU", "LSTM")


def _state(family: str, *shape: int, dtype: torch.dtype = torch.float32) -> object:
    s = torch.zeros(*shape, dtype=dtype)
    return (s, s.clone()) if family == "LSTM" else s


# name -> (family) -> action(namespace): the misuse, written once for torch.nn and rnnlab
CONSTRUCTION: dict[str, Callable[[type], object]] = {
    "input_size=0": lambda c: c(0, H),
    "input_size=-1": lambda c: c(-1, H),
    "input_size=2.0": lambda c: c(2.0, H),
    "hidden_size=0": lambda c: c(I, 0),
    "hidden_size=-1": lambda c: c(I, -1),
    "hidden_size=2.0": lambda c: c(I, 2.0),
    "hidden_size='5'": lambda c: c(I, "5"),
    "num_layers=0": lambda c: c(I, H, num_layers=0),
    "num_layers=-1": lambda c: c(I, H, num_layers=-1),
    "num_layers=1.0": lambda c: c(I, H, num_layers=1.0),
    "dropout=1.5": lambda c: c(I, H, num_layers=2, dropout=1.5),
    "dropout=-0.1": lambda c: c(I, H, num_layers=2, dropout=-0.1),
    "dropout='0.1'": lambda c: c(I, H, num_layers=2, dropout="0.1"),
    "dropout=True": lambda c: c(I, H, num_layers=2, dropout=True),
    "dropout=1 (int)": lambda c: c(I, H, num_layers=2, dropout=1),
    "dropout=numpy float32": lambda c: c(I, H, num_layers=2, dropout=np.float32(0.25)),
    "hidden_size=numpy int64": lambda c: c(I, np.int64(5)),
    "bias=1": lambda c: c(I, H, bias=1),
    "bias='True'": lambda c: c(I, H, bias="True"),
    "bias=None": lambda c: c(I, H, bias=None),
    "batch_first='False'": lambda c: c(I, H, batch_first="False"),
    "batch_first=0": lambda c: c(I, H, batch_first=0),
}


def _call(family: str, input_: object, hx: object = None, **options: object) -> Callable:
    def act(c: type) -> object:
        torch.manual_seed(0)
        return c(I, H, num_layers=L, **options)(input_, hx)

    return act


CALLS: dict[str, Callable[[str], Callable[[type], object]]] = {
    "input 4-D": lambda f: _call(f, torch.randn(T, B, 1, I)),
    "input 1-D": lambda f: _call(f, torch.randn(I)),
    "input float64": lambda f: _call(f, torch.randn(T, B, I, dtype=torch.float64)),
    "input int64": lambda f: _call(f, torch.ones(T, B, I, dtype=torch.long)),
    "input wrong features": lambda f: _call(f, torch.randn(T, B, I + 2)),
    "input T=0": lambda f: _call(f, torch.randn(0, B, I)),
    "unbatched input T=0": lambda f: _call(f, torch.randn(0, I)),
    "batch_first input T=0": lambda f: _call(f, torch.randn(B, 0, I), batch_first=True),
    "batch_first wrong layout": lambda f: _call(f, torch.randn(B, I, T), batch_first=True),
    "input B=0": lambda f: _call(f, torch.randn(T, 0, I)),
    "input B=0 with hx": lambda f: _call(f, torch.randn(T, 0, I), _state(f, L, 0, H)),
    "hx float64": lambda f: _call(f, torch.randn(T, B, I), _state(f, L, B, H, dtype=torch.float64)),
    "hx wrong num_layers": lambda f: _call(f, torch.randn(T, B, I), _state(f, 1, B, H)),
    "hx batch mismatch": lambda f: _call(f, torch.randn(T, B, I), _state(f, L, B + 1, H)),
    "hx wrong hidden": lambda f: _call(f, torch.randn(T, B, I), _state(f, L, B, H + 1)),
    "hx 2-D for batched input": lambda f: _call(f, torch.randn(T, B, I), _state(f, L, H)),
    "hx 3-D for unbatched input": lambda f: _call(f, torch.randn(T, I), _state(f, L, 1, H)),
    "unbatched hx wrong num_layers": lambda f: _call(f, torch.randn(T, I), _state(f, 1, H)),
}

LSTM_CALLS: dict[str, Callable[[type], object]] = {
    "hx one tensor": _call("LSTM", torch.randn(T, B, I), torch.zeros(L, B, H)),
    "hx three tensors": _call("LSTM", torch.randn(T, B, I), (torch.zeros(L, B, H),) * 3),
    "c_0 wrong shape": _call(
        "LSTM", torch.randn(T, B, I), (torch.zeros(L, B, H), torch.zeros(L, B, H + 1))
    ),
    "hx a list pair": _call("LSTM", torch.randn(T, B, I), [torch.zeros(L, B, H)] * 2),
}


def _outcome(action: Callable[[], object]) -> type[BaseException] | None:
    """The exception type ``action`` raises, or None when it succeeds."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action()
    except Exception as e:  # noqa: BLE001 - the type is the point
        return type(e)
    return None


def _assert_same_contract(torch_action: Callable, ours_action: Callable) -> None:
    expected = _outcome(torch_action)
    if expected is None:
        ours_action()  # accepted by torch: must be accepted by rnnlab
        return
    with pytest.raises(expected) as caught:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_action()
    assert isinstance(caught.value, RnnlabError), f"{type(caught.value)} is not an RnnlabError"
    message = str(caught.value)
    assert message and "\n" not in message


@pytest.mark.parametrize("case", sorted(CONSTRUCTION))
@pytest.mark.parametrize("family", FAMILIES)
def test_construction_misuse_raises_what_torch_raises(family: str, case: str) -> None:
    action = CONSTRUCTION[case]
    _assert_same_contract(
        lambda: action(getattr(nn, family)), lambda: action(getattr(rnnlab, family))
    )


@pytest.mark.parametrize("case", sorted(CALLS))
@pytest.mark.parametrize("family", FAMILIES)
def test_call_misuse_raises_what_torch_raises(family: str, case: str) -> None:
    action = CALLS[case](family)
    _assert_same_contract(
        lambda: action(getattr(nn, family)), lambda: action(getattr(rnnlab, family))
    )


@pytest.mark.parametrize("case", sorted(LSTM_CALLS))
def test_lstm_state_misuse_raises_what_torch_raises(case: str) -> None:
    action = LSTM_CALLS[case]
    _assert_same_contract(lambda: action(nn.LSTM), lambda: action(rnnlab.LSTM))


def test_unknown_nonlinearity_is_a_value_error_as_in_torch() -> None:
    _assert_same_contract(
        lambda: nn.RNN(I, H, nonlinearity="sigmoid"),
        lambda: rnnlab.RNN(I, H, nonlinearity="sigmoid"),
    )
    with pytest.raises(ValueError, match="unknown nonlinearity 'sigmoid'"):
        rnnlab.RNN(I, H, nonlinearity="sigmoid")


@pytest.mark.parametrize("family", FAMILIES)
def test_documented_differences_raise_type_errors(family: str) -> None:
    """Where torch fails by accident (AttributeError from ``.dim()`` of a list) rnnlab raises
    a TypeError that says what it wanted."""
    layer = getattr(rnnlab, family)(I, H)
    with pytest.raises(TypeError, match="input must be a tensor"):
        layer([[0.0] * I] * T)
    with pytest.raises(TypeError, match="hx must be a"):
        layer(torch.randn(T, B, I), 3)


def test_dtype_mismatch_names_both_dtypes() -> None:
    with pytest.raises(ValueError, match=r"torch\.float64 does not match .* torch\.float32"):
        rnnlab.LSTM(I, H)(torch.randn(T, B, I, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"state's dtype torch\.float64"):
        rnnlab.GRU(I, H)(torch.randn(T, B, I), torch.zeros(1, B, H, dtype=torch.float64))


MISUSES_IN_A_RUN: dict[str, Callable[[], object]] = {
    "bias=1": lambda: rnnlab.LSTM(I, H, bias=1),
    "hidden_size=0": lambda: rnnlab.GRU(I, 0),
    "state batch mismatch": lambda: rnnlab.RNN(I, H)(torch.randn(T, B, I), torch.zeros(1, 9, H)),
    "float64 input": lambda: rnnlab.LSTM(I, H)(torch.randn(T, B, I, dtype=torch.float64)),
    "script explicit": lambda: torch.jit.script(rnnlab.LSTM(I, H, impl="explicit")),
}


@pytest.mark.parametrize("case", sorted(MISUSES_IN_A_RUN))
def test_layer_errors_print_one_line_in_the_cli(
    case: str, run_cli: Callable, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """The CLI catches RnnlabError: a layer misuse inside a run prints one line, no traceback."""
    import rnnlab.training.trainer

    def trainer(*args: object, **kwargs: object) -> None:
        MISUSES_IN_A_RUN[case]()

    monkeypatch.setattr(rnnlab.training.trainer, "Trainer", trainer)
    code, _, err = run_cli("train", "--out", f"{tmp_path}/run", "--no-progress")
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rnnlab: error:")]
    assert len(lines) == 1, err


# ---------------------------------------------------------------------------- zero sizes


def _copied_pair(family: str, **options: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    reference = getattr(nn, family)(I, H, **options)
    ours = getattr(rnnlab, family)(I, H, **options)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_zero_matches_torch(family: str, batch_first: bool) -> None:
    reference, ours = _copied_pair(family, num_layers=L, batch_first=batch_first)
    x = torch.randn(0, T, I) if batch_first else torch.randn(T, 0, I)
    expected_out, expected_state = reference(x)
    out, state = ours(x)
    assert out.shape == expected_out.shape
    got = state if isinstance(state, tuple) else (state,)
    want = expected_state if isinstance(expected_state, tuple) else (expected_state,)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape == (L, 0, H)


@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_zero_backward(family: str, impl: str) -> None:
    layer = getattr(rnnlab, family)(I, H, impl=impl)
    x = torch.randn(T, 0, I, requires_grad=True)
    out, _ = layer(x)
    out.sum().backward()
    assert layer.weight_hh_l0.grad is not None
    assert torch.all(layer.weight_hh_l0.grad == 0)


@pytest.mark.parametrize("family", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_take_zero_sizes_as_torch(family: str) -> None:
    torch.manual_seed(0)
    reference = getattr(nn, family)(I, 0)
    ours = getattr(rnnlab.nn.cells, family)(I, 0)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(B, I)
    expected, got = reference(x), ours(x)
    if isinstance(expected, tuple):
        assert [t.shape for t in got] == [t.shape for t in expected]
    else:
        assert got.shape == expected.shape == (B, 0)
    assert getattr(rnnlab.nn.cells, family)(0, H)(torch.randn(B, 0))[0].shape[-1] == H
    empty = ours(torch.randn(0, I))
    assert (empty[0] if isinstance(empty, tuple) else empty).shape == (0, 0)


# ---------------------------------------------------------------------------- warning


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_with_one_layer_warns_as_torch(family: str) -> None:
    with pytest.warns(UserWarning) as expected:
        getattr(nn, family)(I, H, dropout=0.5)
    with pytest.warns(expected[0].category, match="does nothing with num_layers=1") as got:
        getattr(rnnlab, family)(I, H, dropout=0.5)
    assert got[0].filename == __file__  # points at the caller's line, as torch's does
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(rnnlab, family)(I, H, num_layers=2, dropout=0.5)


# ---------------------------------------------------------------------------- all_weights


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_all_weights_as_torch(family: str, bias: bool) -> None:
    reference, ours = _copied_pair(family, num_layers=3, bias=bias)
    assert len(ours.all_weights) == len(reference.all_weights) == 3
    for got_layer, want_layer in zip(ours.all_weights, reference.all_weights, strict=True):
        assert len(got_layer) == len(want_layer)
        for got, want in zip(got_layer, want_layer, strict=True):
            assert isinstance(got, nn.Parameter)
            assert torch.equal(got, want)
    assert ours.all_weights[1][0] is ours.weight_ih_l1


# ---------------------------------------------------------------------------- torch.save


class _Holder(nn.Module):
    """A user's model holding an rnnlab layer between torch.nn modules."""

    def __init__(self, family: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, I)
        self.rnn = getattr(rnnlab, family)(I, H, num_layers=L)
        self.out = nn.Linear(H, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.embed(x))[0])


torch.serialization.add_safe_globals([_Holder])  # the user's own class, as the user would


def test_the_layers_are_safe_globals() -> None:
    registered = torch.serialization.get_safe_globals()
    for layer in (rnnlab.RNN, rnnlab.GRU, rnnlab.LSTM):
        assert layer in registered


def _round_trip(obj: object) -> object:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    # weights_only=True, torch's default; the user lists the torch.nn classes (as
    # pytorch/examples does) but not rnnlab's: importing rnnlab registered those
    with torch.serialization.safe_globals([nn.Embedding, nn.Linear]):
        return torch.load(buffer)


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_save_load_weights_only_bare(family: str) -> None:
    options = {"nonlinearity": "relu"} if family == "RNN" else {}
    layer = getattr(rnnlab, family)(I, H, num_layers=L, batch_first=True, **options)
    loaded = _round_trip(layer)
    assert type(loaded) is type(layer)
    x = torch.randn(B, T, I)
    assert torch.equal(loaded(x)[0], layer(x)[0])
    assert loaded.uses_fused() == layer.uses_fused()


def test_torch_save_load_explicit_and_variants() -> None:
    for layer in (rnnlab.GRU(I, H, reset="before"), rnnlab.LSTM(I, H, forget_bias=1.0)):
        loaded = _round_trip(layer)
        x = torch.randn(T, B, I)
        assert torch.equal(loaded(x)[0], layer(x)[0])
        assert repr(loaded) == repr(layer)


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_save_load_weights_only_inside_a_module(family: str) -> None:
    model = _Holder(family)
    loaded = _round_trip(model)
    x = torch.randint(0, 7, (T, B))
    assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------- jit.script


@pytest.mark.parametrize("family", FAMILIES)
def test_jit_script_fused_layer(family: str) -> None:
    """A bare scripted layer is what torch's is: its overloads forward__0 (tensor input) and
    forward__1 (PackedSequence), compiled from torch.nn's code over rnnlab's Parameters."""
    layer = getattr(rnnlab, family)(I, H, num_layers=L, batch_first=True)
    scripted = torch.jit.script(layer)
    torch_scripted = torch.jit.script(getattr(nn, family)(I, H, num_layers=L, batch_first=True))
    assert set(scripted._c._method_names()) == set(torch_scripted._c._method_names())
    x = torch.randn(B, T, I)
    out, _ = scripted.forward__0(x, None)
    torch.testing.assert_close(out, layer(x)[0])  # auto may run rnnlab's CPU window kernel
    with torch.no_grad():  # where it does not, both run torch's kernel: bitwise equal
        assert torch.equal(scripted.forward__0(x, None)[0], layer(x)[0])
    # the scripted module shares the Parameters: an update to one is seen by the other
    with torch.no_grad():
        layer.weight_hh_l0.add_(0.5)
        assert torch.equal(scripted.forward__0(x, None)[0], layer(x)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_jit_script_inside_a_module(family: str) -> None:
    model = _Holder(family).eval()
    scripted = torch.jit.script(model)
    x = torch.randint(0, 7, (T, B))
    assert torch.equal(scripted(x), model(x))


@pytest.mark.parametrize(
    "build",
    [lambda: rnnlab.LSTM(I, H, impl="explicit"), lambda: rnnlab.GRU(I, H, reset="before")],
)
def test_jit_script_explicit_loop_refuses_in_one_line(build: Callable) -> None:
    with pytest.raises(LayerUnsupportedError, match="torch.compile") as caught:
        torch.jit.script(build())
    assert "\n" not in str(caught.value)
