"""The recurrent models: embedding -> recurrent stack -> dropout -> linear decoder.

Two output heads share the recurrent stack: :class:`LanguageModel` (softmax over V symbols, the
input a token id) and :class:`PianoRollModel` (V independent sigmoid units, the input a 0/1
frame; polyphonic music, see :mod:`rnnlab.rolls`). :func:`build_model` picks one from
``LanguageModelConfig.head``.

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
HEADS = ("softmax", "sigmoid")


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
        head: "softmax" (one of V symbols per step: text) or "sigmoid" (V independent 0/1 units
            per step: piano rolls, V = 88). The trainer sets it from the data. With "sigmoid",
            ``embed_size`` 0 feeds the frames to the recurrent stack directly (input size V).
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
    head: str = "softmax"

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ConfigError(f"vocab_size must be a non-negative integer, got {self.vocab_size!r}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose softmax or sigmoid")
        for name in ("embed_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "embed_size" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        # embed_size 0 (frames fed directly) is for piano rolls; a run config not yet bound to
        # its data (vocab_size 0) may carry it, a bound softmax model may not.
        if self.embed_size == 0 and self.head == "softmax" and self.vocab_size > 0:
            raise ConfigError(
                "embed size 0 feeds piano-roll frames directly; a text model needs --embed N"
            )
        if self.head == "sigmoid" and self.tie_weights:
            raise ConfigError("weight tying is for the softmax head; drop --tie for piano rolls")
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
        """Parameter count without building the model (used to match sizes across cells).

        ``V*E`` (embedding, or the bias-free input map of frames) + ``sum_l G*H*(I_l + H + 2)``
        + ``V*H`` (unless tied) + ``V``; with ``embed_size`` 0 the first layer reads the V-wide
        frame directly (I_0 = V) and there is no input map.
        """
        gates = {"rnn": 1, "rnn-relu": 1, "gru": 3, "gru-reset-before": 3, "lstm": 4, "lstm-fb1": 4}
        g, h = gates[self.cell], self.hidden_size
        rec = 0
        for layer in range(self.num_layers):
            inp = (self.embed_size or self.vocab_size) if layer == 0 else h
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


class _RecurrentModel(nn.Module):
    """What both heads share: a recurrent stack ``self.rnn`` read out by ``self.decoder``."""

    rnn: nn.Module
    decoder: nn.Linear

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for ``batch_size`` rows (text columns or music pieces)."""
        p = self.decoder.weight
        return self.rnn.zero_state(batch_size, device=device or p.device, dtype=p.dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LanguageModel(_RecurrentModel):
    """A recurrent language model p(w_t | w_<t) = softmax(W_out h_t + b_out).

    Args:
        config: a :class:`LanguageModelConfig`.

    Shapes: ``tokens`` is (T, B) of token ids (time first, as the batcher lays them out);
    ``logits`` is (T, B, V); the state is (num_layers, B, H), or a pair (h, c) for LSTMs.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ConfigError(
                f"a language model needs a vocabulary of 2 or more, got {config.vocab_size}"
            )
        if config.head != "softmax":
            raise ConfigError("LanguageModel is the softmax head; build_model picks PianoRollModel")
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
        init_uniform(self, r)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        emb = self.drop(self.embedding(tokens))  # (T, B, D)
        out, state = self.rnn(emb, state)  # (T, B, H)
        logits = self.decoder(self.drop(out))  # (T, B, V)
        return logits, state


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


class PianoRollModel(_RecurrentModel):
    """A recurrent model of 0/1 frames with V independent sigmoid outputs (multi-label)::

        frames x_t (T, B, V) ──> [x W_in^T] ──> dropout ──> Recurrent ──> dropout ──> Linear ──> z
                                   (E > 0)                                        (T, B, V) logits

        p(x_{t+1,j} = 1 | x_{<=t}) = sigmoid(z_{t,j}),  z_t = W_out h_t + b_out

    ``W_in`` (E x V, no bias) is the embedding of a frame: the sum of the embeddings of its
    sounding notes (with ``embed_size`` 0 the frames feed the recurrent stack directly, as in
    Chung et al. 2014). Same contract as :class:`LanguageModel`: ``forward(frames, state) ->
    (logits, state)``, no stored state, no I/O; the loss lives in :mod:`rnnlab.rolls`.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        if config.head != "sigmoid":
            raise ConfigError("PianoRollModel needs head='sigmoid'")
        if config.vocab_size < 1:
            raise ConfigError(f"a piano-roll model needs 1 or more units, got {config.vocab_size}")
        self.config = config
        v, e = config.vocab_size, config.embed_size
        self.frame_in = nn.Linear(v, e, bias=False) if e else None
        self.drop = nn.Dropout(config.dropout)
        self.rnn = make_recurrent(
            config.cell,
            e or v,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            impl=config.impl,
        )
        self.decoder = nn.Linear(config.hidden_size, v)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r = self.config.init_range
        if r is None:
            if self.frame_in is not None:
                nn.init.uniform_(self.frame_in.weight, -0.1, 0.1)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            return
        init_uniform(self, r)

    def forward(self, frames: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = frames if self.frame_in is None else self.frame_in(frames)  # (T, B, E or V)
        out, state = self.rnn(self.drop(x), state)  # (T, B, H)
        logits = self.decoder(self.drop(out))  # (T, B, V)
        return logits, state


SequenceModel = LanguageModel | PianoRollModel


def build_model(config: LanguageModelConfig) -> SequenceModel:
    """The model that ``config.head`` names: softmax -> LanguageModel, sigmoid -> PianoRollModel."""
    return PianoRollModel(config) if config.head == "sigmoid" else LanguageModel(config)


def perplexity(loss: float) -> float:
    """Perplexity = exp(mean cross-entropy in nats); ``inf`` instead of an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
