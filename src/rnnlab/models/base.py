"""What every model shares: the hidden state type, the one place it is detached (truncated BPTT),
the recurrent-stack base class, uniform initialisation and perplexity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, Tensor]


def detach_state(state: State | None) -> State | None:
    """Cut the autograd graph at a window boundary (truncated BPTT), keeping the values.

    This is the one place where the hidden state carried across windows is detached.
    """
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


class RecurrentModel(nn.Module):
    """What every head shares: a recurrent stack ``self.rnn`` read out by ``self.decoder``."""

    rnn: nn.Module
    decoder: nn.Module

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for ``batch_size`` rows (text columns or music pieces)."""
        p = next(self.parameters())
        return self.rnn.zero_state(batch_size, device=device or p.device, dtype=p.dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_uniform(model: nn.Module, r: float) -> None:
    """Every parameter uniform in ±r (Zaremba et al. 2014), keeping an LSTM's forget-gate bias
    offset (gate order i, f, g, o)."""
    for p in model.parameters():
        nn.init.uniform_(p, -r, r)
    forget_bias = getattr(model.rnn, "forget_bias", 0.0)
    if forget_bias:
        h = model.config.hidden_size
        with torch.no_grad():
            for layer in range(model.config.num_layers):
                getattr(model.rnn, f"bias_ih_l{layer}")[h : 2 * h] += forget_bias


def perplexity(loss: float) -> float:
    """Perplexity = exp(mean cross-entropy in nats); ``inf`` instead of an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
