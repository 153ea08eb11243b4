"""From what ``rnnlab compare`` is asked to the :class:`~rnnlab.lab.grid.GridConfig` it runs.

:class:`CompareRequest` holds, typed, every setting the compare flags carry (the grid's source,
axes, sizes, budgets, optimizer, report); where to write the grid and how to print it stay with
the caller. :func:`grid_config` turns a request into the grid:

1. the settings come from one resolved :class:`~rnnlab.config.run.RunConfig`
   (:func:`compare_config`): :data:`COMPARE_DEFAULTS`, then the preset (the one named, or
   ``music-chung2014`` for a piano-roll corpus; none otherwise), then the request's own values
   (:func:`compare_flag_layer`); :func:`compare_settings` reads them back;
2. what the request says beyond a run config is read from it directly: the embedding rule
   (``embed`` a width or ``"hidden"``; ``tie`` implies ``"hidden"``), the lists of windows and
   rates, the seeds, the rates an earlier search chose (``lr_from``);
3. a run with no budget at all trains :data:`DEFAULT_COMPARE_STEPS` steps.

Refusals come in a fixed order: an unknown preset or corpus, then the values compare reads
itself (``embed``, ``seeds``, the rates per cell), then the settings' values (by the resolved
config), then the grid's own checks (:class:`GridConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rnnlab.config.presets import get_preset
from rnnlab.config.resolve import choose_preset, resolve_config
from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.data.encodings import AUTO
from rnnlab.errors import ConfigError
from rnnlab.lab.grid import GridConfig
from rnnlab.lab.results import chosen_rates
from rnnlab.models.config import AWD_OPTIONS, LanguageModelConfig

DEFAULT_COMPARE_STEPS = 1000  # the per-run budget when no max_steps/max_tokens/max_minutes/epochs
# ``epochs`` in the resolved config when nothing sets it: a run ends when its budget does
UNTIL_BUDGET = 1_000_000

# The lowest layer of compare's resolved config: its own settings where neither the request nor
# a preset gives one.
COMPARE_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden_size": 128, "embed_size": 64, "num_layers": 1, "dropout": 0.0},
    "optim": {
        "optimizer": "adam",
        "lr": 2e-3,
        "clip": 1.0,
        "weight_noise": 0.0,
        "schedule": "constant",
    },
    "train": {
        "bptt": 35,
        "batch_size": 20,
        "eval_batch_size": 10,
        "epochs": UNTIL_BUDGET,
        "patience": None,
    },
}
# request field (= compare flag) -> (section, field) of the resolved config; ``embed`` (a width or
# 'hidden'), ``bptt`` and ``lr`` (lists) are read from the request itself
COMPARE_FLAGS: dict[str, tuple[str, str]] = {
    "corpus": ("data", "corpus"),
    "text": ("data", "text"),
    "hidden": ("model", "hidden_size"),
    "layers": ("model", "num_layers"),
    "dropout": ("model", "dropout"),
    "optimizer": ("optim", "optimizer"),
    "clip": ("optim", "clip"),
    "weight_noise": ("optim", "weight_noise"),
    "schedule": ("optim", "schedule"),
    "batch_size": ("train", "batch_size"),
    "eval_batch_size": ("train", "eval_batch_size"),
    "epochs": ("train", "epochs"),
    "patience": ("train", "patience"),
}


@dataclass(frozen=True)
class CompareRequest:
    """A comparison grid as ``rnnlab compare`` is asked for it: one field per flag (its dest
    name), with the flag's default. None means "not given": the preset's value, else
    :data:`COMPARE_DEFAULTS`.

    ``lr`` is either the rates to search (a tuple: one rate, or several as an axis) or one rate
    per cell (a mapping ``{cell: rate}`` naming every cell of ``cells``); ``lr_from`` is a grid
    directory whose ``results.csv`` chose each cell's rate (excludes ``lr``). ``embed`` is a
    width (as text, e.g. ``"64"``) or ``"hidden"``.
    """

    preset: str | None = None
    # data
    corpus: str | None = None
    text: str | None = None
    valid_text: str | None = None
    test_text: str | None = None
    encoding: str = AUTO  # UTF-8, else detected
    level: str | None = None
    min_count: int = 1
    max_vocab: int | None = None
    start_frame: bool = False
    # grid
    cells: tuple[str, ...] = ("rnn", "gru", "lstm")
    params: int | None = None
    hidden: int | None = None
    embed: str | None = None
    layers: int | None = None
    tie: bool = False
    dropout: float | None = None
    data_fractions: tuple[float, ...] = (1.0,)
    bptt: tuple[int, ...] | None = None
    lr: tuple[float, ...] | Mapping[str, float] | None = None
    lr_from: str | None = None
    seeds: int = 1
    # budget per run
    max_steps: int | None = None
    max_tokens: int | None = None
    max_minutes: float | None = None
    epochs: int | None = None
    patience: int | None = None
    # optimization
    optimizer: str | None = None
    clip: float | None = None
    weight_noise: float | None = None
    schedule: str | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    # report and machine
    eval_every: int | None = None
    eval_points: int = 20
    target_ppl: float | None = None
    device: str = "auto"
    threads: int | None = None


def compare_flag_layer(request: CompareRequest) -> dict[str, dict[str, Any]]:
    """The request's values given, as ``{section: {field: value}}`` (see :data:`COMPARE_FLAGS`)."""
    # the grid's model ties by compare's own tie / embed rule, not by the preset's tying
    overrides: dict[str, dict[str, Any]] = {"model": {"tie_weights": False}}
    for flag, (section, name) in COMPARE_FLAGS.items():
        value = getattr(request, flag)
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    return overrides


