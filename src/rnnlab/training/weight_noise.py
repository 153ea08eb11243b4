"""Weight noise: train on Gaussian-perturbed weights, update the clean ones.

Graves (2011, "Practical Variational Inference for Neural Networks"; 2013 for speech) regularises
recurrent networks by adding fixed-variance Gaussian noise to the weights during training; Chung
et al. (2014) used it with standard deviation 0.075 on their music models. The exact scheme here,
per training step::

    w_clean <- w                                  # a copy of every parameter
    w <- w_clean + eps,   eps ~ N(0, sigma^2 I)   # fresh noise for every parameter element
    forward, loss, backward                       # the gradient g is taken at w_clean + eps
    w <- w_clean                                  # restored bit for bit (a copy, not w - eps)
    clip g; optimizer step on w with g            # the update moves the clean weights

All parameters are perturbed (weights and biases of every layer). The noise is drawn from torch's
global generator, which the checkpoints save, so a resumed run draws the same noise. Evaluation
and validation use the clean weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.errors import ConfigError


class WeightNoise:
    """Perturb ``model``'s parameters with N(0, std^2) for one step, then restore them.

    Usage: ``noise.add()`` before the forward pass, ``noise.remove()`` after ``backward`` and
    before the optimizer step. ``std`` 0 makes both no-ops (no random numbers are drawn).
    """

    def __init__(self, model: nn.Module, std: float) -> None:
        if not std >= 0:
            raise ConfigError(f"weight noise must be >= 0, got {std}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.std = float(std)
        self._clean: list[Tensor] | None = None

    @torch.no_grad()
    def add(self) -> None:
        if self.std == 0:
            return
        if self._clean is not None:
            raise RuntimeError("weight noise added twice without remove()")
        self._clean = [p.detach().clone() for p in self.params]
        for p in self.params:
            p.add_(torch.randn_like(p), alpha=self.std)

    @torch.no_grad()
    def remove(self) -> None:
        if self._clean is None:
            return
        for p, clean in zip(self.params, self._clean, strict=True):
            p.copy_(clean)
        self._clean = None
