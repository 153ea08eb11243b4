"""Weight drop: DropConnect (Wan et al. 2013) on the hidden-to-hidden weights of a recurrent stack,
as AWD-LSTM regularises them (Merity et al. 2018, "Regularizing and Optimizing LSTM Language
Models", section 2).

Per forward pass (one TBPTT window) and per recurrent matrix ``W_hh`` of every layer and
direction, one mask ``M`` with entries ~ Bernoulli(1 - p) is drawn and the pass runs with::

    W_hh' = M * W_hh / (1 - p)          # the same W_hh' at every time step of the window

The dropped matrix is handed to the layer through :meth:`rnnlab.nn.recurrent.Recurrent.weight`
(its ``weight_overrides``), so the fused kernel (torch's CPU kernel, cuDNN) still runs the whole
window in one call, and the explicit loop reads the same matrix. Gradients flow through the mask
to the raw parameter, which is what the optimizer updates and what a checkpoint stores. In
evaluation mode, or with ``p`` 0, nothing is drawn and the raw weights are used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import ConfigError
from rnnlab.nn.recurrent import Recurrent


def hidden_weight_names(rnn: Recurrent) -> list[str]:
    """The names of ``rnn``'s hidden-to-hidden matrices (``weight_hh_l{k}[_reverse]``), layer by
    layer, forward direction first."""
    return [
        rnn.weight_names(k, reverse)[1]
        for k in range(rnn.num_layers)
        for reverse in (False, True)[: rnn.num_directions]
    ]


@contextmanager
def weight_drop(rnn: Recurrent, p: float, training: bool) -> Iterator[dict[str, Tensor]]:
    """Within the block, ``rnn`` runs with its ``W_hh`` matrices dropped (one fresh mask each,
    drawn on entry) if ``training`` and ``p`` > 0; yields the dropped matrices by name (empty
    when off). The raw parameters are never modified."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"weight drop must be in [0, 1), got {p}")
    if not training or p == 0.0:
        yield {}
        return
    dropped = {
        name: F.dropout(getattr(rnn, name), p, training=True) for name in hidden_weight_names(rnn)
    }
    previous = rnn.__dict__.get("weight_overrides") or {}
    rnn.weight_overrides = {**previous, **dropped}
    try:
        with warnings.catch_warnings():
            # cuDNN compacts weights that are not in its flat buffer (the dropped ones never
            # are) and says so on every call; that copy is the price of the fused kernel here
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            yield dropped
    finally:
        rnn.weight_overrides = previous
