"""Choosing the adaptation settings on the validation split, and the run's settings file.

``rnnlab eval RUN --tune-adaptation`` searches a small grid on the **validation** split and
writes the chosen values into ``RUN/adaptation.json`` (atomically; nothing else in the run
directory is touched). ``--cache`` / ``--dynamic`` without explicit values then use them; with
no file, the defaults of :class:`~rnnlab.evaluation.adapt.CacheSettings` and
:class:`~rnnlab.evaluation.adapt.DynamicSettings`. Every result names the settings it used and
where they came from.

The grids (coarse on purpose):

* cache: theta in :data:`CACHE_THETAS` x size in :data:`CACHE_SIZES` x lambda in
  :data:`CACHE_LAMBDAS`, all from one pass of the static model (the cache does not change the
  hidden states, so every combination is scored from the same pass); while the best theta is
  at an edge of those tried, one more pass tries the next (x3 or /3, up to
  :data:`EDGE_STEPS`): the best theta depends on the scale of the hidden states, which
  regularisation changes (a locked-dropout PTB model wanted 1.0, the grid's top, and more);
* dynamic: the learning rate over :data:`DYNAMIC_LRS` (of the method asked, ``rms`` by
  default) at decay :data:`DYNAMIC_DECAY_START`, extended past an edge (a third lower or three
  times higher, up to :data:`EDGE_STEPS` rates each way) while the edge rate is the best,
  then the half steps on either side of the best (x / sqrt 3 and x * sqrt 3: on a PTB model,
  validation went 97.8 at 1e-3, 93.1 at 3e-3 and 107.4 at 9e-3, too coarse a grid for a
  minimum that sharp), then the decay over :data:`DYNAMIC_DECAYS` at the best rate: one
  adapted pass per point.
  Rate 0, no update at all, is in the grid with the static figure: where no rate beats the
  static model on validation (batch 1 on PTB did this: every rate hurt), the tuner chooses 0
  and says so.

The cache is tuned on the static model and the dynamic rates without the cache. When both are
tuned, the dynamic search runs once more **with the chosen cache on**, from rate 0 (exactly the
cache alone), and its choice is kept as the dynamic part's ``with_cache``: ``--cache
--dynamic`` uses it. Settings tuned apart do not add up: on a PTB model the separately tuned
pair scored test 78.1 where the cache alone scored 76.2 (the update at the rate that suits the
bare model undoes part of what the cache supplies).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from rnnlab.atomic import write_atomic
from rnnlab.errors import ConfigError, DataError
from rnnlab.evaluation.adapt import (
    AdaptationRequest,
    AdaptiveResult,
    CacheSettings,
    DynamicSettings,
    cache_grid_losses,
    evaluate_adaptive,
    gradient_rms,
)
from rnnlab.evaluation.run import recorded_text_data, run_text_data
from rnnlab.models.base import perplexity
from rnnlab.runs.checkpoint import checkpoint_step
from rnnlab.runs.load import load_text_model

SETTINGS_FILE = "adaptation.json"
FORMAT = 1
CACHE_THETAS = (0.1, 0.3, 1.0)
CACHE_SIZES = (100, 500, 2000)
CACHE_LAMBDAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
DYNAMIC_LRS = {"rms": (1e-4, 3e-4, 1e-3, 3e-3), "sgd": (0.01, 0.03, 0.1, 0.3)}
DYNAMIC_DECAY_START = 0.02
DYNAMIC_DECAYS = (0.0, 0.02, 0.1)
EDGE_STEPS = 3  # values past a grid's edge (each a third / three times the last) while it wins

# the gradient statistics of the last run asked for, so one process (a benchmark evaluating a
# run several ways) collects them once; keyed by run, checkpoint step, layout and device
_RMS_MEMO: dict[tuple[Any, ...], list[Tensor]] = {}


def settings_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SETTINGS_FILE


def read_settings(run_dir: str | Path) -> dict[str, Any]:
    """The run's settings file as a dict ({} when there is none); a damaged one is a one-line
    error saying to tune again or remove it."""
    path = settings_path(run_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if "cache" in data:
            _cache_from(data["cache"])
        if "dynamic" in data:
            _dynamic_from(data["dynamic"])
            if data["dynamic"].get("with_cache"):
                _dynamic_from(data["dynamic"]["with_cache"])
    except (OSError, ValueError, TypeError, KeyError, ConfigError) as e:
        raise ConfigError(
            f"{path} is damaged ({e}); run rnnlab eval {run_dir} --tune-adaptation again "
            "or remove the file"
        ) from None
    return data


def _cache_from(part: dict[str, Any]) -> CacheSettings:
    s = part["settings"]
    return CacheSettings(size=s["size"], theta=float(s["theta"]), lam=float(s["lambda"]))


def _dynamic_from(part: dict[str, Any]) -> DynamicSettings:
    s = part["settings"]
    return DynamicSettings(
        method=s["method"],
        lr=float(s["lr"]),
        decay=float(s["decay"]),
        stat_windows=int(s.get("stat_windows", DynamicSettings.stat_windows)),
    )


def _source(tuned: dict[str, Any] | None, given: list[str], every: int, how: str = "") -> str:
    """Where settings came from; ``how`` qualifies a tuned source (" with the cache")."""
    if len(given) == every:
        return "given"
    base = f"tuned on {tuned['split']}{how} ({SETTINGS_FILE})" if tuned else "defaults, not tuned"
    return f"{base}; given: {', '.join(given)}" if given else base


def resolve_adaptation(
    run_dir: str | Path, request: AdaptationRequest
) -> tuple[CacheSettings | None, DynamicSettings | None, dict[str, Any]]:
    """The settings a request uses: explicit values, else the run's tuned ones, else defaults;
    and a description of them (values and source) for output and JSON."""
    stored = read_settings(run_dir) if request.active else {}
    cache = dynamic = None
    described: dict[str, Any] = {}
    if request.cache:
        part = stored.get("cache")
        base = _cache_from(part) if part else CacheSettings()
        cache = request.cache_settings(base)
        given = request.cache_given()
        described["cache"] = dict(
            cache.to_dict(), source=_source(part and part["tuned_on"], given, 3)
        )
    if request.dynamic:
        part = stored.get("dynamic")
        joint = bool(request.cache and part and part.get("with_cache"))
        if joint:
            part = dict(part["with_cache"], tuned_on=part["tuned_on"])
        base = _dynamic_from(part) if part else DynamicSettings()
        if part and request.dynamic_method and request.dynamic_method != base.method:
            part, joint = None, False  # tuned for the other method: its rate does not carry over
            base = DynamicSettings(method=request.dynamic_method)
        dynamic = request.dynamic_settings(base)
        given = request.dynamic_given()
        every = 2
        if dynamic.method == "rms":  # its statistics' windows are a setting too (sgd has none)
            every = 3
            if request.dynamic_stat_windows is not None:
                given.append("stat_windows")
        how = " with the cache" if joint else ""
        described["dynamic"] = dict(
            dynamic.to_dict(), source=_source(part and part["tuned_on"], given, every, how)
        )
    return cache, dynamic, described


def describe(adaptation: dict[str, Any]) -> str:
    """One line naming the settings of a result, e.g. ``cache size 500, theta 0.3, lambda 0.1
    [tuned on valid (adaptation.json)]``."""
    parts = []
    if "cache" in adaptation:
        c = adaptation["cache"]
        parts.append(
            f"cache size {c['size']}, theta {c['theta']:g}, lambda {c['lambda']:g} [{c['source']}]"
        )
    if "dynamic" in adaptation:
        d = adaptation["dynamic"]
        parts.append(f"dynamic {d['method']} lr {d['lr']:g}, decay {d['decay']:g} [{d['source']}]")
    return "; ".join(parts)


def training_rms(
    run_dir: str | Path,
    model: Any,
    ckpt: Any,
    vocab: Any,
    train_ids: Tensor | None,
    settings: DynamicSettings,
    *,
    batch_size: int,
    bptt: int,
) -> list[Tensor] | None:
    """The gradient statistics of the rms update, from the run's own training data (read from
    its record unless ``train_ids`` are given); None for the sgd update."""
    if settings.method != "rms":
        return None
    key = (str(Path(run_dir).resolve()), checkpoint_step(ckpt), batch_size, bptt)
    key += (settings.stat_windows, str(next(model.parameters()).device))
    if key in _RMS_MEMO:
        return _RMS_MEMO[key]
    if train_ids is None:
        need = "the rms update of --dynamic needs the run's training data for its statistics"
        try:
            train_ids = recorded_text_data(
                run_dir, ckpt, vocab, advice=f"{need}; or use --dynamic-method sgd"
            ).train
        except ConfigError as e:
            raise ConfigError(f"{e}; {need}; or use --dynamic-method sgd") from None
    if train_ids.numel() < 2:
        raise DataError("the run's training split is too short for gradient statistics")
    rms = gradient_rms(
        model, train_ids, batch_size=batch_size, bptt=bptt, windows=settings.stat_windows
    )
    _RMS_MEMO.clear()  # one run's statistics kept at a time
    _RMS_MEMO[key] = rms
    return rms


def adapted_evaluation(
    run_dir: str | Path,
    model: Any,
    ckpt: Any,
    ids: Tensor,
    request: AdaptationRequest,
    *,
    train_ids: Tensor | None,
    vocab: Any,
    batch_size: int,
    bptt: int,
    level: str | None,
    progress: bool = False,
    label: str = "eval",
    unscored: Tensor | None = None,
    keep_scores: bool = False,
) -> tuple[AdaptiveResult, dict[str, Any]]:
    """Evaluate ``ids`` with the adaptation ``request`` asks for (settings resolved by
    :func:`resolve_adaptation`); the result and the description of its settings."""
    cache, dynamic, described = resolve_adaptation(run_dir, request)
    rms = None
    if dynamic is not None:
        rms = training_rms(
            run_dir, model, ckpt, vocab, train_ids, dynamic, batch_size=batch_size, bptt=bptt
        )
    result = evaluate_adaptive(
        model,
        ids,
        cache=cache,
        dynamic=dynamic,
        rms=rms,
        batch_size=batch_size,
        bptt=bptt,
        level=level,
        progress=progress,
        label=label,
        unscored=unscored,
        keep_scores=keep_scores,
    )
    return result, described


@dataclass
class TuneReport:
    """What ``--tune-adaptation`` found: the settings file's content as written, and its path."""

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    tuned: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"settings_file": str(self.path), **{k: self.settings[k] for k in self.tuned}}

    def lines(self) -> list[str]:
        """A human summary, one line per tuned part."""
        out = []
        for part in self.tuned:
            p = self.settings[part]
            s = p["settings"]
            v = p["valid"]
            what = (
                f"cache size {s['size']}, theta {s['theta']:g}, lambda {s['lambda']:g}"
                if part == "cache"
                else f"dynamic {s['method']} lr {s['lr']:g}, decay {s['decay']:g}"
            )
            out.append(
                f"{part}: {what}; {p['tuned_on']['split']} perplexity "
                f"{v['static_perplexity']:.2f} -> {v['perplexity']:.2f} "
                f"({p['tuned_on']['tokens']:,} tokens, {len(p['grid'])} settings tried)"
            )
            joint = p.get("with_cache")
            if joint:
                s, v = joint["settings"], joint["valid"]
                out.append(
                    f"dynamic with the cache on: {s['method']} lr {s['lr']:g}, decay "
                    f"{s['decay']:g}; perplexity with the cache alone {v['cache_perplexity']:.2f} "
                    f"-> {v['perplexity']:.2f} ({len(joint['grid'])} settings tried)"
                )
        out.append(f"settings written to {self.path}")
        return out


