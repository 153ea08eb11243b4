"""The recurrent language model: embedding -> recurrent stack -> dropout -> linear decoder.

    tokens (T, B) ──> Embedding ──> dropout ──> Recurrent (L layers) ──> dropout ──> Linear ──> logits
                                                   ^          │                                 (T, B, V)
                                       state_{in} ─┘          └─> state_{out}

The model is a pure function of its inputs: ``forward(tokens, state) -> (logits, state)``. It never
stores the hidden state; the caller carries it from one window to the next and cuts the graph with
:func:`detach_state` at every window boundary (truncated BPTT). It does no I/O and prints nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.recurrent import CELL_NAMES, make_recurrent

State = Tensor | tuple[Tensor, Tensor]


@dataclass
class LanguageModelConfig:
    """Everything needed to rebuild a :class:`LanguageModel` (saved in every checkpoint).

    Attributes:
        vocab_size: number of symbols V of the softmax (0 in a run config: "take it from the
            vocabulary"; it must be set before a model is built).
        cell: one of ``rnnlab.recurrent.CELL_NAMES`` (rnn, rnn-relu, gru, gru-reset-before, lstm,
            lstm-fb1).
        embed_size: embedding width D.
        hidden_size: recurrent width H.
        num_layers: stacked recurrent layers.
        dropout: dropout on the embedding output, between layers and before the decoder
            (Zaremba et al. 2014: non-recurrent connections only).
        tie_weights: share the decoder matrix with the embedding (Press & Wolf 2017; Inan et al.
            2017). Needs ``embed_size == hidden_size``.
        init_range: if set, every weight starts uniform in ±init_range (Zaremba et al. 2014);
            otherwise torch's defaults (and embedding/decoder uniform ±0.1).
        impl: "auto" (fused torch kernel where the equations allow), "explicit" or "fused".
    """

    vocab_size: int = 0
    cell: str = "lstm"
    embed_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False
    init_range: float | None = None
    impl: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ConfigError(f"vocab_size must be a non-negative integer, got {self.vocab_size!r}")
        for name in ("embed_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.cell not in CELL_NAMES:
            raise ConfigError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELL_NAMES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ConfigError(
                f"weight tying needs embed size == hidden size (got {self.embed_size} and "
                f"{self.hidden_size}); set --embed {self.hidden_size} or drop --tie"
            )
        if self.init_range is not None and not self.init_range > 0:
            raise ConfigError(f"init_range must be positive, got {self.init_range}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LanguageModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def num_parameters(self) -> int:
        """Parameter count without building the model (used to match sizes across cells)."""
        gates = {"rnn": 1, "rnn-relu": 1, "gru": 3, "gru-reset-before": 3, "lstm": 4, "lstm-fb1": 4}
        g, h = gates[self.cell], self.hidden_size
        rec = 0
        for layer in range(self.num_layers):
            inp = self.embed_size if layer == 0 else h
            rec += g * h * (inp + h + 2)
        emb = self.vocab_size * self.embed_size
        dec = self.vocab_size * (0 if self.tie_weights else h) + self.vocab_size
        return emb + rec + dec


def detach_state(state: State | None) -> State | None:
    """Cut the autograd graph at a window boundary (truncated BPTT), keeping the values.

    This is the one place where the hidden state carried across windows is detached.
    """
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


class LanguageModel(nn.Module):
    """A recurrent language model p(w_t | w_<t) = softmax(W_out h_t + b_out).

    Args:
        config: a :class:`LanguageModelConfig`.

    Shapes: ``tokens`` is (T, B) of token ids (time first, as the batcher lays them out);
    ``logits`` is (T, B, V); the state is (num_layers, B, H), or a pair (h, c) for LSTMs.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ConfigError(f"a language model needs a vocabulary of 2 or more, got {config.vocab_size}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = make_recurrent(
            config.cell,
            config.embed_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            impl=config.impl,
        )
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r = self.config.init_range
        if r is None:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            if not self.config.tie_weights:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            return
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)
        forget_bias = getattr(self.rnn, "forget_bias", 0.0)
        if forget_bias:  # keep the cell's forget-gate offset (gate order i, f, g, o)
            h = self.config.hidden_size
            with torch.no_grad():
                for layer in range(self.config.num_layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h] += forget_bias

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for ``batch_size`` columns."""
        p = self.decoder.weight
        return self.rnn.zero_state(batch_size, device=device or p.device, dtype=p.dtype)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        emb = self.drop(self.embedding(tokens))  # (T, B, D)
        out, state = self.rnn(emb, state)  # (T, B, H)
        logits = self.decoder(self.drop(out))  # (T, B, V)
        return logits, state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def perplexity(loss: float) -> float:
    """Perplexity = exp(mean cross-entropy in nats); ``inf`` instead of an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
