"""The text models: embedding -> recurrent stack -> dropout -> decoder.

Three output heads share the recurrent stack: :class:`LanguageModel` here (full softmax over V
symbols, the input a token id), :class:`AdaptiveLanguageModel` here (the adaptive softmax of
Grave et al. 2017 over V symbols, for large vocabularies; tied to the embedding by
:class:`~rnnlab.models.heads.TiedAdaptiveSoftmax`) and
:class:`~rnnlab.models.pianoroll.PianoRollModel` (V independent sigmoid units, the input a 0/1
frame; polyphonic music, see :mod:`rnnlab.data.rolls`). :func:`rnnlab.models.build.build_model`
picks one from ``LanguageModelConfig.head``.

    tokens (T, B) ──> Embedding ──> dropout ──> Recurrent (L layers) ──> dropout ──> Linear ──> logits
                                                   ^          │                                 (T, B, V)
                                       state_{in} ─┘          └─> state_{out}

(The adaptive head's decoder is torch's AdaptiveLogSoftmaxWithLoss, or with ``tie_weights``
:class:`TiedAdaptiveSoftmax`, which scores every word by its embedding row; its logits are
log-probabilities.)

With AWD-LSTM's regularisers (Merity et al. 2018; ``LanguageModelConfig.awd_options``) the same
picture holds with embedding dropout on the embedding matrix, locked dropout in place of the
plain dropout (on the embeddings, between layers, run one at a time, and on the output) and weight
drop on the recurrent matrices; all of them act in training mode only, so evaluation, sampling and
the stepper see the plain model with the same weights.

The model is a pure function of its inputs: ``forward(tokens, state) -> (logits, state)``. It never
stores the hidden state; the caller carries it from one window to the next and cuts the graph with
:func:`detach_state` at every window boundary (truncated BPTT). It does no I/O and prints nothing.

The text models also take the next tokens: ``forward(tokens, state, targets=y) -> (nll, state)``
returns the per-token negative log-likelihood -log p(y_t | w_<=t) (T, B) instead of the logits,
which is how training and exact evaluation call them. For the full softmax that is the
cross-entropy of the logits; for the adaptive softmax it is the fast path that never builds the
(T, B, V) distribution. Training goes through ``forward`` either way, so DDP sees the gradients.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.models.base import RecurrentModel, State, init_uniform, join_state, split_state
from rnnlab.models.config import IGNORE, LanguageModelConfig
from rnnlab.models.heads import TiedAdaptiveSoftmax
from rnnlab.nn.recurrent import make_recurrent
from rnnlab.nn.variational import embedding_dropout, forward_layerwise, locked_dropout
from rnnlab.nn.weight_drop import weight_drop


class _TextModel(RecurrentModel):
    """Token ids in: embedding -> dropout -> recurrent stack -> dropout -> :meth:`readout`.

    Shapes: ``tokens`` is (T, B) of token ids (time first, as the batcher lays them out); the
    state is (num_layers, B, H), or a pair (h, c) for LSTMs; with a last layer of its own width
    O (``last_hidden_size``), (num_layers, B, max(H, O)), each layer's state in its first
    columns and zeros after.
    """

    def __init__(self, config: LanguageModelConfig, head: str) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ConfigError(
                f"a language model needs a vocabulary of 2 or more, got {config.vocab_size}"
            )
        if config.head != head:
            raise ConfigError(
                f"{type(self).__name__} is the {head} head, not {config.head}; build_model picks "
                "the model for a config"
            )
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.drop = nn.Dropout(config.dropout)
        narrowed = config.narrowed
        layers = config.num_layers - int(narrowed)  # those of width H
        self.rnn = make_recurrent(
            config.cell,
            config.embed_size,
            config.hidden_size,
            num_layers=layers,
            # between layers of the stack (a narrowed model drops before its last layer itself)
            dropout=config.dropout if layers > 1 or not narrowed else 0.0,
            impl=config.impl,
        )
        if narrowed:  # the last layer, of its own width (AWD-LSTM's)
            self.rnn_last = make_recurrent(
                config.cell, config.hidden_size, config.output_size, impl=config.impl
            )

    def forward(
        self,
        tokens: Tensor,
        state: State | None = None,
        targets: Tensor | None = None,
        return_hidden: bool = False,
    ) -> tuple[Tensor, State] | tuple[Tensor, State, tuple[Tensor, Tensor]]:
        """``(logits (T, B, V), state)``; with ``targets`` (T, B) the next token ids,
        ``(nll (T, B), state)``: -log p(targets_t | tokens_<=t), 0 where a target is IGNORE.

        ``return_hidden`` adds a third element, the last layer's outputs (T, B, O) before and
        after the output dropout (what activation regularisation reads)."""
        out, dropped, state = self.hidden(tokens, state)
        result = self.readout(dropped, targets)
        if return_hidden:
            return result, state, (out, dropped)
        return result, state

    def hidden(self, tokens: Tensor, state: State | None) -> tuple[Tensor, Tensor, State]:
        """The last layer's outputs (T, B, O), undropped and dropped, and the final state.

        Plain: dropout on the embedding, the stack (its own dropout between layers), dropout.
        With AWD-LSTM's regularisers (:meth:`LanguageModelConfig.awd_options`): embedding
        dropout, locked dropout on the embedding, the stack with weight drop (one layer at a
        time with locked dropout between layers), locked dropout on the output; the plain
        ``dropout`` still applies where it does."""
        c = self.config
        if not c.awd_options():
            emb = self.drop(self.embedding(tokens))  # (T, B, D)
            out, state = self._stack(emb, state)  # (T, B, O)
            return out, self.drop(out), state
        train = self.training
        emb = embedding_dropout(self.embedding.weight, tokens, c.dropout_embed, train)
        emb = self.drop(locked_dropout(emb, c.dropout_input, train))  # (T, B, D)
        with ExitStack() as dropped:
            for stack in self.stacks():
                dropped.enter_context(weight_drop(stack, c.weight_drop, train))
            out, state = self._stack(emb, state)  # (T, B, O)
        return out, self.drop(locked_dropout(out, c.dropout_output, train)), state

    def _stack(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """The recurrent layers over ``x`` (T, B, D): the last layer's outputs (T, B, O) and the
        final state. The stack in one call, or one layer at a time with locked dropout between
        layers (``dropout_hidden``), or in two modules when the last layer has its own width."""
        c = self.config
        if c.narrowed:
            return self._narrowed(x, state)
        if c.dropout_hidden:
            return forward_layerwise(self.rnn, x, state, c.dropout_hidden, self.training)
        return self.rnn(x, state)

    def _narrowed(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """The stack of a narrowed model (:attr:`LanguageModelConfig.narrowed`): ``rnn`` (the first
        L - 1 layers, width H), the dropout between layers (``dropout`` or the locked
        ``dropout_hidden``), then ``rnn_last`` (width O). ``state``: (L, B, max(H, O)) per kind,
        each layer's in its first columns (:func:`split_state`, :func:`join_state`)."""
        c, train = self.config, self.training
        first, last = split_state(state, c.layer_sizes())
        if c.dropout_hidden:
            x, first = forward_layerwise(self.rnn, x, first, c.dropout_hidden, train)
            x = locked_dropout(x, c.dropout_hidden, train)
        else:
            x, first = self.rnn(x, first)  # (T, B, H)
            x = self.drop(x)
        out, last = self.rnn_last(x, last)  # (T, B, O)
        return out, join_state(first, last, c.state_size())

    def stacks(self) -> list[nn.Module]:
        """The recurrent modules, bottom first: ``[rnn]``, or ``[rnn, rnn_last]`` when the last
        layer has its own width."""
        return [self.rnn, self.rnn_last] if self.config.narrowed else super().stacks()

    def recurrent_layers(self) -> list[tuple[nn.Module, int]]:
        """Every layer bottom first, as (its module, its index there): what reads the weights
        layer by layer (the stepper, the ONNX export) iterates over this."""
        return [(stack, k) for stack in self.stacks() for k in range(stack.num_layers)]

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for ``batch_size`` columns: (L, B, max(H, O)) per kind."""
        if not self.config.narrowed:
            return super().init_state(batch_size, device)
        c, p = self.config, self.embedding.weight
        shape = (c.num_layers, batch_size, c.state_size())
        kinds = [p.new_zeros(shape, device=device) for _ in range(self.rnn.num_states)]
        return tuple(kinds) if len(kinds) == 2 else kinds[0]

    def readout(self, h: Tensor, targets: Tensor | None = None) -> Tensor:
        """Hidden states (..., O) to logits (..., V), or with ``targets`` (...) to the nll (...)."""
        raise NotImplementedError


class LanguageModel(_TextModel):
    """A recurrent language model p(w_t | w_<t) = softmax(W_out h_t + b_out).

    Args:
        config: a :class:`LanguageModelConfig` with ``head="softmax"``.

    Shapes: ``tokens`` is (T, B) of token ids (time first, as the batcher lays them out);
    ``logits`` is (T, B, V); the state is (num_layers, B, H), or a pair (h, c) for LSTMs.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__(config, "softmax")
        self.decoder = nn.Linear(config.output_size, config.vocab_size)
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

    def readout(self, h: Tensor, targets: Tensor | None = None) -> Tensor:
        """``logits = W_out h + b_out`` (..., V); with ``targets`` y (...) the cross-entropy
        ``-log softmax(logits)[y]`` (...), computed in at least float32."""
        logits = self.decoder(h)  # (..., V)
        if targets is None:
            return logits
        flat = logits.reshape(-1, logits.size(-1))  # (N, V)
        if flat.element_size() < 4:  # half precision: score in float32
            flat = flat.float()
        nll = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE, reduction="none")
        return nll.view(targets.shape)