def compare_config(request: CompareRequest) -> RunConfig:
    """The RunConfig behind a grid: :data:`COMPARE_DEFAULTS`, then the preset (explicit, or
    music-chung2014 for a piano-roll corpus; none otherwise), then the request's values."""
    return resolve_config(
        request.preset, compare_flag_layer(request), base=COMPARE_DEFAULTS, default_preset=None
    )


def compare_settings(request: CompareRequest) -> dict[str, Any]:
    """The compare settings, read from :func:`compare_config` (the request's values, else the
    preset's, else :data:`COMPARE_DEFAULTS`); ``bptt`` and ``lr`` are tuples (``lr`` holds the
    one mapping of rates per cell when the request gives one), ``embed`` text."""
    config = compare_config(request)
    m, o, t = config.model, config.optim, config.train
    return {
        "corpus": config.data.corpus,
        "hidden": m.hidden_size,
        "embed": request.embed if request.embed is not None else str(m.embed_size),
        "layers": m.num_layers,
        "dropout": m.dropout,
        "regularisers": {name: getattr(m, name) for name in AWD_OPTIONS},
        "bptt": request.bptt if request.bptt is not None else (t.bptt,),
        "lr": _requested_rates(request) if request.lr is not None else (o.lr,),
        "optimizer": o.optimizer,
        "clip": o.clip,
        "weight_noise": o.weight_noise,
        "schedule": o.schedule,
        "batch_size": t.batch_size,
        "eval_batch_size": t.eval_batch_size,
        "epochs": None if request.epochs is None and t.epochs == UNTIL_BUDGET else t.epochs,
        "patience": t.patience,
    }


def grid_config(request: CompareRequest) -> GridConfig:
    """The GridConfig that a compare request (and its preset) describes; refusals as the
    module doc orders them, each a one-line :class:`ConfigError`."""
    _check_preset(request)
    follows = embed_follows_hidden(request)
    _check_embed(request.embed, follows)
    if request.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {request.seeds}")
    cell_lrs = cell_rates(request)
    c = compare_settings(request)
    lrs = tuple(c["lr"])
    if cell_lrs:  # the optimizer's own rate is a placeholder: every run sets its cell's
        lrs = (next(iter(cell_lrs.values())),)
    return GridConfig(
        data=_data_config(request, c),
        model=_model_config(request, c, follows),
        optim=_optim_config(c, lrs[0]),
        train=_train_config(request, c),
        cells=request.cells,
        data_fractions=request.data_fractions,
        bptts=c["bptt"],
        seeds=tuple(range(1, request.seeds + 1)),
        lrs=lrs if len(lrs) > 1 else (),
        cell_lrs=cell_lrs,
        params=request.params,
        embed_follows_hidden=follows,
        max_tokens=request.max_tokens,
        eval_points=request.eval_points,
        target_ppl=request.target_ppl,
    )


