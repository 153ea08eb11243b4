"""Activation regularisation (AR) and temporal activation regularisation (TAR) of AWD-LSTM
(Merity et al. 2018, section 4.6; Merity, McCann & Socher 2017), penalties added to a training
window's loss on the last layer's outputs ``h`` (T, B, H)::

    AR  = alpha * mean(m * h_t)^2                   m * h: the outputs after the output dropout
    TAR = beta  * mean((h_t - h_{t-1})^2)           h: the outputs before it; t = 2..T of the window

AR keeps the activations small; TAR keeps consecutive hidden states close (slowly changing).
The means run over every element (steps, columns, units), as AWD-LSTM computes them. Both are
training-only: the logged training loss and every evaluation are the plain cross-entropy.
"""

from __future__ import annotations

from torch import Tensor


def activation_penalty(dropped: Tensor, alpha: float) -> Tensor:
    """``alpha * mean(dropped**2)``: AR on the dropped last-layer outputs (T, B, H)."""
    return alpha * dropped.pow(2).mean()


def temporal_penalty(hidden: Tensor, beta: float) -> Tensor:
    """``beta * mean((h[1:] - h[:-1])**2)``: TAR on the undropped outputs (T, B, H); 0 for a
    window of one step (no pair of consecutive states)."""
    if hidden.size(0) < 2:
        return hidden.new_zeros(())
    return beta * (hidden[1:] - hidden[:-1]).pow(2).mean()


def penalties(hidden: Tensor, dropped: Tensor, alpha: float, beta: float) -> Tensor:
    """AR + TAR of one window (each only when its coefficient is nonzero)."""
    total = hidden.new_zeros(())
    if alpha:
        total = total + activation_penalty(dropped, alpha)
    if beta:
        total = total + temporal_penalty(hidden, beta)
    return total