def _search_cache(
    model: Any, ids: Tensor, **kw: Any
) -> tuple[float, dict[tuple[float, int, float], float]]:
    """The cache grid on ``ids``: the static loss and the loss of every (theta, size, lambda)
    tried. One pass for :data:`CACHE_THETAS`, then one pass per theta past the edge while the
    best theta is at an edge of those tried (x3 or /3, up to :data:`EDGE_STEPS`)."""
    grid = dict(sizes=CACHE_SIZES, lambdas=CACHE_LAMBDAS, **kw)
    static, losses = cache_grid_losses(model, ids, thetas=CACHE_THETAS, **grid)
    for _ in range(EDGE_STEPS):
        tried = sorted({k[0] for k in losses})
        best = min(losses.items(), key=lambda kv: kv[1])[0][0]
        if len(tried) < 2 or best not in (tried[0], tried[-1]):
            break
        theta = best * 3 if best == tried[-1] else best / 3
        losses.update(cache_grid_losses(model, ids, thetas=(theta,), **grid)[1])
    return static, losses


def _search_rates(
    loss_of: Any, method: str
) -> tuple[tuple[float, float], float, float, dict[tuple[float, float], float]]:
    """The dynamic rate search: ``((lr, decay), best loss, rate-0 loss, grid)``.

    Rate 0 (no update: the figure without dynamic evaluation, exactly) first, so that no rate
    which fails to beat it on validation is ever chosen, and a tie keeps it. Then the rates of
    :data:`DYNAMIC_LRS` at :data:`DYNAMIC_DECAY_START`, extended past an edge while the edge
    rate wins, then, if the best rate helps, the half steps around it and the decays at the
    best."""
    grid: dict[tuple[float, float], float] = {(0.0, 0.0): loss_of(0.0, 0.0)}
    for lr in DYNAMIC_LRS[method]:
        grid[(lr, DYNAMIC_DECAY_START)] = loss_of(lr, DYNAMIC_DECAY_START)

    def best_rate() -> float:
        return min((k for k in grid if k[0] > 0), key=lambda k: grid[k])[0]

    for factor, edge in ((1 / 3, min), (3.0, max)):
        for _ in range(EDGE_STEPS):
            end = edge(k[0] for k in grid if k[0] > 0)
            if best_rate() != end or not math.isfinite(grid[(end, DYNAMIC_DECAY_START)]):
                break
            grid[(end * factor, DYNAMIC_DECAY_START)] = loss_of(end * factor, DYNAMIC_DECAY_START)
    best_lr = best_rate()
    # only for a rate that helps: the half steps around it, then the decays at the best
    if grid[(best_lr, DYNAMIC_DECAY_START)] < grid[(0.0, 0.0)]:
        for lr in _half_steps(best_lr):
            if not any(math.isclose(lr, k[0], rel_tol=1e-6) for k in grid):
                grid[(lr, DYNAMIC_DECAY_START)] = loss_of(lr, DYNAMIC_DECAY_START)
        best_lr = best_rate()  # no worse than the rate that helped
        for decay in DYNAMIC_DECAYS:
            if (best_lr, decay) not in grid:
                grid[(best_lr, decay)] = loss_of(best_lr, decay)
    (lr, decay), best = min(grid.items(), key=lambda kv: kv[1])
    return (lr, decay), best, grid[(0.0, 0.0)], grid


