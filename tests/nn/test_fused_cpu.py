"""rnnlab.nn.fused_cpu: the whole-window CPU kernels against finite differences, torch.nn and
rnnlab's explicit loop, and where the layers dispatch to them."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab.nn
from rnnlab.nn import fused_cpu
from rnnlab.nn.recurrent import GRU, LSTM, RNN, Recurrent

I, H, B = 4, 5, 3

# variant -> (rnnlab class, torch.nn class or None, kwargs of the rnnlab class)
VARIANTS = {
    "gru-after": (GRU, nn.GRU, {}),
    "gru-before": (GRU, None, {"reset": "before"}),
    "rnn-tanh": (RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (RNN, nn.RNN, {"nonlinearity": "relu"}),
}
F32 = {"atol": 3e-5, "rtol": 1e-4}


@pytest.fixture(params=["numba", "mixed", "torch"])
def loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each implementation of the time loops (RNNLAB_CPU_LOOPS)."""
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, request.param)
    return request.param


def _layer(variant: str, impl: str = "cpu", dtype: torch.dtype = torch.float32, **kw) -> Recurrent:
    cls, _, extra = VARIANTS[variant]
    return cls(I, H, **extra, **kw, impl=impl).to(dtype)


def _reference(variant: str, ours: Recurrent) -> nn.Module:
    """torch.nn's layer with ours' weights, or (GRU reset before) rnnlab's explicit loop."""
    cls, torch_cls, extra = VARIANTS[variant]
    options = {
        "num_layers": ours.num_layers,
        "bias": ours.bias,
        "batch_first": ours.batch_first,
        "dropout": ours.dropout,
    }
    if torch_cls is None:
        reference = cls(I, H, **extra, **options, impl="explicit")
    else:
        torch_extra = {k: v for k, v in extra.items() if k == "nonlinearity"}
        reference = torch_cls(I, H, **torch_extra, **options)
    reference = reference.to(ours.weight_ih_l0.dtype)
    reference.load_state_dict(ours.state_dict())
    return reference.train(ours.training)


def _outputs_and_grads(
    module: nn.Module, x: Tensor, h0: Tensor | None, seed: int = 0
) -> list[Tensor]:
    """Output, h_n and the gradients of a random weighting of both w.r.t. x, h0, weights."""
    torch.manual_seed(seed)  # the same dropout masks for both modules
    output, h_n = module(x, h0)
    g = torch.Generator().manual_seed(1)
    loss = (output * torch.randn(output.shape, generator=g, dtype=output.dtype)).sum()
    loss = loss + (h_n * torch.randn(h_n.shape, generator=g, dtype=h_n.dtype)).sum()
    inputs = [x, *(() if h0 is None else (h0,)), *module.parameters()]
    return [output, h_n, *torch.autograd.grad(loss, inputs)]


def _assert_all_close(got: list[Tensor], expected: list[Tensor], **tol: float) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(variant: str, bias: bool, loops: str) -> None:
    torch.manual_seed(0)
    layer = _layer(variant, dtype=torch.float64, bias=bias, num_layers=2)
    x = torch.randn(4, 2, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, H, dtype=torch.float64, requires_grad=True)
    assert layer.uses_cpu_kernel(x)
    params = tuple(layer.parameters())

    def fn(x: Tensor, h0: Tensor, *weights: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.functional_call(
            layer, dict(zip(layer._flat_weights_names, weights, strict=True)), (x, h0)
        )

    assert torch.autograd.gradcheck(fn, (x, h0, *params))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(
    ("steps", "batch", "with_h0"), [(1, B, True), (200, B, False), (7, 1, True), (7, 1, False)]
)
def test_matches_reference_float32(
    variant: str, steps: int, batch: int, with_h0: bool, loops: str
) -> None:
    torch.manual_seed(0)
    ours = _layer(variant)
    reference = _reference(variant, ours)
    x = torch.randn(steps, batch, I, requires_grad=True)
    h0 = torch.randn(1, batch, H, requires_grad=True) if with_h0 else None
    assert ours.uses_cpu_kernel(x)
    _assert_all_close(_outputs_and_grads(ours, x, h0), _outputs_and_grads(reference, x, h0), **F32)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_layers_with_dropout_match_the_same_masks(variant: str, loops: str) -> None:
    torch.manual_seed(0)
    ours = _layer(variant, dtype=torch.float64, num_layers=3, dropout=0.4)
    reference = _reference(variant, ours)  # torch.nn draws the masks the explicit loop draws
    x = torch.randn(9, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, B, H, dtype=torch.float64, requires_grad=True)
    got = _outputs_and_grads(ours, x, h0, seed=5)
    _assert_all_close(got, _outputs_and_grads(reference, x, h0, seed=5), atol=1e-10, rtol=1e-8)
    other = _outputs_and_grads(ours, x, h0, seed=6)
    assert not torch.allclose(other[0], got[0])  # another seed, other masks: not a no-op


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_batch_first_and_unbatched(variant: str, loops: str) -> None:
    torch.manual_seed(0)
    ours = _layer(variant, dtype=torch.float64, num_layers=2, batch_first=True)
    reference = _reference(variant, ours)
    x = torch.randn(B, 6, I, dtype=torch.float64, requires_grad=True)
    assert ours.uses_cpu_kernel(x)
    _assert_all_close(_outputs_and_grads(ours, x, None), _outputs_and_grads(reference, x, None))
    single = torch.randn(6, I, dtype=torch.float64, requires_grad=True)  # (T, I): no batch
    h0 = torch.randn(2, H, dtype=torch.float64, requires_grad=True)
    got = _outputs_and_grads(ours, single, h0)
    assert got[0].shape == (6, H) and got[1].shape == (2, H)
    _assert_all_close(got, _outputs_and_grads(reference, single, h0))


@pytest.mark.parametrize("variant", ["gru-after", "rnn-tanh"])
def test_state_dict_interchange_with_torch(variant: str) -> None:
    torch.manual_seed(0)
    ours = _layer(variant, num_layers=2)
    theirs = _reference(variant, ours)  # loaded from ours' state_dict
    again = _layer(variant, num_layers=2)
    again.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(5, B, I)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], theirs(x)[0], **F32)
    assert list(again.state_dict()) == list(theirs.state_dict())


