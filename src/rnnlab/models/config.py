"""What defines a model: :class:`LanguageModelConfig` (cell, sizes, dropout, tying, output head)
and the adaptive softmax's cutoffs and tail widths; parameter counts without building a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from rnnlab.errors import ConfigError
from rnnlab.nn.registry import get_cell
from rnnlab.strict import from_fields

HEADS = ("softmax", "adaptive", "sigmoid")


# AWD-LSTM's regularisers (Merity et al. 2018) as LanguageModelConfig fields, all rates in [0, 1)
AWD_OPTIONS = ("dropout_input", "dropout_hidden", "dropout_output", "dropout_embed", "weight_drop")


IGNORE = -100  # a target that is not scored (padding); its nll is 0


DIV_VALUE = 4.0  # the adaptive softmax's default width divisor per tail cluster (Grave et al.)


@dataclass
class LanguageModelConfig:
    """Everything needed to rebuild a :class:`LanguageModel` (saved in every checkpoint).

    Attributes:
        vocab_size: number of symbols V of the softmax (0 in a run config: "take it from the
            vocabulary"; it must be set before a model is built).
        cell: one of ``rnnlab.nn.registry.CELL_NAMES`` (rnn, rnn-relu, gru, gru-reset-before,
            lstm, lstm-fb1).
        embed_size: embedding width D.
        hidden_size: recurrent width H (of every layer but the last when ``last_hidden_size``
            is set).
        num_layers: stacked recurrent layers.
        last_hidden_size: the last layer's width O; 0 (default) is H. AWD-LSTM ties a 400-wide
            embedding to a 1150-wide stack by making its last layer 400 wide. With O != H the
            stack is two modules (``rnn``: the first L - 1 layers, ``rnn_last``: the last) and
            the state, one (L, B, max(H, O)) tensor per kind as for any stack, holds each
            layer's state in its first columns, zeros after (:meth:`layer_sizes`).
        dropout: dropout on the embedding output, between layers and before the decoder
            (Zaremba et al. 2014: non-recurrent connections only).
        tie_weights: share the decoder matrix with the embedding (Press & Wolf 2017; Inan et al.
            2017). Needs ``embed_size`` equal to the last layer's width (:attr:`output_size`).
        init_range: if set, every weight starts uniform in ±init_range (Zaremba et al. 2014);
            otherwise torch's defaults (and embedding/decoder uniform ±0.1).
        impl: "auto" (fused torch kernel where the equations allow), "explicit", "fused" or
            "cpu" (rnnlab's window kernel for the GRU/RNN on CPU: :mod:`rnnlab.nn.fused_cpu`).
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
        dropout_input, dropout_hidden, dropout_output: AWD-LSTM's locked (variational)
            dropout, one mask per sequence shared by all steps (:mod:`rnnlab.nn.variational`):
            on the embeddings, between layers (the stack then runs one layer at a time; not
            with ``dropout``, which also acts there) and on the last layer's output.
        dropout_embed: whole words dropped from the embedding matrix (rows, rescaled).
        weight_drop: DropConnect on the hidden-to-hidden matrices, one mask per window
            (:mod:`rnnlab.nn.weight_drop`). All five: text heads only, 0 (default) is off.
    """

    vocab_size: int = 0
    cell: str = "lstm"
    embed_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    last_hidden_size: int = 0
    dropout: float = 0.0
    tie_weights: bool = False
    init_range: float | None = None
    impl: str = "auto"
    head: str = "softmax"
    cutoffs: tuple[int, ...] = ()
    div_value: float = DIV_VALUE
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    dropout_output: float = 0.0
    dropout_embed: float = 0.0
    weight_drop: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ConfigError(f"vocab_size must be a non-negative integer, got {self.vocab_size!r}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose softmax, adaptive or sigmoid")
        for name in ("embed_size", "hidden_size", "num_layers", "last_hidden_size"):
            value = getattr(self, name)
            least = 0 if name in ("embed_size", "last_hidden_size") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self._check_last_hidden()
        # embed_size 0 (frames fed directly) is for piano rolls; a run config not yet bound to
        # its data (vocab_size 0) may carry it, a bound text model may not.
        if self.embed_size == 0 and self.head != "sigmoid" and self.vocab_size > 0:
            raise ConfigError(
                "embed size 0 feeds piano-roll frames directly; a text model needs --embed N"
            )
        if self.head == "sigmoid" and self.tie_weights:
            raise ConfigError("weight tying is for the softmax head; drop --tie for piano rolls")
        get_cell(self.cell)  # ConfigError for an unknown cell, listing the known ones
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        self._check_awd()
        if self.tie_weights and self.embed_size != self.output_size:
            if self.narrowed:
                raise ConfigError(
                    f"weight tying needs embed size == the last layer's width (got "
                    f"{self.embed_size} and {self.output_size}); set --embed {self.output_size} "
                    "or drop --tie"
                )
            raise ConfigError(
                f"weight tying needs embed size == hidden size (got {self.embed_size} and "
                f"{self.hidden_size}); set --embed {self.hidden_size} (or --last-hidden "
                f"{self.embed_size}) or drop --tie"
            )
        if self.init_range is not None and not self.init_range > 0:
            raise ConfigError(f"init_range must be positive, got {self.init_range}")
        self._check_adaptive()

    @property
    def output_size(self) -> int:
        """The last layer's width O: what the decoder reads."""
        return self.last_hidden_size or self.hidden_size

    @property
    def narrowed(self) -> bool:
        """Whether the last layer's width differs from the others' (``last_hidden_size``)."""
        return self.output_size != self.hidden_size

    def layer_sizes(self) -> list[int]:
        """Each layer's width, first to last: ``[H, ..., H, O]``."""
        return [self.hidden_size] * (self.num_layers - 1) + [self.output_size]

    def stack_text(self) -> str:
        """The stack's shape for one line of text: ``3x1150``, or ``3x1150 (the last 400)``."""
        text = f"{self.num_layers}x{self.hidden_size}"
        return f"{text} (the last {self.output_size})" if self.narrowed else text

    def state_size(self) -> int:
        """The width of the state tensors, max(H, O): each layer's state fills its first
        columns, the rest are zeros."""
        return max(self.layer_sizes())

    def _check_last_hidden(self) -> None:
        """``last_hidden_size``: a stack of 2 or more layers, text heads only."""
        if not self.narrowed:
            return
        if self.num_layers < 2:
            raise ConfigError(
                f"--last-hidden sets the last of several layers; with one layer use --hidden "
                f"{self.last_hidden_size}"
            )
        if self.head == "sigmoid":
            raise ConfigError("--last-hidden is for text models; drop it for piano rolls")

    def awd_options(self) -> dict[str, float]:
        """The AWD-LSTM regularisers that are on (name -> rate); empty for a plain model."""
        return {name: getattr(self, name) for name in AWD_OPTIONS if getattr(self, name)}

    def _check_awd(self) -> None:
        """The AWD-LSTM rates: numbers in [0, 1), text heads only, no two dropouts in one place."""
        for name in AWD_OPTIONS:
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{flag} must be a number in [0, 1), got {value!r}")
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{flag} must be in [0, 1), got {value}")
        on = self.awd_options()
        if on and self.head == "sigmoid":
            raise ConfigError(
                f"--{next(iter(on)).replace('_', '-')} is for text models; drop it for piano rolls"
            )
        if self.dropout and self.dropout_hidden:
            raise ConfigError(
                f"--dropout ({self.dropout}) and --dropout-hidden ({self.dropout_hidden}) both act "
                "between layers, from the flags or a preset; set one of them to 0"
            )

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
            self.cutoffs = default_cutoffs(v, self.output_size, d)
        if self.cutoffs[-1] > v - 1:
            raise ConfigError(
                f"cutoffs must lie in 1..{v - 1} for a vocabulary of {v}, got "
                f"{list(self.cutoffs)}; lower them or leave --cutoffs out for the default"
            )
        widths = tail_widths(self.output_size, d, len(self.cutoffs))
        if widths[-1] < 1 and not self.tie_weights:
            raise ConfigError(
                f"tail cluster {len(widths)} of the adaptive softmax would have width "
                f"floor({self.output_size} / {d:g}^{len(widths)}) = 0; lower --div-value, use "
                f"fewer --cutoffs or a larger --{'last-hidden' if self.narrowed else 'hidden'}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON gives them back (``cutoffs`` a list)."""
        return dict(asdict(self), cutoffs=list(self.cutoffs))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LanguageModelConfig:
        """The config ``data`` describes (missing keys take their defaults); an unknown key or a
        value of the wrong type is a one-line :class:`ConfigError` naming it."""
        return from_fields(cls, data, section="model")

    def num_parameters(self) -> int:
        """Parameter count without building the model (used to match sizes across cells).

        ``V*E`` (embedding, or the bias-free input map of frames) + ``sum_l G*H_l*(I_l + H_l + 2)``
        + ``V*O`` (unless tied) + ``V``, with H_l each layer's width (:meth:`layer_sizes`), I_l
        the width below it and O the last's; with ``embed_size`` 0 the first layer reads the
        V-wide frame directly (I_0 = V) and there is no input map. The adaptive head replaces
        the last two terms (see :meth:`_adaptive_parameters`).
        """
        g = get_cell(self.cell).gates
        rec, inp = 0, self.embed_size or self.vocab_size
        for h in self.layer_sizes():
            rec += g * h * (inp + h + 2)
            inp = h
        emb = self.vocab_size * self.embed_size
        if self.head == "adaptive":
            return emb + rec + self._adaptive_parameters()
        dec = self.vocab_size * (0 if self.tie_weights else self.output_size) + self.vocab_size
        return emb + rec + dec

    def _adaptive_parameters(self) -> int:
        """The adaptive head: ``(H + 1)(c_1 + n)`` (the head's map and bias, cutoffs
        c_1 < ... < c_n) plus, per tail cluster i, ``H d_i + d_i (c_{i+1} - c_i)`` (two bias-free
        maps through its width d_i; c_{n+1} = V). Tied: ``(H + 1) n + V`` (the word vectors
        are the embedding's, see :class:`TiedAdaptiveSoftmax`)."""
        if self.vocab_size == 0:
            return 0
        h, bounds = self.output_size, [*self.cutoffs, self.vocab_size]
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
