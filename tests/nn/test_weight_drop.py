"""Weight drop: one DropConnect mask per forward on W_hh, rescaled, off in eval; the fused
kernel still runs and matches the explicit loop on the same dropped weights; gradients reach
the raw weights, which are never modified."""

import pytest
import torch
from torch import _VF

from rnnlab.errors import ConfigError
from rnnlab.nn.recurrent import GRU, LSTM, RNN
from rnnlab.nn.weight_drop import hidden_weight_names, weight_drop


def test_names_are_every_hidden_to_hidden_matrix():
    rnn = LSTM(3, 4, num_layers=2, bidirectional=True)
    assert hidden_weight_names(rnn) == [
        "weight_hh_l0",
        "weight_hh_l0_reverse",
        "weight_hh_l1",
        "weight_hh_l1_reverse",
    ]


def test_mask_is_rescaled_and_the_raw_weights_untouched():
    torch.manual_seed(0)
    rnn = LSTM(3, 20, num_layers=2)
    raw = {n: getattr(rnn, n).detach().clone() for n in hidden_weight_names(rnn)}
    with weight_drop(rnn, 0.5, training=True) as dropped:
        assert set(dropped) == set(raw)
        for name, w in dropped.items():
            assert w.shape == raw[name].shape
            kept = w != 0
            assert torch.allclose(w[kept], 2.0 * raw[name][kept])  # 1 / (1 - p)
            assert 0.35 < kept.float().mean().item() < 0.65
            assert rnn.weight(name) is w  # what both paths read
        assert not torch.equal(dropped["weight_hh_l0"] != 0, dropped["weight_hh_l1"] != 0)
    for name, w in raw.items():
        assert torch.equal(getattr(rnn, name), w)
        assert rnn.weight(name) is getattr(rnn, name)  # overrides gone after the block


def test_off_in_eval_and_at_zero_draws_nothing():
    rnn = GRU(3, 4)
    x = torch.randn(5, 2, 3)
    ref, _ = rnn(x)
    state = torch.get_rng_state()
    for p, training in ((0.5, False), (0.0, True)):
        with weight_drop(rnn, p, training) as dropped:
            out, _ = rnn(x)
        assert dropped == {} and torch.equal(out, ref)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ConfigError, match="weight drop"):
        with weight_drop(rnn, 1.0, True):
            pass


def test_one_mask_per_forward_the_same_at_every_step():
    """With W_hh all dropped to zero the recurrence vanishes; with one mask per forward the
    output at each step equals a fresh one-step run from that step's state with that mask."""
    torch.manual_seed(1)
    rnn = RNN(2, 6)
    x = torch.randn(7, 3, 2)
    torch.manual_seed(5)
    with weight_drop(rnn, 0.5, True) as dropped:
        out, _ = rnn(x)
    w_hh = dropped["weight_hh_l0"]
    h = torch.zeros(3, 6)
    for t in range(7):
        h = torch.tanh(x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ w_hh.T + rnn.bias_hh_l0)
        assert torch.allclose(out[t], h, atol=1e-6)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_fused_kernel_still_runs_and_matches_the_explicit_path(cls, monkeypatch):
    torch.manual_seed(2)
    rnn = cls(4, 5, num_layers=2, impl="fused")  # torch's kernel (auto trains GRU/RNN on rnnlab's)
    x = torch.randn(6, 3, 4)
    kernel = {LSTM: "lstm", GRU: "gru", RNN: "rnn_tanh"}[cls]
    calls = []
    real = getattr(_VF, kernel)

    def counting(*args, **kwargs):
        calls.append(args[2])  # (input, hx, the flat weight list, ...)
        return real(*args, **kwargs)

    monkeypatch.setattr(_VF, kernel, counting)
    assert rnn.uses_fused()
    torch.manual_seed(9)
    with weight_drop(rnn, 0.4, True) as dropped:
        fused, fused_state = rnn(x)
        (flat,) = calls
        assert flat[1] is dropped["weight_hh_l0"]  # the kernel got the dropped matrices
        assert flat[1 + 4] is dropped["weight_hh_l1"]
    rnn.impl = "explicit"
    torch.manual_seed(9)  # the same masks
    with weight_drop(rnn, 0.4, True):
        explicit, explicit_state = rnn(x)
    assert len(calls) == 1  # the explicit path never called the kernel
    assert torch.allclose(fused, explicit, atol=1e-6)
    a = fused_state if isinstance(fused_state, tuple) else (fused_state,)
    b = explicit_state if isinstance(explicit_state, tuple) else (explicit_state,)
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("impl", ["auto", "explicit"])
def test_gradient_reaches_the_raw_weight_through_the_mask(impl):
    torch.manual_seed(3)
    rnn = LSTM(3, 4, impl=impl)
    x = torch.randn(5, 2, 3)
    with weight_drop(rnn, 0.5, True) as dropped:
        out, _ = rnn(x)
        dropped["weight_hh_l0"].retain_grad()
    out.pow(2).sum().backward()
    grad_raw = rnn.weight_hh_l0.grad
    grad_dropped = dropped["weight_hh_l0"].grad
    mask = (dropped["weight_hh_l0"] != 0).float()
    assert grad_raw is not None and bool(grad_raw.abs().sum() > 0)
    assert torch.allclose(grad_raw, grad_dropped * mask * 2.0, atol=1e-6)  # chain rule
    assert bool((grad_raw[mask == 0] == 0).all())


@pytest.mark.parametrize("cls", [GRU, RNN])
def test_the_cpu_window_kernel_gets_the_dropped_weights(cls):
    """impl="auto" trains the GRU and the RNN on rnnlab's CPU window kernel: it reads the
    weights through the same hook, so it computes what the explicit path computes with the
    same masks."""
    torch.manual_seed(2)
    rnn = cls(4, 5, num_layers=2)
    x = torch.randn(6, 3, 4)
    assert rnn.uses_cpu_kernel(x)
    torch.manual_seed(9)
    with weight_drop(rnn, 0.4, True):
        kernel, kernel_state = rnn(x)
    rnn.impl = "explicit"
    torch.manual_seed(9)  # the same masks
    with weight_drop(rnn, 0.4, True):
        explicit, explicit_state = rnn(x)
    assert torch.allclose(kernel, explicit, atol=1e-6)
    assert torch.allclose(kernel_state, explicit_state, atol=1e-6)
    rnn.impl = "auto"
    torch.manual_seed(9)
    with weight_drop(rnn, 0.0, True):  # no drop: the plain layer
        plain, _ = rnn(x)
    assert not torch.allclose(kernel, plain, atol=1e-3)  # the masks did act