def test_dispatch_where_the_kernel_runs() -> None:
    x = torch.randn(5, B, I)
    assert GRU(I, H, impl="cpu").uses_cpu_kernel(x)
    assert RNN(I, H).uses_cpu_kernel(x)  # auto: the RNN and both GRUs
    assert GRU(I, H, reset="before").uses_cpu_kernel(x)
    assert GRU(I, H).uses_cpu_kernel(x)
    assert not GRU(I, H, impl="explicit", reset="before").uses_cpu_kernel(x)
    assert not GRU(I, H, impl="fused").uses_cpu_kernel(x)
    assert not LSTM(I, H, impl="cpu").uses_cpu_kernel(x)  # torch's oneDNN kernel
    assert not GRU(I, H, impl="cpu", bidirectional=True).uses_cpu_kernel(x)
    assert not GRU(I, H, impl="cpu").to(torch.bfloat16).uses_cpu_kernel(x.bfloat16())
    with torch.no_grad():  # inference: torch's forward kernel, no backward to save
        assert not GRU(I, H, impl="cpu").uses_cpu_kernel(x)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_deferred_cases_still_compute_the_layer(variant: str) -> None:
    """Bidirectional and packed input leave the kernel for the layer's other paths."""
    torch.manual_seed(0)
    ours = _layer(variant, dtype=torch.float64, bidirectional=True)
    explicit = _layer(variant, "explicit", torch.float64, bidirectional=True)
    explicit.load_state_dict(ours.state_dict())
    x = torch.randn(6, B, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], explicit(x)[0])
    packed = pack_padded_sequence(x, [6, 4, 2])
    torch.testing.assert_close(ours(packed)[0].data, explicit(packed)[0].data)


def test_double_backward_is_refused_in_one_line() -> None:
    layer = _layer("gru-after", dtype=torch.float64)
    x = torch.randn(3, 2, I, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward through rnnlab's CPU window kernel"):
        torch.autograd.grad(layer(x)[0].sum(), x, create_graph=True)  # would be wrong silently


def test_training_moves_the_same_way_as_torch() -> None:
    """A few SGD steps through two windows (state carried, detached) stay with torch.nn."""
    torch.manual_seed(0)
    ours = _layer("gru-after", num_layers=2)
    theirs = _reference("gru-after", ours)
    data = torch.randn(2, 8, B, I)
    for model in (ours, theirs):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        state = None
        for window in data:
            output, state = model(window, state)
            state = state.detach()
            optimizer.zero_grad()
            output.pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, **F32)


