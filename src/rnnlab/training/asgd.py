"""NT-ASGD: averaged SGD with a non-monotone trigger (Merity et al. 2018, section 3; Polyak &
Juditsky 1992), and the weight average it keeps.

The run trains with plain SGD and validates at every epoch end. It switches to averaging when
the validation loss has not improved over the last ``n`` checks (``n`` = ``optim.nonmono``, 5 by
default), AWD-LSTM's rule::

    switch at check k  iff  k > n  and  L_k > min(L_1, ..., L_{k-n})     (:func:`nonmono_trigger`)

From then on the SGD steps go on unchanged (constant rate) and the iterates are averaged::

    after update m since the switch:  avg <- avg + (w_m - avg) / max(1, m - 1)

that is, avg = w_1 after the first update and the mean of w_2 .. w_m after the m-th: exactly
``torch.optim.ASGD`` with ``lambd = 0`` and ``t0 = 0``, as AWD-LSTM uses it (torch's weight
``mu`` for step m is 1 / max(1, m - 1 - t0), so its first iterate is overwritten). Validation,
the best checkpoint and every checkpoint's ``model.*`` tensors hold the *average*; the iterate SGD
continues from is stored beside it (``asgd.raw.*``) with the switch step in the progress, so a
resumed run continues bit for bit. ``finetune`` mode (AWD-LSTM's ``finetune.py``) averages from
the first step of a run started from a trained (averaged) model and ends the run at the first
epoch end where the same test fires.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def nonmono_trigger(history: Sequence[float], loss: float, n: int) -> bool:
    """Whether ``loss`` (this check's validation loss) fires the non-monotone trigger, given
    ``history``, the losses of the earlier checks in order: more than ``n`` earlier checks and
    ``loss`` worse than the best of all but the last ``n`` of them."""
    return len(history) > n and loss > min(history[:-n])


class Averager:
    """The running average of ``model``'s parameters over the SGD steps since :meth:`start`."""

    def __init__(self, model: nn.Module) -> None:
        self.named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.avg: list[Tensor] | None = None
        self.count = 0

    @property
    def active(self) -> bool:
        return self.avg is not None

    def start(self, count: int = 0) -> None:
        """Begin averaging (the average is the next update's weights); ``count`` updates done."""
        self.avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for _, p in self.named]
        self.count = count

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights in (call after every optimizer step); no-op when off."""
        if self.avg is None:
            return
        self.count += 1
        for a, (_, p) in zip(self.avg, self.named, strict=True):
            a.add_(p.detach() - a, alpha=1.0 / max(1, self.count - 1))

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; the iterates are restored bit
        for bit afterwards. A plain block when averaging is off."""
        if self.avg is None:
            yield
            return
        raw = self.raw_weights()
        with torch.no_grad():
            for a, (_, p) in zip(self.avg, self.named, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), r in zip(self.named, raw.values(), strict=True):
                    p.copy_(r)

    def raw_weights(self) -> dict[str, Tensor]:
        """Copies of the current (iterate) weights by parameter name."""
        return {name: p.detach().clone() for name, p in self.named}

    @torch.no_grad()
    def restore(self, count: int, raw: dict[str, Tensor]) -> None:
        """After a checkpoint's ``model.*`` (the average) was loaded into the model: take it as
        the average of ``count`` updates and put the iterates ``raw`` back into the model."""
        self.avg = [p.detach().clone() for _, p in self.named]
        self.count = count
        for name, p in self.named:
            p.copy_(raw[name])
