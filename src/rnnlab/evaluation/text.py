"""Exact evaluation: token-weighted cross-entropy, perplexity and bits per character.

Perplexity is ``exp`` of the mean cross-entropy (in nats) over every predicted token of a split;
bits per character is the same mean divided by ln 2. Evaluation is exact: every one of the
N - 1 targets of an N-token stream is scored exactly once, with the hidden state carried along
each column. The stream is laid out in ``batch_size`` columns of equal length (the last ones
padded and masked), so no token is dropped, unlike a plain ``batchify``::

    stream  w0 w1 w2 ... w(N-1)
    column b covers inputs  w[bL] .. w[bL+L-1]   and targets  w[bL+1] .. w[bL+L]   (L = ceil((N-1)/B))

Each column starts from the zero state; ``batch_size=1`` gives the strictest figure (every token
sees its whole history), larger batches are faster and differ only at column starts.

A long evaluation can show a progress bar on stderr (:func:`progress_bar`): it appears only once
the pass has run :data:`PROGRESS_DELAY_S` seconds, so short ones stay silent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from rnnlab.errors import ConfigError, DataError
from rnnlab.models.base import detach_state, perplexity
from rnnlab.models.config import IGNORE
from rnnlab.models.text import TextModel

PROGRESS_DELAY_S = 3.0  # an evaluation shows its progress bar once it has run this long


def progress_bar(total: int, label: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr for an evaluation pass of ``total`` units (``unit``), shown only after
    :data:`PROGRESS_DELAY_S` seconds and removed when done; None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit=unit,
        unit_scale=True,
        delay=PROGRESS_DELAY_S,
        leave=False,
        dynamic_ncols=True,
    )


@dataclass
class EvalResult:
    """Mean negative log-likelihood ``loss`` (nats) over ``tokens`` predictions.

    ``unit`` is ``"token"`` for text (``perplexity`` = exp(loss), ``bpc`` for characters) or
    ``"step"`` for piano rolls (:mod:`rnnlab.data.rolls`), where ``loss`` is the NLL per time step
    and ``tokens`` counts predicted time steps; there is no perplexity then.
    """

    loss: float
    perplexity: float | None
    tokens: int
    bpc: float | None = None
    unit: str = "token"

    def to_dict(self) -> dict[str, float | int | None]:
        """``{loss, perplexity, tokens[, bpc]}`` for text; ``{loss, nll_per_step, steps}`` for
        piano rolls."""
        if self.unit == "step":
            return {"loss": self.loss, "nll_per_step": self.loss, "steps": self.tokens}
        d = asdict(self)
        del d["unit"]
        if d["bpc"] is None:
            del d["bpc"]
        return d


def eval_layout(
    ids: Tensor, batch_size: int, unscored: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Inputs and masked targets (L, B) covering all N - 1 predictions of ``ids`` exactly once
    (``unscored``: a (N,) bool mask of tokens read as context but not scored as targets)."""
    n = ids.numel() - 1
    if n < 1:
        raise DataError("the evaluation text has fewer than two tokens; nothing to predict")
    b = max(1, min(batch_size, n))
    length = math.ceil(n / b)
    inputs = torch.zeros(b * length, dtype=torch.long)
    targets = torch.full((b * length,), IGNORE, dtype=torch.long)
    inputs[:n] = ids[:n]
    targets[:n] = ids[1 : n + 1]
    if unscored is not None:
        targets[:n][unscored[1 : n + 1]] = IGNORE
    # Column b holds positions b*L .. b*L+L-1: reshape (B, L) then transpose to time-major.
    return inputs.view(b, length).t().contiguous(), targets.view(b, length).t().contiguous()