class AdaptiveLanguageModel(_TextModel):
    """A recurrent language model with the adaptive softmax (Grave et al. 2017, "Efficient
    softmax approximation for GPUs"), torch's :class:`~torch.nn.AdaptiveLogSoftmaxWithLoss`.

    The vocabulary, ordered by frequency, is cut at ``c_1 < ... < c_n`` into a head of the
    ``c_1`` most frequent words and n tail clusters ``[c_i, c_{i+1})`` (c_{n+1} = V)::

        p(w | h) = softmax(W_head h + b)[w]                          w < c_1
        p(w | h) = softmax(W_head h + b)[c_1 + i - 1]                 w in cluster i
                   * softmax(U_i P_i h)[w - c_i]                      P_i: (d_i, H), d_i = H // div^i

    The head's softmax has ``c_1 + n`` outputs (its words and one per cluster); a cluster's
    softmax is computed only for the positions whose target falls in it, through a narrow
    projection: most of the V-wide work of the full softmax disappears, since most tokens of a
    Zipfian text are head words. ``forward(tokens, state)`` returns the full log-probabilities
    (T, B, V) (valid logits: sampling, scoring and beam search work unchanged);
    ``forward(tokens, state, targets=y)`` the fast per-token nll (T, B).

    Args:
        config: a :class:`LanguageModelConfig` with ``head="adaptive"`` (its cutoffs resolved).
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__(config, "adaptive")
        self.decoder: nn.AdaptiveLogSoftmaxWithLoss | TiedAdaptiveSoftmax
        if config.tie_weights:
            self.decoder = TiedAdaptiveSoftmax(self.embedding, config.cutoffs)
        else:
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(
                config.output_size,
                config.vocab_size,
                list(config.cutoffs),
                div_value=config.div_value,
                head_bias=True,
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embedding uniform ±0.1, the adaptive head torch's default with a zero head bias; or
        everything uniform ±init_range."""
        r = self.config.init_range
        if r is None:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            self.decoder.reset_parameters()
            if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
                nn.init.zeros_(self.decoder.head.bias)
            return
        init_uniform(self, r)

    def readout(self, h: Tensor, targets: Tensor | None = None) -> Tensor:
        """Full log-probabilities (..., V); with ``targets`` y (...) the nll ``-log p(y | h)``
        (...), by the fast path that evaluates only the clusters the targets fall in."""
        flat = h.reshape(-1, h.size(-1))  # (N, H)
        if targets is None:
            return self.decoder.log_prob(flat).view(*h.shape[:-1], -1)  # (..., V)
        y = targets.reshape(-1)  # (N,)
        scored = y != IGNORE
        out = self.decoder(flat, torch.where(scored, y, 0))
        logp = out if isinstance(out, Tensor) else out.output  # (N,) log p(y | h)
        return (-logp).masked_fill(~scored, 0.0).view(targets.shape)


TextModel = LanguageModel | AdaptiveLanguageModel