def embed_follows_hidden(request: CompareRequest) -> bool:
    """Whether every cell's embedding width is its hidden size (``embed="hidden"``, or tied)."""
    return request.tie or request.embed == "hidden"


def cell_rates(request: CompareRequest) -> dict[str, float]:
    """One learning rate per cell of the grid, from ``lr_from`` or a per-cell ``lr``; empty when
    the request gives rates to search (or none)."""
    if request.lr_from is not None:
        if request.lr is not None:
            raise ConfigError("give --lr or --lr-from, not both")
        return _rates_from_search(request.lr_from, request.cells)
    if isinstance(request.lr, Mapping):
        unknown = [cell for cell in request.lr if cell not in request.cells]
        if unknown:
            raise ConfigError(f"--lr names cell(s) not in --cells: {', '.join(unknown)}")
        return dict(request.lr)
    return {}


def _rates_from_search(grid_dir: str, cells: tuple[str, ...]) -> dict[str, float]:
    """The rate an earlier grid's search chose for each of ``cells``; every cell needs one."""
    found = chosen_rates(grid_dir)
    missing = [cell for cell in cells if cell not in found]
    if missing:
        raise ConfigError(
            f"the grid in {grid_dir} chose no rate for {', '.join(missing)}; "
            "search it there or give --lr cell=rate"
        )
    return {cell: found[cell] for cell in cells}


def _requested_rates(request: CompareRequest) -> tuple[Any, ...]:
    """The request's ``lr`` as a tuple: the rates to search, or the one mapping per cell."""
    return (request.lr,) if isinstance(request.lr, Mapping) else tuple(request.lr or ())


def _check_preset(request: CompareRequest) -> None:
    """Refuse an unknown preset, or corpus, before anything else is read."""
    preset = choose_preset(request.preset, None, compare_flag_layer(request), default_preset=None)
    if preset is not None:
        get_preset(preset)


def _check_embed(embed: str | None, follows: bool) -> None:
    """Refuse an ``embed`` that is neither a width nor ``"hidden"`` (unless tying decides it)."""
    if follows or embed is None:
        return
    try:
        int(embed)
    except ValueError:
        raise ConfigError(f"--embed takes a width or 'hidden', got {embed!r}") from None


def _data_config(request: CompareRequest, c: dict[str, Any]) -> DataConfig:
    """The text (or rolls) every run of the grid reads."""
    return DataConfig(
        corpus=c["corpus"],
        text=request.text,
        valid_text=request.valid_text,
        test_text=request.test_text,
        encoding=request.encoding,
        level=request.level,
        min_count=request.min_count,
        max_vocab=request.max_vocab,
        corpus_options={"start_frame": True} if request.start_frame else None,
    )


def _model_config(request: CompareRequest, c: dict[str, Any], follows: bool) -> LanguageModelConfig:
    """The model template (each run sets its cell and hidden size), with the preset's AWD-LSTM
    dropouts (locked, embedding, weight drop) as it gives them."""
    return LanguageModelConfig(
        embed_size=c["hidden"] if follows else int(c["embed"]),
        hidden_size=c["hidden"],
        num_layers=c["layers"],
        dropout=c["dropout"],
        tie_weights=request.tie,
        **c["regularisers"],
    )


def _optim_config(c: dict[str, Any], lr: float) -> OptimConfig:
    """The optimizer every cell uses (``lr``: the first rate; a search or per-cell rates set
    each run's own)."""
    return OptimConfig(
        optimizer=c["optimizer"],
        lr=lr,
        clip=c["clip"],
        schedule=c["schedule"],
        weight_noise=c["weight_noise"],
    )


def _train_config(request: CompareRequest, c: dict[str, Any]) -> TrainConfig:
    """The loop template: batches, budgets (:data:`DEFAULT_COMPARE_STEPS` when none), device."""
    budgets = (request.max_steps, request.max_tokens, request.max_minutes, c["epochs"])
    no_budget = all(v is None for v in budgets)
    return TrainConfig(
        batch_size=c["batch_size"],
        eval_batch_size=c["eval_batch_size"],
        epochs=c["epochs"] if c["epochs"] is not None else UNTIL_BUDGET,
        max_steps=DEFAULT_COMPARE_STEPS if no_budget else request.max_steps,
        max_minutes=request.max_minutes,
        patience=c["patience"],
        eval_every=request.eval_every,
        device=request.device,
        threads=request.threads,
    )
