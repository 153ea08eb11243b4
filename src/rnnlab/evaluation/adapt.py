"""Evaluation that adapts to the text being evaluated: the neural cache and dynamic evaluation.

**The neural cache** (Grave et al. 2017, "Improving neural language models with a continuous
cache") keeps, per column of the evaluation stream, the last ``size`` hidden states h_i of the
last recurrent layer with the token x_(i+1) that followed each. The next token's probability is
mixed with a pointer distribution over that cache::

    p_cache(w | h_t) = sum_{i in cache, x_(i+1) = w} exp(theta h_t . h_i) / sum_{i in cache} exp(theta h_t . h_i)
    p(w | h_t)       = (1 - lambda) p_model(w | h_t) + lambda p_cache(w | h_t)

Only the target's probability is needed to score it, so the adaptive heads keep their fast path
(p_model(y) from the head, p_cache(y) from the cache); where the cache is still empty (the first
token of a column) the model's probability is used alone. The cache is carried from one window
to the next exactly as the hidden state is, and tokens read but not scored (titles) still enter
it (their next token is known context).

**Dynamic evaluation** (Mikolov 2012; Krause et al. 2018, "Dynamic evaluation of neural sequence
models") scores each window of ``bptt`` steps first and then takes one gradient step on that
window's mean loss, so every token is scored by weights that have learned only from the tokens
before it. Two updates (``method``), both decaying toward the trained weights theta_0:

* ``rms`` (Krause et al.): ``theta += d * (theta_0 - theta) - lr * g / (RMS + eps)`` with RMS the
  root mean square of each parameter's gradient collected on the run's training data
  (:func:`gradient_rms`: the first ``stat_windows`` windows of the training split, the model in
  eval mode, 100 by default; ``stat_windows=0`` is the paper's whole pass over the training set,
  which on PTB takes minutes and wants rates about 3 times larger) and a per-parameter decay
  ``d = min(1, decay * RMS / mean(RMS))``;
* ``sgd`` (Mikolov): ``theta += decay * (theta_0 - theta) - lr * g``.

The model object is adapted in memory only; the run's files are never written. With
``lr = 0`` and ``lambda = 0`` both reduce exactly to static evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from rnnlab.errors import ConfigError, DataError
from rnnlab.evaluation.text import EvalResult, eval_layout, progress_bar
from rnnlab.models.base import detach_state, perplexity
from rnnlab.models.config import IGNORE
from rnnlab.models.text import TextModel

DYNAMIC_METHODS = ("rms", "sgd")
RMS_EPS = 1e-5  # added to each parameter's gradient RMS in the rms update
DEFAULT_LR = {"rms": 1e-4, "sgd": 0.1}  # untuned starting points (tuning picks its own)


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")


@dataclass(frozen=True)
class CacheSettings:
    """The neural cache: ``size`` hidden states kept per column, the sharpness ``theta`` of its
    pointer distribution and the mixture weight ``lam`` (lambda) of the cache."""

    size: int = 500
    theta: float = 0.3
    lam: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"--cache-size must be a positive integer, got {self.size}")
        _finite("--cache-theta", self.theta)
        _finite("--cache-lambda", self.lam)
        if self.theta < 0:
            raise ConfigError(f"--cache-theta must be 0 or more, got {self.theta}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"--cache-lambda must be between 0 and 1, got {self.lam}")

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "theta": self.theta, "lambda": self.lam}

    def describe(self) -> str:
        return f"cache size {self.size}, theta {self.theta:g}, lambda {self.lam:g}"


@dataclass(frozen=True)
class DynamicSettings:
    """Dynamic evaluation: the update ``method`` (``rms`` or ``sgd``), its learning rate ``lr``
    and its ``decay`` toward the trained weights; ``stat_windows`` training windows give the
    gradient statistics of the ``rms`` update (0: the whole training split)."""

    method: str = "rms"
    lr: float = DEFAULT_LR["rms"]
    decay: float = 0.02
    stat_windows: int = 100

    def __post_init__(self) -> None:
        if self.method not in DYNAMIC_METHODS:
            raise ConfigError(
                f"--dynamic-method must be one of {', '.join(DYNAMIC_METHODS)}, got {self.method!r}"
            )
        _finite("--dynamic-lr", self.lr)
        _finite("--dynamic-decay", self.decay)
        if self.lr < 0:
            raise ConfigError(f"--dynamic-lr must be 0 or more, got {self.lr}")
        if not 0.0 <= self.decay <= 1.0:
            raise ConfigError(f"--dynamic-decay must be between 0 and 1, got {self.decay}")
        if self.stat_windows < 0:
            raise ConfigError(
                "--dynamic-stat-windows must be 0 (the whole training split) or more, "
                f"got {self.stat_windows}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"dynamic {self.method} lr {self.lr:g}, decay {self.decay:g}"


def gradient_rms(
    model: TextModel, ids: Tensor, *, batch_size: int, bptt: int, windows: int
) -> list[Tensor]:
    """Root mean square of the gradient of each parameter (in ``model.parameters()`` order) of
    the mean window loss over the first ``windows`` windows of ``ids`` (the training split;
    0: all of them), state carried, the model in eval mode; the model itself is not changed."""
    was_training = model.training
    model.eval()
    params = list(model.parameters())
    device = params[0].device
    inputs, targets = eval_layout(ids, batch_size)
    inputs, targets = inputs.to(device), targets.to(device)
    ms = [torch.zeros_like(p) for p in params]
    state = model.init_state(inputs.size(1))
    count = 0
    with torch.enable_grad():
        for start in range(0, inputs.size(0), bptt):
            if windows and count == windows:
                break
            y = targets[start : start + bptt]
            scored = int((y != IGNORE).sum())
            nll, state = model(inputs[start : start + bptt], state, targets=y)
            state = detach_state(state)
            if scored == 0:
                continue
            grads = torch.autograd.grad(nll.sum() / scored, params, allow_unused=True)
            for m, g in zip(ms, grads, strict=True):
                if g is not None:
                    m.add_(g.detach() * g.detach())
            count += 1
    model.train(was_training)
    if count == 0:
        raise DataError("the training split is too short to collect gradient statistics")
    return [(m / count).sqrt() for m in ms]


class DynamicUpdater:
    """Applies the dynamic-evaluation step to ``model``'s parameters in place; keeps a copy of
    the trained weights and can put them back (:meth:`restore`)."""

    def __init__(
        self, model: TextModel, settings: DynamicSettings, rms: Sequence[Tensor] | None = None
    ) -> None:
        self.settings = settings
        self.params = list(model.parameters())
        self.original = [p.detach().clone() for p in self.params]
        self.scale: list[Tensor] | None = None
        self.decay: list[Tensor | float]
        if settings.method == "rms":
            if rms is None or len(rms) != len(self.params):
                raise ConfigError("the rms update needs the gradient statistics of every parameter")
            mean = torch.cat([r.reshape(-1) for r in rms]).mean()
            self.scale = [1.0 / (r + RMS_EPS) for r in rms]
            if float(mean) > 0:
                self.decay = [(settings.decay * r / mean).clamp(max=1.0) for r in rms]
            else:
                self.decay = [settings.decay for _ in rms]
        else:
            self.decay = [settings.decay for _ in self.params]

    def step(self, loss: Tensor) -> None:
        """One update from the gradient of ``loss`` (a scalar of the window just scored)."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        lr = self.settings.lr
        with torch.no_grad():
            for i, (p, g, p0) in enumerate(zip(self.params, grads, self.original, strict=True)):
                change = self.decay[i] * (p0 - p)
                if g is not None:
                    g = g * self.scale[i] if self.scale is not None else g
                    change = change - lr * g
                p.add_(change)

    def restore(self) -> None:
        """The trained weights back."""
        with torch.no_grad():
            for p, p0 in zip(self.params, self.original, strict=True):
                p.copy_(p0)


