"""Weight noise: the gradient is taken at the noisy weights, the clean weights come back bit for
bit, and noise 0 draws nothing; RMSProp is wired to torch's."""

import pytest
import torch
from torch import nn

from rnnlab.config.run import OptimConfig
from rnnlab.errors import ConfigError
from rnnlab.training.trainer import make_optimizer
from rnnlab.training.weight_noise import WeightNoise


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def loss_of(net, x):
    return net(x).pow(2).sum()


def test_gradient_is_taken_at_the_noisy_weights_and_the_clean_ones_return():
    net = small_net()
    x = torch.randn(6, 5)
    clean = [p.detach().clone() for p in net.parameters()]
    noise = WeightNoise(net, 0.075)

    torch.manual_seed(42)
    noise.add()
    noisy = [p.detach().clone() for p in net.parameters()]
    loss_of(net, x).backward()
    noise.remove()
    grads = [p.grad.clone() for p in net.parameters()]

    for p, c in zip(net.parameters(), clean, strict=True):
        assert torch.equal(p, c)  # restored exactly, not w + eps - eps
    # the same noise, drawn again from the same generator state
    torch.manual_seed(42)
    expected = [c + 0.075 * torch.randn_like(c) for c in clean]
    for n, e in zip(noisy, expected, strict=True):
        assert torch.allclose(n, e, rtol=0, atol=1e-7)
    # the gradient of the loss at the noisy weights
    ref = small_net()
    with torch.no_grad():
        for p, n in zip(ref.parameters(), noisy, strict=True):
            p.copy_(n)
    loss_of(ref, x).backward()
    for g, p in zip(grads, ref.parameters(), strict=True):
        assert torch.allclose(g, p.grad, rtol=1e-6, atol=1e-7)
    # every parameter moved, with about the asked-for spread
    moved = torch.cat([(n - c).flatten() for n, c in zip(noisy, clean, strict=True)])
    assert bool((moved != 0).all()) and 0.03 < float(moved.std()) < 0.15


def test_zero_noise_draws_nothing():
    net = small_net()
    state = torch.get_rng_state()
    noise = WeightNoise(net, 0.0)
    noise.add()
    noise.remove()
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_noise_and_double_add_are_refused():
    with pytest.raises(ConfigError):
        WeightNoise(small_net(), -0.1)
    with pytest.raises(ConfigError, match="weight-noise"):
        OptimConfig(weight_noise=float("nan"))
    noise = WeightNoise(small_net(), 0.1)
    noise.add()
    with pytest.raises(RuntimeError):
        noise.add()


def test_rmsprop_matches_torch_with_decay_0_9():
    net = small_net()
    opt = make_optimizer(net.parameters(), OptimConfig(optimizer="rmsprop", lr=1e-3))
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.param_groups[0]["alpha"] == 0.9 and opt.param_groups[0]["lr"] == 1e-3
