"""The plan of a comparison grid: its axes, the size every cell gets, and every run it will train.

A grid crosses four axes and trains one run per point::

    cells  x  data fractions  x  BPTT windows tau  x  learning rates  x  seeds    (one budget)

**Sizes are matched by parameter count**, as Chung et al. (2014) matched their RNN, GRU and LSTM:
for a budget ``P`` each cell gets the integer hidden size ``H`` whose model has the parameter
count closest to ``P`` (within 2%, else :class:`ConfigError`). The budget counts the *whole*
model, embedding + recurrent stack + decoder, i.e. exactly what ``results.json`` reports::

    P(H) = V*D + sum_l G*H*(I_l + H + 2) + V*H + V        (G: the cell's gates, CellSpec.gates)

Why the whole model: the decoder reads ``h`` so its width ``V*H`` is part of what a cell
costs. Matching the recurrent part only would hand the cell with the fewest gates a wider
decoder (on PTB's 10k words, millions of extra weights) and so more capacity for free. With a
fixed embedding width ``D`` the embedding is the same constant for every cell; the recurrent
share is reported next to the total so both views can be read off the table.

**Data fractions** train on the first fraction of the training split (:func:`fraction_data`).
The vocabulary is built once on the *full* training split, so every fraction predicts over the
same symbols and the perplexities compare.

**Learning rates**: several (``lrs``) are an axis of the grid; one fixed rate per cell
(``cell_lrs``, e.g. from :func:`rnnlab.lab.results.chosen_rates`) replaces that axis. Run ids
carry the rate only when the grid has several.

**The metric** (:class:`Metric`): perplexity for text; for piano rolls (:mod:`rnnlab.data.rolls`)
the negative log-likelihood per time step, with the learning curves drawn by epoch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.batching import check_enough
from rnnlab.data.dataset import DataConfig, LMData
from rnnlab.data.rolls import N_PITCHES, PIANOROLL, RollData, fraction_pieces
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.registry import CELL_NAMES
from rnnlab.training.strategies import steps_per_epoch

PARAM_TOLERANCE = 0.02  # matched sizes land within 2% of the budget
DEFAULT_EVAL_EVERY = 100  # steps between validations when the run length is unknown (time budget)


@dataclass(frozen=True)
class Metric:
    """The figure a grid reports: perplexity for text, NLL per time step for piano rolls."""

    key: str  # column suffix: valid_<key>, test_<key>, target_<key>
    name: str  # in prose and on axes
    log_scale: bool  # plot on a log axis
    by_epoch: bool  # learning curves by epoch (piano rolls) rather than by tokens

    @property
    def valid_column(self) -> str:
        """The column of the final (and logged) validation figure: ``valid_ppl`` or ``valid_nll``."""
        return f"valid_{self.key}"

    @property
    def test_column(self) -> str:
        """The column of the final test figure: ``test_ppl`` or ``test_nll``."""
        return f"test_{self.key}"

    @property
    def target_column(self) -> str:
        """The column of the "time to target" figure: ``target_ppl`` or ``target_nll``."""
        return f"target_{self.key}"


PERPLEXITY = Metric("ppl", "perplexity", True, False)
NLL = Metric("nll", "NLL per time step (nats)", False, True)


def metric_for(level: str) -> Metric:
    """The metric of data of ``level`` (``pianoroll`` -> NLL, else perplexity)."""
    return NLL if level == PIANOROLL else PERPLEXITY


# --------------------------------------------------------------------------- parameter matching
@dataclass(frozen=True)
class ParamMatch:
    """The size one cell gets for a budget: hidden size and the resulting parameter counts."""

    cell: str
    hidden_size: int
    embed_size: int
    parameters: int  # whole model
    recurrent_parameters: int  # the recurrent stack only
    budget: int | None

    @property
    def deviation(self) -> float:
        """Relative distance to the budget, (P - budget) / budget (0 without a budget)."""
        return 0.0 if not self.budget else (self.parameters - self.budget) / self.budget


def recurrent_parameters(cfg: LanguageModelConfig) -> int:
    """Parameters of the recurrent stack: the model minus embedding and decoder."""
    emb = cfg.vocab_size * cfg.embed_size
    dec = cfg.vocab_size * (0 if cfg.tie_weights else cfg.output_size) + cfg.vocab_size
    return cfg.num_parameters() - emb - dec


def sized(
    model: LanguageModelConfig, hidden: int, embed_follows_hidden: bool
) -> LanguageModelConfig:
    """``model`` with hidden size ``hidden`` (and embedding width too, under that rule)."""
    embed = hidden if embed_follows_hidden else model.embed_size
    return replace(model, hidden_size=hidden, embed_size=embed)


def match_hidden_size(
    model: LanguageModelConfig,
    budget: int,
    *,
    embed_follows_hidden: bool = False,
    tolerance: float = PARAM_TOLERANCE,
) -> ParamMatch:
    """The integer hidden size whose whole-model parameter count is closest to ``budget``.

    ``model`` fixes the cell, vocabulary size, layers, tying and (unless
    ``embed_follows_hidden``, the rule D = H) the embedding width. The count P(H) grows strictly
    with H, so a bisection finds the crossing and the closer of its two neighbours wins.
    Raises :class:`ConfigError` when no H lands within ``tolerance`` of the budget.
    """
    if model.vocab_size < 2:
        raise ConfigError("parameter matching needs the vocabulary size; load the data first")
    if not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"the parameter budget must be a positive integer, got {budget!r}")

    def count(h: int) -> int:
        return sized(model, h, embed_follows_hidden).num_parameters()

    hi = 1
    while count(hi) < budget:
        hi *= 2
    lo = hi // 2  # count(lo) < budget <= count(hi), or hi == 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < budget:
            lo = mid
        else:
            hi = mid
    candidates = [h for h in (lo, hi) if h >= 1]
    best = min(candidates, key=lambda h: (abs(count(h) - budget), h))
    cfg = sized(model, best, embed_follows_hidden)
    found = cfg.num_parameters()
    if abs(found - budget) > tolerance * budget:
        smallest = count(1)
        if found > budget and best == 1:
            hint = (
                f"even hidden size 1 needs {smallest:,} ({model.vocab_size:,} symbols x embedding "
                f"{cfg.embed_size}); raise --params or lower --embed"
            )
        else:
            hint = f"the closest is hidden size {best} with {found:,}; choose a larger --params"
        raise ConfigError(
            f"no {model.cell} hidden size lands within {tolerance:.0%} of {budget:,} "
            f"parameters: {hint}"
        )
    return ParamMatch(model.cell, best, cfg.embed_size, found, recurrent_parameters(cfg), budget)


# --------------------------------------------------------------------------- the grid
@dataclass
class GridConfig:
    """A comparison grid: the axes, one size rule, and the settings every run shares.

    Attributes:
        data: the text (its ``data_fraction`` is replaced by each point of ``data_fractions``).
        model: template of the model (layers, embedding width, dropout, tying, init); the cell
            and hidden size are set per run.
        optim: the optimizer every run uses (the same for all cells).
        train: template of the loop (batch, budgets, device); bptt, seed, steps and the
            validation interval are set per run. Its ``eval_every`` (if set) fixes the interval.
        cells, data_fractions, bptts, seeds: the axes.
        lrs: learning rates to search (an axis; empty: just ``optim.lr``). The summary keeps,
            per cell, fraction and tau, the rate with the best mean validation figure.
        cell_lrs: one fixed rate per cell (every cell of the grid), e.g. the rates an earlier
            search chose; excludes ``lrs``.
        params: the parameter budget (whole model); None gives every cell ``model.hidden_size``.
        embed_follows_hidden: the embedding rule D = H (forced by weight tying).
        max_tokens: a token budget per run, turned into steps = ceil(tokens / (batch * tau)).
        eval_points: validations per run when the run length is known (learning curves).
        target_ppl: the validation perplexity "time to target" is measured at (for piano
            rolls: the validation NLL per step); None: the worst final validation figure of the
            grid, so every finished run reaches it.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: LanguageModelConfig = field(default_factory=lambda: LanguageModelConfig(num_layers=1))
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            optimizer="adam", lr=2e-3, clip=1.0, schedule="constant"
        )
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    cells: tuple[str, ...] = ("rnn", "gru", "lstm")
    data_fractions: tuple[float, ...] = (1.0,)
    bptts: tuple[int, ...] = (35,)
    seeds: tuple[int, ...] = (1,)
    lrs: tuple[float, ...] = ()
    cell_lrs: dict[str, float] = field(default_factory=dict)
    params: int | None = None
    embed_follows_hidden: bool = False
    max_tokens: int | None = None
    eval_points: int = 20
    target_ppl: float | None = None

    def __post_init__(self) -> None:
        self.cells = tuple(self.cells)
        self.data_fractions = tuple(float(f) for f in self.data_fractions)
        self.bptts = tuple(self.bptts)
        self.seeds = tuple(self.seeds)
        self.lrs = tuple(float(lr) for lr in self.lrs)
        if len(set(self.lrs)) != len(self.lrs):
            raise ConfigError(f"learning rates repeat a value: {self.lrs}; list each once")
        self.cell_lrs = {cell: float(lr) for cell, lr in self.cell_lrs.items()}
        named = [(f"{lr}", lr) for lr in self.lrs]
        named += [(f"{cell}={lr}", lr) for cell, lr in self.cell_lrs.items()]
        for text, lr in named:
            if not (lr > 0 and math.isfinite(lr)):
                raise ConfigError(f"learning rates must be positive numbers, got {text}")
        if self.cell_lrs:
            if self.lrs:
                raise ConfigError(
                    "give either learning rates to search or one rate per cell, not both"
                )
            missing = [c for c in self.cells if c not in self.cell_lrs]
            if missing:
                raise ConfigError(f"no learning rate for cell(s) {', '.join(missing)}")
        for name in ("cells", "data_fractions", "bptts", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"the grid needs at least one value for {name.replace('_', ' ')}")
            if len(set(values)) != len(values):
                raise ConfigError(
                    f"{name.replace('_', ' ')} repeat a value: {values}; list each once"
                )
        for cell in self.cells:
            if cell not in CELL_NAMES:
                raise ConfigError(f"unknown cell {cell!r}; choose from {', '.join(CELL_NAMES)}")
        for f in self.data_fractions:
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"data fractions must be in (0, 1], got {f}")
        for tau in self.bptts:
            if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
                raise ConfigError(f"BPTT windows must be positive integers, got {tau!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max-tokens must be positive, got {self.max_tokens}")
        if self.eval_points < 1:
            raise ConfigError(f"eval points must be at least 1, got {self.eval_points}")
        if self.target_ppl is not None and not self.target_ppl > 1.0:
            raise ConfigError(f"the target perplexity must be above 1, got {self.target_ppl}")
        if self.model.tie_weights:
            self.embed_follows_hidden = True  # tying needs D = H

    def to_dict(self) -> dict[str, Any]:
        """The grid as plain data (what ``grid.json`` holds)."""
        return asdict(self)

    @property
    def learning_rates(self) -> tuple[float, ...]:
        """The rates the grid trains with: ``lrs``, or the optimizer's own rate."""
        return self.lrs or (self.optim.lr,)

    def rates_for(self, cell: str) -> tuple[float, ...]:
        """The rates ``cell`` trains with: its own fixed rate, else :attr:`learning_rates`."""
        return (self.cell_lrs[cell],) if cell in self.cell_lrs else self.learning_rates

    @property
    def searches_lr(self) -> bool:
        """Whether the grid has a learning-rate axis (several rates per cell)."""
        return len(self.learning_rates) > 1 and not self.cell_lrs

    @property
    def shows_lr(self) -> bool:
        """Whether tables and run ids name the rate (a search, or rates that differ by cell)."""
        return self.searches_lr or bool(self.cell_lrs)

    def describe_rates(self) -> str:
        """The rates in prose: "0.001, 0.01" or "per cell rnn 0.01, gru 0.003"."""
        if self.cell_lrs:
            return "per cell " + ", ".join(f"{c} {self.cell_lrs[c]:g}" for c in self.cells)
        return ", ".join(f"{lr:g}" for lr in self.learning_rates)


