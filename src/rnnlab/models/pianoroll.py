"""The piano-roll model: 0/1 frames in, 88 independent sigmoid units out (Chung et al. 2014)."""

from __future__ import annotations

from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.models.base import RecurrentModel, State, init_uniform
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.recurrent import make_recurrent


class PianoRollModel(RecurrentModel):
    """A recurrent model of 0/1 frames with V independent sigmoid outputs (multi-label)::

        frames x_t (T, B, V) ──> [x W_in^T] ──> dropout ──> Recurrent ──> dropout ──> Linear ──> z
                                   (E > 0)                                        (T, B, V) logits

        p(x_{t+1,j} = 1 | x_{<=t}) = sigmoid(z_{t,j}),  z_t = W_out h_t + b_out

    ``W_in`` (E x V, no bias) is the embedding of a frame: the sum of the embeddings of its
    sounding notes (with ``embed_size`` 0 the frames feed the recurrent stack directly, as in
    Chung et al. 2014). Same contract as :class:`LanguageModel`: ``forward(frames, state) ->
    (logits, state)``, no stored state, no I/O; the loss lives in :mod:`rnnlab.data.rolls`.
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
