"""What every model shares: the hidden state type, the one place it is detached (truncated BPTT),
the recurrent-stack base class, uniform initialisation and perplexity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def split_state(state: State | None, sizes: list[int]) -> tuple[State | None, State | None]:
    """A narrowed stack's state (L, B, max(sizes)) per kind (see
    :attr:`~rnnlab.models.config.LanguageModelConfig.narrowed`) as the states of its two
    modules: layers 0..L-2 (their first ``sizes[0]`` columns) and layer L-1 (its first
    ``sizes[-1]``). ``None`` stays ``None``."""
    if state is None:
        return None, None
    kinds = state if isinstance(state, tuple) else (state,)
    n = len(sizes) - 1
    first = tuple(s[:n, :, : sizes[0]].contiguous() for s in kinds)
    last = tuple(s[n:, :, : sizes[-1]].contiguous() for s in kinds)
    if len(kinds) == 1:
        return first[0], last[0]
    return first, last  # type: ignore[return-value]


def join_state(first: State, last: State, width: int) -> State:
    """The inverse of :func:`split_state`: the two modules' states, each zero-padded to
    ``width`` columns, stacked into (L, B, width) per kind."""
    pairs = zip(*(s if isinstance(s, tuple) else (s,) for s in (first, last)), strict=True)
    kinds = tuple(
        torch.cat([F.pad(part, (0, width - part.size(-1))) for part in parts]) for parts in pairs
    )
    return kinds if len(kinds) == 2 else kinds[0]  # type: ignore[return-value]


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

    def stacks(self) -> list[nn.Module]:
        """The recurrent modules, bottom first: ``[rnn]`` (a text model whose last layer has its
        own width adds ``rnn_last``)."""
        return [self.rnn]


def init_uniform(model: RecurrentModel, r: float) -> None:
    """Every parameter uniform in ±r (Zaremba et al. 2014), keeping an LSTM's forget-gate bias
    offset (gate order i, f, g, o)."""
    for p in model.parameters():
        nn.init.uniform_(p, -r, r)
    with torch.no_grad():
        for rnn in model.stacks():
            forget_bias, h = getattr(rnn, "forget_bias", 0.0), rnn.hidden_size
            for layer in range(rnn.num_layers if forget_bias else 0):
                getattr(rnn, f"bias_ih_l{layer}")[h : 2 * h] += forget_bias


def perplexity(loss: float) -> float:
    """Perplexity = exp(mean cross-entropy in nats); ``inf`` instead of an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