# --------------------------------------------------------------------------- the plan
@dataclass
class PlannedRun:
    """One point of the grid and the run config that trains it."""

    run_id: str
    cell: str
    data_fraction: float
    bptt: int
    seed: int
    size: ParamMatch
    config: RunConfig

    @property
    def lr(self) -> float:
        """The learning rate this run trains with."""
        return self.config.optim.lr

    def directory(self, grid_dir: Path) -> Path:
        """Where this run trains in the grid directory ``grid_dir``: ``grid_dir/runs/<run-id>``."""
        return grid_dir / "runs" / self.run_id


def run_id(
    cell: str, hidden: int, fraction: float, bptt: int, seed: int, lr: float | None = None
) -> str:
    """A readable, unique directory name for a grid point, e.g. ``gru-h180-f0.3-t35-s1``
    (``gru-h180-f0.3-t35-lr0.001-s1`` in a grid of several learning rates)."""
    rate = "" if lr is None else f"-lr{lr:g}"
    return f"{cell}-h{hidden}-f{fraction:g}-t{bptt}{rate}-s{seed}"


def output_spec(data: LMData | RollData) -> tuple[int, str]:
    """The output size and head the data needs: (vocabulary, softmax) or (88, sigmoid)."""
    if isinstance(data, RollData):
        return N_PITCHES, "sigmoid"
    return len(data.vocab), "softmax"