def _half_steps(x: float) -> tuple[float, float]:
    """The geometric midpoints between ``x`` and its x3 neighbours (x / sqrt 3, x * sqrt 3),
    to two significant figures: 3e-3 gives 1.7e-3 and 5.2e-3."""
    return tuple(float(f"{x * f:.2g}") for f in (3**-0.5, 3**0.5))  # type: ignore[return-value]


def tune_run(
    run_dir: str | Path,
    *,
    cache: bool = True,
    dynamic: bool = True,
    method: str = "rms",
    corpus: str | None = None,
    text: str | None = None,
    encoding: str | None = None,
    batch_size: int = 10,
    bptt: int = 100,
    device: str = "cpu",
    tokens: int | None = None,
    progress: bool = False,
    stat_windows: int = DynamicSettings.stat_windows,
) -> TuneReport:
    """Search the cache and/or dynamic settings on the validation split (its first ``tokens``
    tokens, if given) of the run's data (or ``corpus`` / ``text``) and write the best into
    ``run_dir/adaptation.json``, keeping a part not tuned now. Checkpoints and results are
    never touched. ``stat_windows``: the training windows of the rms update's statistics."""
    DynamicSettings(method=method, stat_windows=stat_windows)  # checked before the work starts
    if tokens is not None and tokens < 2:
        raise ConfigError(f"--tune-tokens must be at least 2, got {tokens}")
    model, vocab, ckpt = load_text_model(run_dir, device, "eval --tune-adaptation")
    try:
        stored = read_settings(run_dir)
    except ConfigError:
        stored = {}  # being replaced by this tuning
    data = run_text_data(run_dir, ckpt, vocab, corpus=corpus, text=text, encoding=encoding)
    ids = data.valid
    unscored = data.unscored.get("valid")
    if tokens is not None:
        ids = ids[: tokens + 1]
        unscored = unscored[: tokens + 1] if unscored is not None else None
    tuned_on = {
        "split": "valid",
        "corpus": data.name,
        "tokens": int(ids.numel()) - 1,
        "batch_size": batch_size,
        "bptt": bptt,
    }
    settings: dict[str, Any] = {"format": FORMAT}
    settings.update({k: v for k, v in stored.items() if k in ("cache", "dynamic")})
    tuned: list[str] = []
    layout = {"batch_size": batch_size, "bptt": bptt, "unscored": unscored}
    if cache:
        static, losses = _search_cache(model, ids, progress=progress, **layout)
        (theta, size, lam), best = min(losses.items(), key=lambda kv: kv[1])
        chosen_cache = CacheSettings(size=size, theta=theta, lam=lam)
        settings["cache"] = {
            "settings": chosen_cache.to_dict(),
            "tuned_on": tuned_on,
            "valid": {
                "static_perplexity": perplexity(static),
                "perplexity": perplexity(best),
            },
            "grid": [
                {"theta": t, "size": s, "lambda": m, "perplexity": perplexity(v)}
                for (t, s, m), v in losses.items()
            ],
        }
        tuned.append("cache")
        if not dynamic and "dynamic" in settings:  # its joint choice was made with another cache
            settings["dynamic"] = {
                k: v for k, v in settings["dynamic"].items() if k != "with_cache"
            }
    if dynamic:
        probe = DynamicSettings(method=method, stat_windows=stat_windows)
        train_ids = None if (corpus or text) else data.train
        rms = training_rms(
            run_dir, model, ckpt, vocab, train_ids, probe, batch_size=batch_size, bptt=bptt
        )

        def search(with_cache: CacheSettings | None) -> dict[str, Any]:
            def loss_of(lr: float, decay: float) -> float:
                s = DynamicSettings(method, lr, decay, stat_windows) if lr else None
                r = evaluate_adaptive(
                    model,
                    ids,
                    cache=with_cache,
                    dynamic=s,
                    rms=rms if s else None,
                    progress=progress,
                    label="tune dynamic" + (" with the cache" if with_cache else ""),
                    **layout,
                )
                # a rate that diverged (NaN) ranks last, not wherever NaN's comparisons put it
                return r.result.loss if math.isfinite(r.result.loss) else math.inf

            (lr, decay), best, base, grid = _search_rates(loss_of, method)
            base_name = "cache_perplexity" if with_cache else "static_perplexity"
            return {
                "settings": DynamicSettings(method, lr, decay, stat_windows).to_dict(),
                "valid": {base_name: perplexity(base), "perplexity": perplexity(best)},
                "grid": [
                    {"lr": a, "decay": b, "perplexity": perplexity(v)} for (a, b), v in grid.items()
                ],
            }

        settings["dynamic"] = dict(search(None), tuned_on=tuned_on)
        if cache:
            settings["dynamic"]["with_cache"] = search(chosen_cache)
        tuned.append("dynamic")
    path = settings_path(run_dir)
    write_atomic(path, (json.dumps(settings, indent=2) + "\n").encode("utf-8"))
    return TuneReport(path, settings, tuple(tuned))