@dataclass
class _Window:
    """What one window of the pass gives: log p_model of each target (L, B) in float64 (0 where
    not scored), the scored mask (L, B), and per (theta, size) the cache's log p of the target
    (T, S, L, B) and whether the cache held anything (S, L, B); None without a cache."""

    logp: Tensor
    scored: Tensor
    cache_logp: Tensor | None = None
    cache_has: Tensor | None = None


@dataclass
class _CacheMemory:
    """Per column: the kept hidden states (B, M, H), their next tokens (B, M) and positions (M,)."""

    h: Tensor | None = None
    nxt: Tensor | None = None
    pos: Tensor | None = None


def _cache_scores(
    memory: _CacheMemory,
    h: Tensor,
    nxt: Tensor,
    y: Tensor,
    start: int,
    thetas: Sequence[float],
    sizes: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """log p_cache(y_t) for every (theta, size) (T, S, L, B) and whether the cache of each size
    was non-empty (S, L, B), for the window's hidden states ``h`` (L, B, H) at stream positions
    start.., with next tokens ``nxt`` (L, B) (IGNORE at padding) and targets ``y`` (L, B); the
    memory then keeps the last max(sizes) states."""
    length = h.size(0)
    q = h.transpose(0, 1)  # (B, L, H)
    qpos = torch.arange(start, start + length, device=h.device)  # (L,)
    if memory.h is None:
        keys, key_next, key_pos = q, nxt.t(), qpos
    else:
        keys = torch.cat((memory.h, q), dim=1)  # (B, M + L, H)
        key_next = torch.cat((memory.nxt, nxt.t()), dim=1)  # (B, M + L)
        key_pos = torch.cat((memory.pos, qpos))  # (M + L,)
    dots = torch.bmm(q, keys.transpose(1, 2)).double()  # (B, L, M + L): h_t . h_i
    valid = (key_next != IGNORE)[:, None, :]  # (B, 1, M + L)
    match = key_next[:, None, :] == y.t()[:, :, None]  # (B, L, M + L)
    ago = qpos[:, None] - key_pos[None, :]  # (L, M + L): how many steps back key i is
    neg = torch.tensor(-math.inf, dtype=torch.float64, device=h.device)
    out = torch.empty(len(thetas), len(sizes), length, q.size(0), dtype=torch.float64)
    has = torch.empty(len(sizes), length, q.size(0), dtype=torch.bool)
    for s, size in enumerate(sizes):
        near = slice(max(0, key_pos.numel() - size - length), None)  # keys a size-s cache can hold
        allowed = ((ago[:, near] >= 1) & (ago[:, near] <= size))[None] & valid[..., near]
        has[s] = allowed.any(-1).t().cpu()  # allowed: (B, L, K)
        hit = allowed & match[..., near]
        for k, theta in enumerate(thetas):
            scores = theta * dots[..., near]
            norm = torch.logsumexp(torch.where(allowed, scores, neg), dim=-1)  # (B, L)
            num = torch.logsumexp(torch.where(hit, scores, neg), dim=-1)  # (B, L)
            out[k, s] = (num - norm).t().cpu()
    keep = max(sizes)
    memory.h = keys[:, -keep:].detach()
    memory.nxt = key_next[:, -keep:]
    memory.pos = key_pos[-keep:]
    return out, has


def _pass(
    model: TextModel,
    ids: Tensor,
    *,
    batch_size: int,
    bptt: int,
    unscored: Tensor | None,
    thetas: Sequence[float] = (),
    sizes: Sequence[int] = (),
    updater: DynamicUpdater | None = None,
    bar: Any = None,
) -> Iterator[_Window]:
    """One exact pass over ``ids`` (laid out as :func:`~rnnlab.evaluation.text.evaluate` does),
    window by window: each window is scored first, then (with ``updater``) learned from."""
    device = next(model.parameters()).device
    inputs, targets = eval_layout(ids, batch_size, unscored)
    _, following = eval_layout(ids, batch_size)  # the true next tokens, IGNORE only at padding
    inputs, targets, following = inputs.to(device), targets.to(device), following.to(device)
    if int((targets != IGNORE).sum()) < 1:
        raise DataError("the evaluation text has no scored tokens; nothing to predict")
    state = model.init_state(inputs.size(1))
    memory = _CacheMemory()
    for start in range(0, inputs.size(0), bptt):
        x = inputs[start : start + bptt]
        y = targets[start : start + bptt]
        with torch.set_grad_enabled(updater is not None):
            _, h, state = model.hidden(x, state)  # (L, B, O), what the decoder reads
            nll = model.readout(h, y)  # (L, B), 0 where y is IGNORE
        state = detach_state(state)
        scored = y != IGNORE
        window = _Window(logp=-nll.detach().double(), scored=scored)
        if sizes:
            window.cache_logp, window.cache_has = _cache_scores(
                memory, h.detach(), following[start : start + bptt], y, start, thetas, sizes
            )
        yield window
        n = int(scored.sum())
        if updater is not None and n > 0:
            updater.step(nll.sum() / n)
        if bar is not None:
            bar.update(n)


def mix(logp: Tensor, cache_logp: Tensor, has: Tensor, lam: float) -> Tensor:
    """log((1 - lam) p_model + lam p_cache) elementwise; the model alone where the cache is
    empty (``has`` False). With ``lam = 0`` this is ``logp`` exactly."""
    if lam == 0.0:
        return logp
    mixed = torch.logaddexp(logp + math.log1p(-lam), math.log(lam) + cache_logp.to(logp.device))
    return torch.where(has.to(logp.device), mixed, logp)


@dataclass
class AdaptiveResult:
    """The exact result of an adaptive pass, and with ``keep_scores`` every target's log p in
    stream order (N - 1,) (0 where not scored)."""

    result: EvalResult
    logprobs: Tensor | None = None


def evaluate_adaptive(
    model: TextModel,
    ids: Tensor,
    *,
    cache: CacheSettings | None = None,
    dynamic: DynamicSettings | None = None,
    rms: Sequence[Tensor] | None = None,
    batch_size: int = 10,
    bptt: int = 100,
    level: str | None = None,
    progress: bool = False,
    label: str = "eval",
    unscored: Tensor | None = None,
    keep_scores: bool = False,
) -> AdaptiveResult:
    """Exact mean cross-entropy of ``model`` on ``ids`` with the neural ``cache`` and/or
    ``dynamic`` evaluation (``rms``: :func:`gradient_rms` for the rms update). The model's
    weights are put back afterwards; the figures match
    :func:`~rnnlab.evaluation.text.evaluate`'s layout (``batch_size`` columns, ``bptt`` windows)."""
    if batch_size < 1 or bptt < 1:
        raise ConfigError(
            f"evaluation batch size and bptt must be positive, got {batch_size} and {bptt}"
        )
    was_training = model.training
    model.eval()
    updater = DynamicUpdater(model, dynamic, rms) if dynamic is not None else None
    n = int(ids.numel()) - 1
    bar = progress_bar(max(n, 0), label, "tok", progress)
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    kept: list[Tensor] = []
    try:
        for w in _pass(
            model,
            ids,
            batch_size=batch_size,
            bptt=bptt,
            unscored=unscored,
            thetas=(cache.theta,) if cache else (),
            sizes=(cache.size,) if cache else (),
            updater=updater,
            bar=bar,
        ):
            logp = w.logp.cpu()
            if cache is not None:
                logp = mix(logp, w.cache_logp[0, 0], w.cache_has[0], cache.lam)
            logp = torch.where(w.scored.cpu(), logp, 0.0)
            total -= logp.sum()
            count += int(w.scored.sum())
            if keep_scores:
                kept.append(logp)
    finally:
        if updater is not None:
            updater.restore()
        if bar is not None:
            bar.close()
        model.train(was_training)
    loss = total.item() / count
    bpc = loss / math.log(2) if level == "char" else None
    scores = None
    if keep_scores:
        scores = torch.cat(kept).t().reshape(-1)[:n]  # column-major back to stream order
    return AdaptiveResult(EvalResult(loss, perplexity(loss), count, bpc), scores)


def cache_grid_losses(
    model: TextModel,
    ids: Tensor,
    *,
    thetas: Sequence[float],
    sizes: Sequence[int],
    lambdas: Sequence[float],
    batch_size: int = 10,
    bptt: int = 100,
    unscored: Tensor | None = None,
    progress: bool = False,
    label: str = "tune cache",
) -> tuple[float, dict[tuple[float, int, float], float]]:
    """The static mean loss and the loss of every (theta, size, lambda) of the grid on ``ids``,
    from one pass of the static model (the cache does not change the hidden states)."""
    was_training = model.training
    model.eval()
    static = torch.zeros((), dtype=torch.float64)
    sums = torch.zeros(len(thetas), len(sizes), len(lambdas), dtype=torch.float64)
    count = 0
    bar = progress_bar(max(int(ids.numel()) - 1, 0), label, "tok", progress)
    try:
        for w in _pass(
            model,
            ids,
            batch_size=batch_size,
            bptt=bptt,
            unscored=unscored,
            thetas=thetas,
            sizes=sizes,
            bar=bar,
        ):
            scored = w.scored.cpu()
            logp = w.logp.cpu()
            static -= logp[scored].sum()
            count += int(scored.sum())
            for k in range(len(thetas)):
                for s in range(len(sizes)):
                    for m, lam in enumerate(lambdas):
                        mixed = mix(logp, w.cache_logp[k, s], w.cache_has[s], lam)
                        sums[k, s, m] -= mixed[scored].sum()
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    losses = {
        (theta, size, lam): float(sums[k, s, m]) / count
        for k, theta in enumerate(thetas)
        for s, size in enumerate(sizes)
        for m, lam in enumerate(lambdas)
    }
    return float(static) / count, losses


@dataclass(frozen=True)
class AdaptationRequest:
    """What a command asked for: ``cache`` and/or ``dynamic``, and the values given explicitly
    (None: the tuned value in the run's settings file, else the default). Values are checked
    here, before any model is loaded; a value without its switch is refused."""

    cache: bool = False
    cache_size: int | None = None
    cache_theta: float | None = None
    cache_lambda: float | None = None
    dynamic: bool = False
    dynamic_method: str | None = None
    dynamic_lr: float | None = None
    dynamic_decay: float | None = None
    dynamic_stat_windows: int | None = None

    def __post_init__(self) -> None:
        for name, value, switch in (
            ("--cache-size", self.cache_size, self.cache),
            ("--cache-theta", self.cache_theta, self.cache),
            ("--cache-lambda", self.cache_lambda, self.cache),
            ("--dynamic-method", self.dynamic_method, self.dynamic),
            ("--dynamic-lr", self.dynamic_lr, self.dynamic),
            ("--dynamic-decay", self.dynamic_decay, self.dynamic),
            ("--dynamic-stat-windows", self.dynamic_stat_windows, self.dynamic),
        ):
            if value is not None and not switch:
                flag = "--cache" if name.startswith("--cache") else "--dynamic"
                raise ConfigError(f"{name} is a setting of {flag}; add {flag} to use it")
        self.cache_settings(CacheSettings())
        self.dynamic_settings(DynamicSettings())

    @property
    def active(self) -> bool:
        return self.cache or self.dynamic

    def cache_given(self) -> list[str]:
        """The cache settings given explicitly, by their JSON names."""
        pairs = (("size", self.cache_size), ("theta", self.cache_theta))
        return [n for n, v in (*pairs, ("lambda", self.cache_lambda)) if v is not None]

    def dynamic_given(self) -> list[str]:
        """The dynamic rates given explicitly (the method and the statistics' windows, which
        ``--tune-adaptation`` takes, not counted)."""
        return [
            n for n, v in (("lr", self.dynamic_lr), ("decay", self.dynamic_decay)) if v is not None
        ]

    def cache_settings(self, base: CacheSettings) -> CacheSettings:
        """``base`` with the explicitly given values put in (and checked)."""
        return CacheSettings(
            size=base.size if self.cache_size is None else self.cache_size,
            theta=base.theta if self.cache_theta is None else self.cache_theta,
            lam=base.lam if self.cache_lambda is None else self.cache_lambda,
        )

    def dynamic_settings(self, base: DynamicSettings) -> DynamicSettings:
        """``base`` (of the same method) with the explicitly given values put in (and checked)."""
        method = self.dynamic_method or base.method
        if method not in DYNAMIC_METHODS:
            DynamicSettings(method=method)  # raises the one-line error
        lr = base.lr if method == base.method else DEFAULT_LR[method]
        return DynamicSettings(
            method=method,
            lr=lr if self.dynamic_lr is None else self.dynamic_lr,
            decay=base.decay if self.dynamic_decay is None else self.dynamic_decay,
            stat_windows=(
                base.stat_windows
                if self.dynamic_stat_windows is None
                else self.dynamic_stat_windows
            ),
        )