def match_sizes(grid: GridConfig, vocab_size: int, head: str = "softmax") -> dict[str, ParamMatch]:
    """The size of every cell of the grid: matched to ``grid.params``, or the fixed hidden size."""
    sizes = {}
    for cell in grid.cells:
        model = replace(grid.model, cell=cell, vocab_size=vocab_size, head=head)
        if grid.params is None:
            cfg = sized(model, model.hidden_size, grid.embed_follows_hidden)
            sizes[cell] = ParamMatch(
                cell,
                cfg.hidden_size,
                cfg.embed_size,
                cfg.num_parameters(),
                recurrent_parameters(cfg),
                None,
            )
        else:
            sizes[cell] = match_hidden_size(
                model, grid.params, embed_follows_hidden=grid.embed_follows_hidden
            )
    return sizes


def planned_steps(
    grid: GridConfig, bptt: int, train_tokens: int, windows_per_epoch: int | None = None
) -> int | None:
    """Steps a run will take if its length is known (step, token or epoch budget), else None.

    ``windows_per_epoch`` defaults to the text layout's (``train_tokens`` in ``batch`` columns).
    """
    t = grid.train
    if windows_per_epoch is None:
        windows_per_epoch = max(1, math.ceil((train_tokens // t.batch_size - 1) / bptt))
    limits = [t.epochs * windows_per_epoch]
    if t.max_steps is not None:
        limits.append(t.max_steps)
    if grid.max_tokens is not None:
        limits.append(math.ceil(grid.max_tokens / (t.batch_size * bptt)))
    if t.max_minutes is not None and t.max_steps is None and grid.max_tokens is None:
        return None  # only the clock ends it
    return min(limits)


# --------------------------------------------------------------------------- data fractions
def fraction_length(n_train: int, fraction: float) -> int:
    """Training tokens kept for ``fraction`` (the rule of :func:`rnnlab.data.dataset.load_data`)."""
    return n_train if fraction >= 1.0 else max(2, int(n_train * fraction))


def fraction_data(data: LMData | RollData, fraction: float) -> Any:
    """The first ``fraction`` of the training stream (or of the training pieces); same
    vocabulary, valid and test."""
    if isinstance(data, RollData):
        return replace(data, train=fraction_pieces(data.train, fraction))
    return replace(data, train=data.train[: fraction_length(len(data.train), fraction)])


def plan_grid(grid: GridConfig, data: LMData | RollData) -> list[PlannedRun]:
    """Every run of the grid, in order cell, fraction, tau, lr, seed, with its full run config."""
    vocab_size, head = output_spec(data)
    rolls = head == "sigmoid"
    if rolls and grid.max_tokens is not None:
        raise ConfigError(
            "--max-tokens is for text; budget piano-roll runs with --epochs, --max-steps or "
            "--max-minutes"
        )
    sizes = match_sizes(grid, vocab_size, head)
    runs = []
    for cell in grid.cells:
        rates = grid.rates_for(cell)
        size = sizes[cell]
        model = replace(
            grid.model,
            cell=cell,
            vocab_size=0,
            hidden_size=size.hidden_size,
            embed_size=size.embed_size,
            head=head,
        )
        for fraction in grid.data_fractions:
            part = fraction_data(data, fraction)
            train_tokens = len(part.train) if not rolls else 0
            for tau in grid.bptts:
                if not rolls:
                    try:  # fail before hours of training, not at the run that lacks text
                        check_enough(train_tokens, grid.train.batch_size, tau)
                    except DataError as e:
                        raise DataError(f"data fraction {fraction:g}, bptt {tau}: {e}") from None
                per_epoch = steps_per_epoch(part, grid.train.batch_size, tau) if rolls else None
                loop = _window_loop(grid, tau, planned_steps(grid, tau, train_tokens, per_epoch))
                for lr, seed in itertools.product(rates, grid.seeds):
                    config = RunConfig(
                        data=replace(grid.data, data_fraction=fraction),
                        model=model,
                        optim=replace(grid.optim, lr=lr),
                        train=replace(loop, seed=seed),
                    )
                    rate = lr if grid.shows_lr else None
                    rid = run_id(cell, size.hidden_size, fraction, tau, seed, rate)
                    runs.append(PlannedRun(rid, cell, fraction, tau, seed, size, config))
    return runs


def _window_loop(grid: GridConfig, tau: int, steps: int | None) -> TrainConfig:
    """The training loop of the runs at window ``tau`` (the seed is set per run): the token
    budget caps the steps; ``steps`` planned steps (None: only the clock ends the run) give
    ``grid.eval_points`` validations, unless the template fixes the interval."""
    t = grid.train
    eval_every = t.eval_every or (
        max(1, steps // grid.eval_points) if steps else DEFAULT_EVAL_EVERY
    )
    max_steps = t.max_steps
    if grid.max_tokens is not None:
        token_steps = math.ceil(grid.max_tokens / (t.batch_size * tau))
        max_steps = token_steps if max_steps is None else min(max_steps, token_steps)
    return replace(
        t,
        bptt=tau,
        max_steps=max_steps,
        eval_every=eval_every,
        save_every=t.save_every or eval_every,
        log_every=min(t.log_every, eval_every),
    )