@torch.no_grad()
def evaluate(
    model: TextModel,
    ids: Tensor,
    *,
    batch_size: int = 10,
    bptt: int = 100,
    level: str | None = None,
    progress: bool = False,
    label: str = "eval",
    unscored: Tensor | None = None,
) -> EvalResult:
    """Exact mean cross-entropy of ``model`` on the 1-D id stream ``ids``.

    ``unscored``: a (N,) bool mask of tokens that are read but not scored (a titled corpus's
    titles, :attr:`rnnlab.data.dataset.LMData.unscored`); the mean is over the rest.

    The model scores the targets itself (``model(x, state, targets=y)`` gives the nll (L, B),
    0 at the padding), so the adaptive softmax never builds the (L, B, V) distribution. With
    ``progress``, a pass longer than :data:`PROGRESS_DELAY_S` shows a bar named ``label``
    (tokens scored) on stderr.
    """
    if batch_size < 1 or bptt < 1:
        raise ConfigError(
            f"evaluation batch size and bptt must be positive, got {batch_size} and {bptt}"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs, targets = eval_layout(ids, batch_size, unscored)
    inputs, targets = inputs.to(device), targets.to(device)
    state = model.init_state(inputs.size(1))
    total = torch.zeros((), dtype=torch.float64, device=device)
    n = int((targets != IGNORE).sum())
    if n < 1:
        raise DataError("the evaluation text has no scored tokens; nothing to predict")
    bar = progress_bar(n, label, "tok", progress)
    for start in range(0, inputs.size(0), bptt):
        x = inputs[start : start + bptt]
        y = targets[start : start + bptt]
        nll, state = model(x, state, targets=y)  # (L, B)
        state = detach_state(state)
        total += nll.double().sum()
        if bar is not None:
            bar.update(int((y != IGNORE).sum()))
    if bar is not None:
        bar.close()
    model.train(was_training)
    loss = total.item() / n
    bpc = loss / math.log(2) if level == "char" else None
    return EvalResult(loss=loss, perplexity=perplexity(loss), tokens=n, bpc=bpc)


@dataclass
class TokenScore:
    token: str
    logprob: float  # natural log of p(token | history)


@torch.no_grad()
def score_tokens(
    model: TextModel, context_id: int, ids: list[int], itos: list[str]
) -> list[TokenScore]:
    """Log-probability of each id given all before it, after a one-token context.

    The context is the boundary symbol the model saw between training sentences (``<eos>`` for
    word models, a newline for character models), so the first token is scored too.
    """
    if not ids:
        raise DataError("the text to score has no tokens")
    model.eval()
    device = next(model.parameters()).device
    seq = torch.tensor([context_id, *ids], dtype=torch.long, device=device).unsqueeze(1)  # (N+1, 1)
    logits, _ = model(seq[:-1], model.init_state(1))
    logp = torch.log_softmax(logits.float().squeeze(1), dim=-1)  # (N, V)
    picked = logp.gather(1, seq[1:]).squeeze(1).tolist()
    return [TokenScore(itos[i], lp) for i, lp in zip(ids, picked, strict=True)]


@dataclass
class TokenSurprisal:
    """One token of a scored text, as the playground shows it: ``logprob`` is
    :math:`\\log p(\\text{token} \\mid \\text{history})` (nats; the surprisal is its negative),
    ``alternatives`` the model's ``top`` likeliest tokens at that position with their
    probabilities, likeliest first (the token itself among them when it ranks there)."""

    token: str
    logprob: float
    alternatives: list[tuple[str, float]]

    @property
    def surprisal(self) -> float:
        """:math:`-\\log p` in nats."""
        return -self.logprob

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "surprisal": self.surprisal,
            "p": math.exp(self.logprob),
            "alternatives": [{"token": t, "p": p} for t, p in self.alternatives],
        }


@torch.no_grad()
def score_surprisal(
    model: TextModel,
    context_id: int,
    ids: list[int],
    itos: list[str],
    *,
    top: int = 5,
    chunk: int = 256,
) -> list[TokenSurprisal]:
    """Each id's log-probability given all before it (after the one-token ``context_id``, as
    :func:`score_tokens`), with the ``top`` likeliest tokens at its position.

    The text is read in windows of ``chunk`` tokens with the state carried, so a long text never
    builds more than a (chunk, V) distribution; the sum of the log-probabilities is exactly the
    negative of what :func:`evaluate` totals over the same stream at ``batch_size=1``.
    """
    if not ids:
        raise DataError("the text to score has no tokens")
    if top < 0 or chunk < 1:
        raise ConfigError(f"top must be >= 0 and chunk >= 1, got {top} and {chunk}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    seq = torch.tensor([context_id, *ids], dtype=torch.long, device=device)  # (N+1,)
    state = model.init_state(1)
    out: list[TokenSurprisal] = []
    k = min(top, len(itos))
    for start in range(0, len(ids), chunk):
        stop = min(start + chunk, len(ids))
        x = seq[start:stop].unsqueeze(1)  # (L, 1): the inputs
        y = seq[start + 1 : stop + 1]  # (L,): the tokens they predict
        logits, state = model(x, state)  # (L, 1, V)
        logp = torch.log_softmax(logits.float().squeeze(1), dim=-1)  # (L, V)
        picked = logp.gather(1, y.unsqueeze(1)).squeeze(1).tolist()
        best_lp, best_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
        best = zip(best_lp.exp().tolist(), best_ids.tolist(), strict=True)
        for token, lp, (ps, js) in zip(y.tolist(), picked, best, strict=True):
            alts = [(itos[j], p) for p, j in zip(ps, js, strict=True)]
            out.append(TokenSurprisal(itos[token], lp, alts))
    model.train(was_training)
    return out
