"""The recurrent models: embedding -> recurrent stack -> dropout -> decoder.

Three output heads share the recurrent stack: :class:`LanguageModel` (full softmax over V
symbols, the input a token id), :class:`AdaptiveLanguageModel` (the adaptive softmax of Grave et
al. 2017 over V symbols, for large vocabularies) and :class:`PianoRollModel` (V independent
sigmoid units, the input a 0/1 frame; polyphonic music, see :mod:`rnnlab.rolls`).
:func:`build_model` picks one from ``LanguageModelConfig.head``.

    tokens (T, B) ──> Embedding ──> dropout ──> Recurrent (L layers) ──> dropout ──> Linear ──> logits
                                                   ^          │                                 (T, B, V)
                                       state_{in} ─┘          └─> state_{out}

(The adaptive head's decoder is torch's AdaptiveLogSoftmaxWithLoss, or with ``tie_weights``
:class:`TiedAdaptiveSoftmax`, which scores every word by its embedding row; its logits are
log-probabilities.)

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

import math
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.recurrent import CELL_NAMES, make_recurrent

State = Tensor | tuple[Tensor, Tensor]
HEADS = ("softmax", "adaptive", "sigmoid")
IGNORE = -100  # a target that is not scored (padding); its nll is 0
DIV_VALUE = 4.0  # the adaptive softmax's default width divisor per tail cluster (Grave et al.)


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
        head: "softmax" (one of V symbols per step: text), "adaptive" (the same distribution
            factored by frequency clusters, Grave et al. 2017: for large word vocabularies) or
            "sigmoid" (V independent 0/1 units per step: piano rolls, V = 88). The trainer sets
            softmax or sigmoid from the data and keeps "adaptive" for text. With "sigmoid",
            ``embed_size`` 0 feeds the frames to the recurrent stack directly (input size V).
        cutoffs: adaptive head only: the vocabulary (ordered by frequency, most frequent first)
            is split at these ids into a head of the ``cutoffs[0]`` most frequent words and one
            tail cluster per further interval; strictly increasing, each in 1..V-1. Empty: the
            rule of :func:`default_cutoffs`, resolved here once ``vocab_size`` is known (so a
            checkpoint records the cutoffs it was built with).
        div_value: adaptive head only: tail cluster i (from 1) projects h to
            ``floor(H / div_value**i)`` dimensions before its softmax; at least 1.
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
    cutoffs: tuple[int, ...] = ()
    div_value: float = DIV_VALUE

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ConfigError(f"vocab_size must be a non-negative integer, got {self.vocab_size!r}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose softmax, adaptive or sigmoid")
        for name in ("embed_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "embed_size" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        # embed_size 0 (frames fed directly) is for piano rolls; a run config not yet bound to
        # its data (vocab_size 0) may carry it, a bound text model may not.
        if self.embed_size == 0 and self.head != "sigmoid" and self.vocab_size > 0:
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
        self._check_adaptive()

    def _check_adaptive(self) -> None:
        """Validate (and, once the vocabulary is known, resolve) the adaptive head's cutoffs."""
        cutoffs = self.cutoffs
        if isinstance(cutoffs, str) or not isinstance(cutoffs, (tuple, list)):
            raise ConfigError(f"cutoffs must be a list of integers, got {cutoffs!r}")
        if any(not isinstance(c, int) or isinstance(c, bool) for c in cutoffs):
            raise ConfigError(f"cutoffs must be integers, got {list(cutoffs)}")
        self.cutoffs = tuple(cutoffs)  # JSON gives a list back
        d = self.div_value
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 1.0:
            raise ConfigError(f"div-value must be a number of at least 1, got {d!r}")
        if self.head != "adaptive":
            if self.cutoffs or d != DIV_VALUE:
                raise ConfigError(
                    "--cutoffs and --div-value shape the adaptive softmax; add --head adaptive"
                )
            return
        if self.tie_weights and d != DIV_VALUE:
            raise ConfigError(
                "a tied adaptive softmax scores every cluster against the full-width embedding "
                "rows; --div-value does not apply, drop it or --tie"
            )
        if any(b <= a for a, b in pairwise(self.cutoffs)) or any(c < 1 for c in self.cutoffs):
            raise ConfigError(
                f"cutoffs must be strictly increasing positive integers, got {list(self.cutoffs)}"
            )
        v = self.vocab_size
        if v == 0:  # a run config not yet bound to its data: checked again once it is
            return
        if v < 3:
            raise ConfigError(
                f"the adaptive softmax needs a vocabulary of 3 or more, got {v}; use --head softmax"
            )
        if not self.cutoffs:
            self.cutoffs = default_cutoffs(v, self.hidden_size, d)
        if self.cutoffs[-1] > v - 1:
            raise ConfigError(
                f"cutoffs must lie in 1..{v - 1} for a vocabulary of {v}, got "
                f"{list(self.cutoffs)}; lower them or leave --cutoffs out for the default"
            )
        widths = tail_widths(self.hidden_size, d, len(self.cutoffs))
        if widths[-1] < 1 and not self.tie_weights:
            raise ConfigError(
                f"tail cluster {len(widths)} of the adaptive softmax would have width "
                f"floor({self.hidden_size} / {d:g}^{len(widths)}) = 0; lower --div-value, use "
                "fewer --cutoffs or a larger --hidden"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON gives them back (``cutoffs`` a list)."""
        return dict(asdict(self), cutoffs=list(self.cutoffs))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LanguageModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def num_parameters(self) -> int:
        """Parameter count without building the model (used to match sizes across cells).

        ``V*E`` (embedding, or the bias-free input map of frames) + ``sum_l G*H*(I_l + H + 2)``
        + ``V*H`` (unless tied) + ``V``; with ``embed_size`` 0 the first layer reads the V-wide
        frame directly (I_0 = V) and there is no input map. The adaptive head replaces the last
        two terms (see :meth:`_adaptive_parameters`).
        """
        gates = {"rnn": 1, "rnn-relu": 1, "gru": 3, "gru-reset-before": 3, "lstm": 4, "lstm-fb1": 4}
        g, h = gates[self.cell], self.hidden_size
        rec = 0
        for layer in range(self.num_layers):
            inp = (self.embed_size or self.vocab_size) if layer == 0 else h
            rec += g * h * (inp + h + 2)
        emb = self.vocab_size * self.embed_size
        if self.head == "adaptive":
            return emb + rec + self._adaptive_parameters()
        dec = self.vocab_size * (0 if self.tie_weights else h) + self.vocab_size
        return emb + rec + dec

    def _adaptive_parameters(self) -> int:
        """The adaptive head: ``(H + 1)(c_1 + n)`` (the head's map and bias, cutoffs
        c_1 < ... < c_n) plus, per tail cluster i, ``H d_i + d_i (c_{i+1} - c_i)`` (two bias-free
        maps through its width d_i; c_{n+1} = V). Tied: ``(H + 1) n + V`` (the word vectors
        are the embedding's, see :class:`TiedAdaptiveSoftmax`)."""
        if self.vocab_size == 0:
            return 0
        h, bounds = self.hidden_size, [*self.cutoffs, self.vocab_size]
        n = len(self.cutoffs)
        if self.tie_weights:  # cluster vectors and biases, a bias per word; E is the embedding
            return (h + 1) * n + self.vocab_size
        total = (h + 1) * (bounds[0] + n)
        widths = tail_widths(h, self.div_value, n)
        for d, (lo, hi) in zip(widths, pairwise(bounds), strict=True):
            total += h * d + d * (hi - lo)
        return total


# candidate default cutoffs; :func:`default_cutoffs` keeps those that fit the vocabulary
DEFAULT_CUTOFFS = (2000, 10000, 50000, 250000)


def default_cutoffs(
    vocab_size: int, hidden_size: int, div_value: float = DIV_VALUE
) -> tuple[int, ...]:
    """The adaptive softmax's cutoffs when none are given.

    Every c of 2000, 10000, 50000, 250000 with ``2 c <= V`` (WikiText-2's 33,278 words give
    (2000, 10000), Grave et al.'s choice; PTB's 10,000 give (2000,); WikiText-103's 267,735
    give (2000, 10000, 50000)); a vocabulary under 4,000 gets one cutoff at ``max(1, V // 4)``.
    Clusters whose width ``floor(H / div_value**i)`` would be 0 are dropped (one is always
    kept; the config then says what to change).
    """
    cutoffs = [c for c in DEFAULT_CUTOFFS if 2 * c <= vocab_size] or [max(1, vocab_size // 4)]
    widths = tail_widths(hidden_size, div_value, len(cutoffs))
    return tuple(cutoffs[: max(1, sum(w >= 1 for w in widths))])


def tail_widths(hidden_size: int, div_value: float, clusters: int) -> list[int]:
    """Width of each tail cluster's projection, ``floor(H / div_value**i)`` for i = 1..n (as
    :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` computes it)."""
    return [int(hidden_size // (div_value ** (i + 1))) for i in range(clusters)]


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
    """What every head shares: a recurrent stack ``self.rnn`` read out by ``self.decoder``."""

    rnn: nn.Module
    decoder: nn.Module

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for ``batch_size`` rows (text columns or music pieces)."""
        p = next(self.parameters())
        return self.rnn.zero_state(batch_size, device=device or p.device, dtype=p.dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _TextModel(_RecurrentModel):
    """Token ids in: embedding -> dropout -> recurrent stack -> dropout -> :meth:`readout`.

    Shapes: ``tokens`` is (T, B) of token ids (time first, as the batcher lays them out); the
    state is (num_layers, B, H), or a pair (h, c) for LSTMs.
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
        self.rnn = make_recurrent(
            config.cell,
            config.embed_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            impl=config.impl,
        )

    def forward(
        self, tokens: Tensor, state: State | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """``(logits (T, B, V), state)``; with ``targets`` (T, B) the next token ids,
        ``(nll (T, B), state)``: -log p(targets_t | tokens_<=t), 0 where a target is IGNORE."""
        emb = self.drop(self.embedding(tokens))  # (T, B, D)
        out, state = self.rnn(emb, state)  # (T, B, H)
        return self.readout(self.drop(out), targets), state

    def readout(self, h: Tensor, targets: Tensor | None = None) -> Tensor:
        """Hidden states (..., H) to logits (..., V), or with ``targets`` (...) to the nll (...)."""
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


class TiedAdaptiveSoftmax(nn.Module):
    """An adaptive softmax whose word vectors are the embedding's rows (weight tying, Press &
    Wolf 2017, for the factorisation of Grave et al. 2017).

    With E the (V, H) embedding, b a bias per word and, per tail cluster i, a vector u_i and a
    bias a_i (cutoffs c_1 < ... < c_n, c_{n+1} = V)::

        head:   s = softmax([E[:c_1] h + b[:c_1], u_1 h + a_1, ..., u_n h + a_n])   (c_1 + n,)
        p(w | h) = s[w]                                                  w < c_1
        p(w | h) = s[c_1 + i - 1] * softmax(E[c_i:c_{i+1}] h + b[c_i:c_{i+1}])[w - c_i]

    Every word is scored by its own embedding vector, so a rare word's output vector is trained
    by its inputs too, and the head adds only ``(H + 1) n + V`` parameters. The tail clusters
    are full width (no projection, so no ``div_value``): each tail token costs ``2 H |cluster|``
    multiply-adds, paid only for the positions whose target falls in that cluster.

    Shapes: ``h`` (N, H); ``targets`` (N,) ids in 0..V-1.
    """

    def __init__(self, embedding: nn.Embedding, cutoffs: tuple[int, ...]) -> None:
        super().__init__()
        v, h = embedding.weight.shape
        self.weight = embedding.weight  # (V, H), shared: the checkpoint stores it once
        self.bounds = (*cutoffs, v)
        self.register_buffer("cuts", torch.tensor(cutoffs), persistent=False)
        self.bias = nn.Parameter(torch.empty(v))  # (V,)
        self.cluster_weight = nn.Parameter(torch.empty(len(cutoffs), h))  # (n, H)
        self.cluster_bias = nn.Parameter(torch.empty(len(cutoffs)))  # (n,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Cluster vectors uniform ±0.1, biases zero (the word vectors are the embedding's)."""
        nn.init.uniform_(self.cluster_weight, -0.1, 0.1)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.cluster_bias)

    def _head(self, h: Tensor) -> Tensor:
        """Log-probabilities of the head's ``c_1`` words and ``n`` clusters (N, c_1 + n)."""
        c = self.bounds[0]
        w = torch.cat((self.weight[:c], self.cluster_weight))  # (c_1 + n, H)
        b = torch.cat((self.bias[:c], self.cluster_bias))  # (c_1 + n,)
        return torch.log_softmax(torch.addmm(b, h, w.t()), dim=-1)

    def _tail(self, h: Tensor, i: int) -> Tensor:
        """Log-probabilities within tail cluster i (from 0) (N, c_{i+2} - c_{i+1})."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return torch.log_softmax(torch.addmm(self.bias[lo:hi], h, self.weight[lo:hi].t()), -1)

    def log_prob(self, h: Tensor) -> Tensor:
        """Full log-probabilities (N, V)."""
        head = self._head(h)  # (N, c_1 + n)
        c = self.bounds[0]
        parts = [head[:, :c]]
        for i in range(len(self.bounds) - 1):
            parts.append(head[:, c + i : c + i + 1] + self._tail(h, i))
        return torch.cat(parts, dim=1)

    def forward(self, h: Tensor, targets: Tensor) -> Tensor:
        """``log p(targets | h)`` (N,), each tail cluster evaluated on its own positions only."""
        c = self.bounds[0]
        cluster = torch.bucketize(targets, self.cuts, right=True)  # (N,) 0 = head, i = tail i
        head_index = torch.where(cluster == 0, targets, c + cluster - 1)  # (N,)
        logp = self._head(h).gather(1, head_index[:, None]).squeeze(1)  # (N,)
        for i in range(len(self.bounds) - 1):
            rows = (cluster == i + 1).nonzero().squeeze(1)  # (N_i,)
            if rows.numel() == 0:
                continue
            within = (targets[rows] - self.bounds[i])[:, None]  # (N_i, 1)
            logp = logp.index_add(0, rows, self._tail(h[rows], i).gather(1, within).squeeze(1))
        return logp


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
                config.hidden_size,
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


TextModel = LanguageModel | AdaptiveLanguageModel
SequenceModel = LanguageModel | AdaptiveLanguageModel | PianoRollModel


def build_model(config: LanguageModelConfig) -> SequenceModel:
    """The model that ``config.head`` names: softmax -> LanguageModel, adaptive ->
    AdaptiveLanguageModel, sigmoid -> PianoRollModel."""
    if config.head == "sigmoid":
        return PianoRollModel(config)
    if config.head == "adaptive":
        return AdaptiveLanguageModel(config)
    return LanguageModel(config)


def perplexity(loss: float) -> float:
    """Perplexity = exp(mean cross-entropy in nats); ``inf`` instead of an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