def test_supports_refuses_autocast() -> None:
    layer = _layer("rnn-tanh")
    x = torch.randn(3, 2, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_cpu.supports(layer, x)


def test_both_loops_compute_the_same_window() -> None:
    """The numba loops and the torch-op loops: the same outputs and gradients."""
    torch.manual_seed(0)
    results = {}
    for name in fused_cpu.LOOP_KINDS:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(fused_cpu.LOOPS_ENV, name)
            for variant in sorted(VARIANTS):
                torch.manual_seed(1)
                layer = _layer(variant, dtype=torch.float64, num_layers=2)
                x = torch.randn(12, B, I, dtype=torch.float64, requires_grad=True)
                results[name, variant] = _outputs_and_grads(layer, x, None)
    for variant in VARIANTS:
        _assert_all_close(results["numba", variant], results["torch", variant])
        _assert_all_close(results["mixed", variant], results["torch", variant])


def test_without_numba_a_one_line_warning_and_the_torch_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(fused_cpu.LOOPS_ENV, raising=False)
    monkeypatch.setattr(fused_cpu, "_NUMBA", [])
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    monkeypatch.delitem(sys.modules, "rnnlab.nn.fused_cpu_numba", raising=False)
    monkeypatch.delattr(rnnlab.nn, "fused_cpu_numba", raising=False)
    torch.manual_seed(0)
    ours = _layer("gru-after")
    reference = _reference("gru-after", ours)
    x = torch.randn(5, B, I, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="numba is unavailable") as caught:
        got = _outputs_and_grads(ours, x, None)
        _outputs_and_grads(ours, x, None)  # once per process: no second warning
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert fused_cpu.compiled_loops() is None
    _assert_all_close(got, _outputs_and_grads(reference, x, None), **F32)


def test_auto_loops_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "auto")
    assert fused_cpu.compiled_loops(fused_cpu.NUMBA_MAX_UNITS) is not None  # small: numba
    assert fused_cpu.compiled_loops(fused_cpu.NUMBA_MAX_UNITS + 1) is None  # large: torch ops
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "numba")
    assert fused_cpu.compiled_loops(10**6) is not None
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "torch")
    assert fused_cpu.compiled_loops(1) is None


def test_loop_kind_by_size_and_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: numba loops for small steps; above, mixed loops for the reset-after GRU (by the
    size of its recurrent product) and torch-op loops for the other cells (by units); the
    variable overrides."""
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "auto")
    small, large = fused_cpu.NUMBA_MAX_UNITS, fused_cpu.NUMBA_MAX_UNITS + 1
    macs = fused_cpu.NUMBA_MAX_GRU_MACS
    assert fused_cpu.loop_kind(small, mixed=False) == "numba"
    assert fused_cpu.loop_kind(large, mixed=False) == "torch"
    assert fused_cpu.loop_kind(large, mixed=True, macs=macs) == "numba"
    assert fused_cpu.loop_kind(small, mixed=True, macs=macs + 1) == "mixed"
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "mixed")
    assert fused_cpu.loop_kind(1, mixed=True) == "mixed"
    assert fused_cpu.loop_kind(1, mixed=False) == "torch"
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "numba")
    assert fused_cpu.loop_kind(10**6, mixed=True) == "numba"


def _float32_and_float64(variant: str, seed: int) -> tuple[list[Tensor], list[Tensor]]:
    """Output and gradients (input, then parameters) of one layer in float32 and in float64,
    same weights and loss, with input weights scaled by 40 so that pre-activations reach about
    ±100: exp clamps, tanh and the gates saturate."""
    torch.manual_seed(seed)
    layer64 = _layer(variant, dtype=torch.float64)
    with torch.no_grad():
        layer64.weight_ih_l0.mul_(40)
    layer32 = _layer(variant)
    layer32.load_state_dict(layer64.state_dict())
    x = torch.randn(9, B, I, dtype=torch.float64)
    weights = torch.randn(9, B, H, dtype=torch.float64)  # of the loss, the same for both

    def run(layer: Recurrent, dtype: torch.dtype) -> list[Tensor]:
        xd = x.to(dtype).requires_grad_()
        output, _ = layer(xd)
        loss = (output * weights.to(dtype)).sum()
        return [output, *torch.autograd.grad(loss, [xd, *layer.parameters()])]

    return run(layer32, torch.float32), run(layer64, torch.float64)


@pytest.mark.parametrize("loops", ["numba", "mixed"])
def test_float32_gru_after_matches_float64(monkeypatch: pytest.MonkeyPatch, loops: str) -> None:
    """The float32 reset-after GRU (own vectorised exp and tanh) stays within float32 rounding
    of the float64 one (libm), saturated gates included."""
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, loops)
    got, want = _float32_and_float64("gru-after", seed=3)
    _assert_all_close([g.double() for g in got], want, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["rnn-tanh", "rnn-relu"])
def test_float32_rnn_matches_float64(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """The float32 RNN's compiled loops (tanh by their own vectorised exp) stay within float32
    rounding of the float64 ones (libm's tanh), saturated units included."""
    monkeypatch.setenv(fused_cpu.LOOPS_ENV, "numba")
    got, want = _float32_and_float64(variant, seed=4)
    if variant == "rnn-tanh":
        assert want[0].abs().max() > 1 - 1e-9  # some units saturated
    _assert_all_close([g.double() for g in got], want, atol=2e-4, rtol=1e-4)
