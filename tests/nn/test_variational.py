"""Locked (variational) dropout, embedding dropout, and the stack run layer by layer: masks
shaped and shared across time, rescaled, off in evaluation; layer by layer equals the stack."""

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.nn.recurrent import GRU, LSTM, RNN
from rnnlab.nn.variational import embedding_dropout, forward_layerwise, locked_dropout
from rnnlab.nn.weight_drop import weight_drop


def test_locked_mask_is_the_same_at_every_step_and_rescaled():
    torch.manual_seed(0)
    x = torch.ones(9, 4, 50)
    y = locked_dropout(x, 0.3, training=True)
    assert y.shape == x.shape
    assert torch.equal(y, y[:1].expand_as(y))  # one (1, B, F) mask for all 9 steps
    assert bool(((y == 0) | torch.isclose(y, torch.tensor(1 / 0.7))).all())
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    assert 0.2 < (y[0] == 0).float().mean().item() < 0.4
    assert not torch.equal(y[0, 0], y[0, 1])  # each sequence its own mask
    z = locked_dropout(x.transpose(0, 1), 0.3, training=True, batch_first=True)  # (B, T, F)
    assert torch.equal(z, z[:, :1].expand_as(z))


def test_locked_and_embedding_dropout_are_identities_in_eval():
    x = torch.randn(3, 2, 5)
    w = torch.randn(10, 5)
    tokens = torch.tensor([[1, 2], [3, 1]])
    state = torch.get_rng_state()
    assert locked_dropout(x, 0.5, training=False) is x
    assert locked_dropout(x, 0.0, training=True) is x
    assert torch.equal(embedding_dropout(w, tokens, 0.5, training=False), w[tokens])
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    with pytest.raises(ConfigError, match="locked dropout"):
        locked_dropout(x, 1.0, training=True)
    with pytest.raises(ConfigError, match="embedding dropout"):
        embedding_dropout(w, tokens, -0.1, training=True)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(1)
    w = torch.randn(40, 6)
    tokens = torch.arange(40).repeat(5, 1)  # (5, 40): every word at five positions
    out = embedding_dropout(w, tokens, 0.5, training=True)  # (5, 40, 6)
    dropped = (out == 0).all(-1)  # (5, 40)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))  # a word is dropped everywhere
    assert 0 < dropped[0].sum() < 40
    kept = ~dropped[0]
    assert torch.allclose(out[0, kept], 2.0 * w[kept])


def test_embedding_dropout_gradient_reaches_only_kept_rows():
    torch.manual_seed(2)
    w = torch.randn(12, 3, requires_grad=True)
    tokens = torch.arange(12).view(3, 4)
    out = embedding_dropout(w, tokens, 0.5, training=True)
    out.sum().backward()
    dropped = (out.reshape(12, 3) == 0).all(-1)
    assert bool((w.grad[dropped] == 0).all()) and bool((w.grad[~dropped] == 2.0).all())


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("impl", ["auto", "explicit"])
def test_layerwise_equals_the_stack_without_dropout(cls, impl):
    torch.manual_seed(3)
    rnn = cls(4, 5, num_layers=3, impl=impl)
    x = torch.randn(6, 2, 4)
    ref_out, ref_state = rnn(x)
    out, state = forward_layerwise(rnn, x, ref_state, 0.0, training=True)
    ref2, ref2_state = rnn(x, ref_state)
    assert torch.allclose(out, ref2, atol=1e-6)
    a = state if isinstance(state, tuple) else (state,)
    b = ref2_state if isinstance(ref2_state, tuple) else (ref2_state,)
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(a, b, strict=True))
    assert not any(n.startswith("_layer_views") for n, _ in rnn.named_modules())
    assert set(rnn.state_dict()) == {n for n, _ in rnn.named_parameters()}  # no view weights


def test_locked_dropout_between_layers_uses_one_mask_per_layer():
    """The second layer sees the first layer's output times one (1, B, H) mask: rebuilt by hand
    from the same random draw."""
    torch.manual_seed(4)
    rnn = LSTM(3, 8, num_layers=2)
    x = torch.randn(5, 2, 3)
    torch.manual_seed(11)
    out, _ = forward_layerwise(rnn, x, None, 0.5, training=True)
    one = LSTM(3, 8)
    two = LSTM(8, 8)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{name}_l0").copy_(getattr(rnn, f"{name}_l0"))
            getattr(two, f"{name}_l0").copy_(getattr(rnn, f"{name}_l1"))
    h1, _ = one(x)
    torch.manual_seed(11)
    mask = torch.empty(1, 2, 8).bernoulli_(0.5).div_(0.5)
    expected, _ = two(h1 * mask)
    assert torch.allclose(out, expected, atol=1e-6)


def test_layerwise_with_weight_drop_and_gradients():
    torch.manual_seed(5)
    rnn = LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with weight_drop(rnn, 0.5, True):
        out, _ = forward_layerwise(rnn, x, None, 0.3, training=True)
    out.sum().backward()
    for name, p in rnn.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_layerwise_refuses_the_stacks_own_dropout():
    rnn = GRU(3, 4, num_layers=2, dropout=0.2)
    with pytest.raises(ConfigError, match="use one"):
        forward_layerwise(rnn, torch.randn(2, 1, 3), None, 0.3, training=True)
