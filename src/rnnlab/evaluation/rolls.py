"""Exact evaluation of a piano-roll model: NLL per time step over whole pieces, and the
uniform baseline (every note on with probability 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rnnlab.data.rolls import N_PITCHES, nll_sum, pad_pieces
from rnnlab.errors import ConfigError, DataError
from rnnlab.evaluation.text import EvalResult, progress_bar


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_rolls(
    model: torch.nn.Module,
    pieces: Sequence[Tensor],
    *,
    batch_size: int = 16,
    progress: bool = False,
    label: str = "eval",
) -> EvalResult:
    """Exact NLL per time step of ``model`` on ``pieces``: every predicted step scored once,
    each piece from the zero state, summed in float64.

    Pieces are batched by length (padding does not change any piece's score, only the speed).
    With ``progress``, a long pass shows a bar named ``label`` (pieces scored) on stderr.
    """
    if batch_size < 1:
        raise ConfigError(f"evaluation batch size must be positive, got {batch_size}")
    if not pieces:
        raise DataError("no pieces to evaluate")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].size(0))
    total = torch.zeros((), dtype=torch.float64, device=device)
    steps = 0
    bar = progress_bar(len(pieces), label, "piece", progress)
    for start in range(0, len(order), batch_size):
        batch = pad_pieces([pieces[i].to(device) for i in order[start : start + batch_size]])
        logits, _ = model(batch.inputs, None)  # (T - 1, B, 88)
        total += nll_sum(logits, batch.targets, batch.mask).double()
        steps += sum(n - 1 for n in batch.lengths)
        if bar is not None:
            bar.update(len(batch.lengths))
    if bar is not None:
        bar.close()
    model.train(was_training)
    return EvalResult(loss=total.item() / steps, perplexity=None, tokens=steps, unit="step")


def uniform_nll() -> float:
    """NLL per step of the model that gives every note probability 1/2: 88 ln 2 nats."""
    return N_PITCHES * math.log(2)
