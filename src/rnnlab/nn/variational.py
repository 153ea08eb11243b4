"""Variational ("locked") dropout and embedding dropout (Gal & Ghahramani 2016), as AWD-LSTM
uses them (Merity et al. 2018, sections 4.1-4.2), and running a recurrent stack one layer at a
time so that locked dropout can act between its layers.

* :func:`locked_dropout`: one Bernoulli(1 - p) mask per sequence and feature, the same at every
  time step, kept units scaled by 1/(1 - p). On the embeddings (AWD's ``dropouti``), between
  layers (``dropouth``) and on the last layer's output (``dropout``).
* :func:`embedding_dropout`: whole words dropped: one mask per row of the embedding matrix
  (per forward pass), kept rows scaled by 1/(1 - p), so every occurrence of a dropped word in
  the window reads a zero vector (AWD's ``dropoute``).
* :func:`forward_layerwise`: the stack of :class:`~rnnlab.nn.recurrent.Recurrent` run layer by
  layer with locked dropout on each layer's output but the last. Each layer runs through a
  one-layer view of the same class whose weights are the stack's layer ``k`` (read through
  :meth:`~rnnlab.nn.recurrent.Recurrent.weight`, so weight drop applies), fused or explicit as
  the stack would; the parameters and their names stay the stack's.

All are identities in evaluation mode or with p = 0 (no random numbers drawn).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import ConfigError
from rnnlab.nn.recurrent import Recurrent, State


def _check_p(p: float, what: str) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"{what} must be in [0, 1), got {p}")


def locked_dropout(x: Tensor, p: float, training: bool, batch_first: bool = False) -> Tensor:
    """``x`` (T, B, F) (or (B, T, F) with ``batch_first``) times one mask (1, B, F) drawn once and
    shared by all T steps, the kept units scaled by 1/(1 - p)."""
    _check_p(p, "locked dropout")
    if not training or p == 0.0:
        return x
    shape = (x.size(0), 1, x.size(2)) if batch_first else (1, x.size(1), x.size(2))
    mask = x.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask


def embedding_dropout(weight: Tensor, tokens: Tensor, p: float, training: bool) -> Tensor:
    """The embedding lookup of ``tokens`` (...) in ``weight`` (V, E) with whole rows dropped: each
    word's row is zero with probability p for this pass, the others scaled by 1/(1 - p).
    Returns (..., E)."""
    _check_p(p, "embedding dropout")
    if not training or p == 0.0:
        return F.embedding(tokens, weight)
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p).div_(1.0 - p)  # (V, 1)
    return F.embedding(tokens, weight * mask)


# the constructor options, besides the shared ones, that each family's layer takes
_FAMILY_OPTIONS = {"rnn": ("nonlinearity",), "gru": ("reset",), "lstm": ("forget_bias",)}


def _layer_views(rnn: Recurrent) -> list[Recurrent]:
    """One-layer layers of ``rnn``'s class, one per layer, built once on the meta device (no
    memory) and cached on ``rnn`` outside its submodules (never in a state_dict)."""
    views = rnn.__dict__.get("_layer_views")
    if views is not None:
        return views
    out_size = rnn.proj_size or rnn.hidden_size
    options = {name: getattr(rnn, name) for name in _FAMILY_OPTIONS[rnn.family]}
    if rnn.family == "lstm":
        options["proj_size"] = rnn.proj_size
    views = [
        type(rnn)(
            input_size=rnn.input_size if k == 0 else out_size * rnn.num_directions,
            hidden_size=rnn.hidden_size,
            num_layers=1,
            bias=rnn.bias,
            batch_first=rnn.batch_first,
            dropout=0.0,
            bidirectional=rnn.bidirectional,
            device="meta",
            impl=rnn.impl,
            **options,
        )
        for k in range(rnn.num_layers)
    ]
    object.__setattr__(rnn, "_layer_views", views)
    return views


def forward_layerwise(
    rnn: Recurrent, x: Tensor, hx: State | None, p: float, training: bool
) -> tuple[Tensor, State]:
    """``rnn(x, hx)`` computed one layer at a time, with :func:`locked_dropout` (``p``) on the
    output of every layer but the last (instead of the stack's own ``dropout``, which must be
    0). ``x``: a padded (T, B, I) tensor (or (B, T, I) with ``batch_first``). Returns the last
    layer's output, undropped, and the final states in the structure ``rnn`` returns."""
    _check_p(p, "locked dropout between layers")
    if rnn.dropout and training:
        raise ConfigError(
            "the stack's own dropout and locked dropout between layers both act there; use one"
        )
    d = rnn.num_directions
    if hx is None:
        states = None
    else:
        states = hx if isinstance(hx, tuple) else (hx,)
    finals: list[tuple[Tensor, ...]] = []
    for k, view in enumerate(_layer_views(rnn)):
        view.train(training)
        view.weight_overrides = {name: rnn.weight(own) for name, own in _paired_names(view, rnn, k)}
        layer_hx = None
        if states is not None:
            parts = tuple(s[k * d : (k + 1) * d] for s in states)
            layer_hx = parts if len(parts) == 2 else parts[0]
        try:
            x, final = view(x, layer_hx)
        finally:
            view.weight_overrides = {}
        finals.append(final if isinstance(final, tuple) else (final,))
        if k < rnn.num_layers - 1:
            x = locked_dropout(x, p, training, rnn.batch_first)
    stacked = tuple(torch.cat(kind) for kind in zip(*finals, strict=True))
    return x, (stacked if len(stacked) == 2 else stacked[0])


def _paired_names(view: Recurrent, rnn: Recurrent, k: int) -> list[tuple[str, str]]:
    """(the view's name, the stack's name) of every weight of layer ``k``, both directions."""
    pairs = []
    for reverse in (False, True)[: rnn.num_directions]:
        pairs += list(zip(view.weight_names(0, reverse), rnn.weight_names(k, reverse), strict=True))
    return pairs
