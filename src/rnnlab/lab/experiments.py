"""The architecture comparison grid behind ``rnnlab compare``: runs, tables and plots.

A grid crosses four axes and trains one run per point, each through the same
:class:`rnnlab.training.trainer.Trainer` as ``rnnlab train``, in its own directory ``OUT/runs/<run-id>``::

    cells  x  data fractions  x  BPTT windows tau  x  learning rates  x  seeds    (one budget)

**Sizes are matched by parameter count**, as Chung et al. (2014) matched their RNN, GRU and LSTM:
for a budget ``P`` each cell gets the integer hidden size ``H`` whose model has the parameter
count closest to ``P`` (within 2%, else :class:`ConfigError`). The budget counts the *whole*
model, embedding + recurrent stack + decoder, i.e. exactly what ``results.json`` reports::

    P(H) = V*D + sum_l G*H*(I_l + H + 2) + V*H + V        (G gates: 1 RNN, 3 GRU, 4 LSTM)

Why the whole model: the decoder reads ``h`` so its width ``V*H`` is part of what a cell
costs. Matching the recurrent part only would hand the cell with the fewest gates a wider
decoder (on PTB's 10k words, millions of extra weights) and so more capacity for free. With a
fixed embedding width ``D`` the embedding is the same constant for every cell; the recurrent
share is reported next to the total so both views can be read off the table.

**Data fractions** train on the first fraction of the training split. The vocabulary is built
once on the *full* training split, so every fraction predicts over the same symbols and the
perplexities compare; the corpus is tokenized once for the whole grid.

**Resuming**: a run whose directory holds ``results.json`` is finished and not redone; a run
with a checkpoint continues from it (``Trainer(resume=True)``); so re-running an interrupted
``rnnlab compare`` finishes the grid.

**Report**: ``results.csv`` (one row per run), ``summary.md`` (the table and mean ± sample std
over seeds per (cell, fraction, tau, lr)) and PNG plots: learning curves of validation perplexity
by tokens and by wall time, perplexity against data fraction, perplexity against tau.

**Learning rates**: with several (``lrs``), each (cell, fraction, tau) keeps the rate with the
best mean validation figure ("selected by validation" in the summary); the plots show the
selected rate's runs. Run ids carry the rate only when the grid has several. A two-stage study
searches the rates in a small grid (one seed, all data) and gives every cell its chosen rate in
the main grid (``cell_lrs``, from :func:`chosen_rates`), instead of crossing the rate axis with
every other axis.

**Piano rolls** (a music corpus, :mod:`rnnlab.data.rolls`): the same grid, with the figure the
negative log-likelihood per time step (columns ``valid_nll``, ``test_nll``, ``target_nll``; no
bits per character), "tokens" counting predicted time steps (frames), data fractions taking the
first pieces, and the learning curves drawn by epoch and by wall time (as Chung et al. 2014
plot them). The model is the sigmoid head with the matched hidden size.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.batching import check_enough
from rnnlab.data.dataset import DataConfig, LMData, load_data
from rnnlab.data.rolls import N_PITCHES, PIANOROLL, RollData, fraction_pieces
from rnnlab.errors import ConfigError, DataError, RnnlabError, TrainingDiverged
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.recurrent import CELL_NAMES
from rnnlab.training.strategies import steps_per_epoch
from rnnlab.training.trainer import Trainer

log = logging.getLogger(__name__)

PARAM_TOLERANCE = 0.02  # matched sizes land within 2% of the budget
DEFAULT_EVAL_EVERY = 100  # steps between validations when the run length is unknown (time budget)
RESULTS = "results.json"


@dataclass(frozen=True)
class Metric:
    """The figure a grid reports: perplexity for text, NLL per time step for piano rolls."""

    key: str  # column suffix: valid_<key>, test_<key>, target_<key>
    name: str  # in prose and on axes
    log_scale: bool  # plot on a log axis
    by_epoch: bool  # learning curves by epoch (piano rolls) rather than by tokens


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
    dec = cfg.vocab_size * (0 if cfg.tie_weights else cfg.hidden_size) + cfg.vocab_size
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
        if self.cell_lrs:
            return "per cell " + ", ".join(f"{c} {self.cell_lrs[c]:g}" for c in self.cells)
        return ", ".join(f"{lr:g}" for lr in self.learning_rates)


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
        return self.config.optim.lr


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
                steps = planned_steps(grid, tau, train_tokens, per_epoch)
                t = grid.train
                eval_every = t.eval_every or (
                    max(1, steps // grid.eval_points) if steps else DEFAULT_EVAL_EVERY
                )
                max_steps = t.max_steps
                if grid.max_tokens is not None:
                    token_steps = math.ceil(grid.max_tokens / (t.batch_size * tau))
                    max_steps = token_steps if max_steps is None else min(max_steps, token_steps)
                for lr, seed in itertools.product(rates, grid.seeds):
                    train = replace(
                        t,
                        bptt=tau,
                        seed=seed,
                        max_steps=max_steps,
                        eval_every=eval_every,
                        save_every=t.save_every or eval_every,
                        log_every=min(t.log_every, eval_every),
                    )
                    config = RunConfig(
                        data=replace(grid.data, data_fraction=fraction),
                        model=model,
                        optim=replace(grid.optim, lr=lr),
                        train=train,
                    )
                    rate = lr if grid.shows_lr else None
                    rid = run_id(cell, size.hidden_size, fraction, tau, seed, rate)
                    runs.append(PlannedRun(rid, cell, fraction, tau, seed, size, config))
    return runs


# --------------------------------------------------------------------------- data
def load_grid_data(grid: GridConfig) -> LMData | RollData:
    """Tokenize the grid's text once, with the vocabulary of the full training split (or read
    the piano rolls once)."""
    return load_data(replace(grid.data, data_fraction=1.0))


def fraction_length(n_train: int, fraction: float) -> int:
    """Training tokens kept for ``fraction`` (the rule of :func:`rnnlab.data.dataset.load_data`)."""
    return n_train if fraction >= 1.0 else max(2, int(n_train * fraction))


def fraction_data(data: LMData | RollData, fraction: float) -> Any:
    """The first ``fraction`` of the training stream (or of the training pieces); same
    vocabulary, valid and test."""
    if isinstance(data, RollData):
        return replace(data, train=fraction_pieces(data.train, fraction))
    return replace(data, train=data.train[: fraction_length(len(data.train), fraction)])


# --------------------------------------------------------------------------- running
RunCallback = Callable[[int, int, PlannedRun, str], None]


@dataclass
class GridReport:
    """What a grid run produced: one row per run and the files written."""

    rows: list[dict[str, Any]]
    target_ppl: float | None
    files: list[Path]
    notes: list[str]


def run_grid(
    grid: GridConfig,
    out_dir: str | Path,
    *,
    data: LMData | None = None,
    progress: bool = False,
    on_run: RunCallback | None = None,
) -> GridReport:
    """Train every run of the grid that is not finished yet, then write the report.

    ``on_run(index, total, run, status)`` is called before each run with status "done"
    (finished earlier, skipped), "resume" (continues from its checkpoint) or "start".
    """
    out = Path(out_dir)
    data = data if data is not None else load_grid_data(grid)
    runs = plan_grid(grid, data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(grid.to_dict(), indent=2) + "\n", encoding="utf-8")
    by_fraction = {f: fraction_data(data, f) for f in grid.data_fractions}
    for i, run in enumerate(runs):
        run_dir = out / "runs" / run.run_id
        status = prepare_run_dir(run, run_dir)
        if on_run is not None:
            on_run(i + 1, len(runs), run, status)
        if status == "done":
            continue
        train_one(
            run,
            run_dir,
            by_fraction[run.data_fraction],
            resume=status == "resume",
            progress=progress,
        )
    return write_report(grid, out, runs, level=data.level)


def prepare_run_dir(run: PlannedRun, run_dir: Path) -> str:
    """Check a run directory against the plan: "done", "resume" or "start"."""
    saved = run_dir / "run.json"
    if saved.is_file():
        try:
            old = RunConfig.from_dict(json.loads(saved.read_text(encoding="utf-8"))).to_dict()
        except (json.JSONDecodeError, TypeError, RnnlabError):
            old = None
        if old is None or _comparable(old) != _comparable(run.config.to_dict()):
            raise ConfigError(
                f"{run_dir} was trained with other settings than this grid; use another --out or "
                "the flags of the first run"
            )
    if (run_dir / RESULTS).is_file():
        return "done"
    if (run_dir / "last.safetensors").is_file():
        return "resume"
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # rows of an attempt that saved nothing
    return "start"


def _comparable(config: dict[str, Any]) -> str:
    """A run config as canonical JSON, minus what may change between sessions (the device)."""
    config = json.loads(json.dumps(config))
    config["train"].pop("device", None)
    config["train"].pop("threads", None)
    return json.dumps(config, sort_keys=True)


def train_one(
    run: PlannedRun, run_dir: Path, data: LMData, *, resume: bool, progress: bool
) -> None:
    """Train one run through the shared Trainer; a diverged run is recorded, not fatal."""
    log.info("%s: %s", run.run_id, "resuming" if resume else "training")
    trainer = Trainer(run.config, run_dir, resume=resume, progress=progress, data=data)
    try:
        trainer.fit()
    except TrainingDiverged as e:
        log.warning("%s diverged: %s", run.run_id, e)
        results = {
            "diverged": str(e),
            "steps": trainer.progress.step,
            "tokens": trainer.progress.tokens,
        }
        (run_dir / RESULTS).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    except RnnlabError as e:
        if e.exit_code == 130:
            raise RnnlabError(
                f"interrupted; {run_dir} keeps its checkpoint: rerun the same rnnlab compare "
                "command to finish the grid",
                exit_code=130,
            ) from None
        raise


# --------------------------------------------------------------------------- collecting
def valid_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The logged validations of a run, one per step (a resumed run's re-logged rows win)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind") == "valid":
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def train_speed(run_dir: Path) -> float | None:
    """Median training throughput (tokens/s) over the logged training rows."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    speeds = [
        row["tokens_per_s"]
        for row in map(json.loads, filter(str.strip, path.read_text(encoding="utf-8").splitlines()))
        if row.get("kind") == "train" and row.get("tokens_per_s")
    ]
    return statistics.median(speeds) if speeds else None


def collect_row(run: PlannedRun, run_dir: Path, metric: Metric = PERPLEXITY) -> dict[str, Any]:
    """One CSV row: the grid point, sizes, final figures and throughput of a run."""
    results = json.loads((run_dir / RESULTS).read_text(encoding="utf-8"))
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "cell": run.cell,
        "params": results.get("parameters", run.size.parameters),
        "recurrent_params": run.size.recurrent_parameters,
        "hidden": run.size.hidden_size,
        "embed": run.size.embed_size,
        "layers": run.config.model.num_layers,
        "data_fraction": run.data_fraction,
        "bptt": run.bptt,
        "seed": run.seed,
        "lr": run.lr,
        "status": "diverged" if "diverged" in results else "ok",
        "steps": results.get("steps"),
        "tokens": results.get("tokens"),
        "wall_time_s": results.get("wall_time"),
    }
    for split in ("valid", "test"):
        r = results.get(split) or {}
        if metric is NLL:
            row[f"{split}_nll"] = r.get("nll_per_step")
        else:
            row[f"{split}_ppl"] = r.get("perplexity")
            row[f"{split}_bpc"] = r.get("bpc")
    speed = train_speed(run_dir)
    if speed is None and results.get("wall_time"):
        speed = results["tokens"] / results["wall_time"]
    row["tokens_per_s"] = speed
    return row


def add_time_to_target(
    row: dict[str, Any],
    curve: list[dict[str, Any]],
    target: float | None,
    metric: Metric = PERPLEXITY,
) -> None:
    """Tokens, steps and wall time at the first logged validation at or below ``target``."""
    row[f"target_{metric.key}"] = target
    row["tokens_to_target"] = row["steps_to_target"] = row["wall_time_to_target_s"] = None
    if target is None:
        return
    for point in curve:
        if point[f"valid_{metric.key}"] <= target * (1 + 1e-4):  # logs round to 6 digits
            row["tokens_to_target"] = point["tokens"]
            row["steps_to_target"] = point["step"]
            row["wall_time_to_target_s"] = point["wall_time"]
            return


# --------------------------------------------------------------------------- reporting
CSV_COLUMNS = (
    "run_id", "cell", "params", "recurrent_params", "hidden", "embed", "layers", "data_fraction",
    "bptt", "seed", "lr", "status", "steps", "tokens", "valid_ppl", "test_ppl", "valid_bpc",
    "test_bpc", "tokens_per_s", "wall_time_s", "target_ppl", "tokens_to_target",
    "steps_to_target", "wall_time_to_target_s",
)  # fmt: skip
_NLL_COLUMNS = {"valid_ppl": "valid_nll", "test_ppl": "test_nll", "target_ppl": "target_nll"}


def csv_columns(metric: Metric = PERPLEXITY) -> tuple[str, ...]:
    """The CSV columns: perplexity and bits per character for text, NLL per step for rolls."""
    if metric is PERPLEXITY:
        return CSV_COLUMNS
    return tuple(_NLL_COLUMNS.get(c, c) for c in CSV_COLUMNS if not c.endswith("_bpc"))


def selected_rates(
    rows: Sequence[dict[str, Any]], metric: Metric = PERPLEXITY
) -> dict[tuple[str, float, int], float]:
    """Per (cell, fraction, tau): the learning rate with the best mean final validation figure
    over its finished seeds (lower is better for both perplexity and NLL)."""
    means: dict[tuple[str, float, int], dict[float, list[float]]] = {}
    for row in rows:
        value = row.get(f"valid_{metric.key}")
        if row["status"] != "ok" or value is None or not math.isfinite(value):
            continue
        key = (row["cell"], row["data_fraction"], row["bptt"])
        means.setdefault(key, {}).setdefault(row["lr"], []).append(value)
    return {
        key: min(by_lr, key=lambda lr: (statistics.fmean(by_lr[lr]), lr))
        for key, by_lr in means.items()
    }


def chosen_rates(grid_dir: str | Path) -> dict[str, float]:
    """Each cell's learning rate as selected by validation in an earlier grid (its
    ``results.csv``): the second stage of a search. A cell whose choice differs between the
    grid's fractions or windows has no single rate: :class:`ConfigError`."""
    path = Path(grid_dir) / "results.csv"
    try:
        with path.open(encoding="utf-8", newline="") as f:
            raw = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"cannot read the searched grid's {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error):
        raise ConfigError(f"{path} is not a results table of rnnlab compare") from None
    key = next((k for k in ("valid_ppl", "valid_nll") if raw and k in raw[0]), None)
    needed = {"cell", "data_fraction", "bptt", "lr", "status"}
    if key is None or not needed <= set(raw[0]):
        raise ConfigError(f"{path} is not a results table of rnnlab compare (or has no rows)")
    metric = PERPLEXITY if key == "valid_ppl" else NLL
    rows = []
    for r in raw:
        try:
            value = float(r[key]) if r[key] not in ("", None) else None
            rows.append(
                {
                    "cell": r["cell"],
                    "data_fraction": float(r["data_fraction"]),
                    "bptt": int(r["bptt"]),
                    "lr": float(r["lr"]),
                    "status": r["status"],
                    key: value,
                }
            )
        except ValueError:
            raise ConfigError(f"{path}: unreadable row {r.get('run_id', '?')}") from None
    per_cell: dict[str, set[float]] = {}
    for (cell, _, _), lr in selected_rates(rows, metric).items():
        per_cell.setdefault(cell, set()).add(lr)
    split = sorted(c for c, lrs in per_cell.items() if len(lrs) > 1)
    if split:
        raise ConfigError(
            f"{path}: the search chose different rates for {', '.join(split)} at different "
            "fractions or windows; give them as --lr cell=rate"
        )
    if not per_cell:
        raise ConfigError(f"{path} has no finished run to choose a learning rate from")
    return {cell: lrs.pop() for cell, lrs in per_cell.items()}


def is_selected(row: dict[str, Any], chosen: dict[tuple[str, float, int], float]) -> bool:
    return chosen.get((row["cell"], row["data_fraction"], row["bptt"])) == row["lr"]


def write_report(
    grid: GridConfig, out: Path, runs: Sequence[PlannedRun], *, level: str
) -> GridReport:
    """results.csv, summary.md and the plots, from the finished runs of ``runs``."""
    metric = metric_for(level)
    valid_key = f"valid_{metric.key}"
    finished = [r for r in runs if (out / "runs" / r.run_id / RESULTS).is_file()]
    rows = [collect_row(r, out / "runs" / r.run_id, metric) for r in finished]
    curves = {r.run_id: valid_curve(out / "runs" / r.run_id) for r in finished}
    chosen = selected_rates(rows, metric)
    finals = [
        row[valid_key]
        for row in rows
        if row["status"] == "ok" and row[valid_key] is not None and is_selected(row, chosen)
    ]
    target = grid.target_ppl if grid.target_ppl is not None else (max(finals) if finals else None)
    for row in rows:
        add_time_to_target(row, curves[row["run_id"]], target, metric)
    files = [write_csv(out / "results.csv", rows, csv_columns(metric))]
    shown = [row for row in rows if is_selected(row, chosen) or row["status"] != "ok"]
    plots, notes = make_plots(shown, curves, grid, out, metric)
    if grid.searches_lr:
        notes = ["the plots show each cell's learning rate selected by validation", *notes]
    files += plots
    files.append(write_summary(out / "summary.md", grid, rows, target, level, plots, notes))
    return GridReport(rows, target, files, notes)


def write_csv(
    path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS
) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell_text(row.get(k), 6) for k in columns})
    return path


def _cell_text(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}"
    return str(value)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _pm(values: Sequence[float | None], fmt: str) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    mean, std = mean_std(vals)
    return f"{mean:{fmt}} ± {'n/a' if std is None else format(std, fmt)}"


def summarize(rows: Sequence[dict[str, Any]], metric: Metric = PERPLEXITY) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (cell, data fraction, tau, learning rate), in grid order."""
    k = metric.key
    fmt = ".2f" if metric is PERPLEXITY else ".3f"
    groups: dict[tuple[str, float, int, float | None], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["cell"], row["data_fraction"], row["bptt"], row.get("lr"))
        groups.setdefault(key, []).append(row)
    out = []
    for (cell, fraction, tau, lr), members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        summary = {
            "cell": cell,
            "params": members[0]["params"],
            "data_fraction": fraction,
            "bptt": tau,
            "lr": lr,
            "n": len(ok),
            "diverged": len(members) - len(ok),
            f"valid_{k}": _pm([m[f"valid_{k}"] for m in ok], fmt),
            f"test_{k}": _pm([m[f"test_{k}"] for m in ok], fmt),
            "tokens_per_s": _pm([m["tokens_per_s"] for m in ok], ".0f"),
            "wall_time_to_target_s": _pm([m["wall_time_to_target_s"] for m in ok], ".1f"),
            "tokens_to_target": _pm([m["tokens_to_target"] for m in ok], ".0f"),
        }
        if metric is PERPLEXITY:
            summary["test_bpc"] = _pm([m["test_bpc"] for m in ok], ".3f")
        out.append(summary)
    return out


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for r in rows:
        lines.append(
            "| " + " | ".join(v if isinstance(v, str) else _cell_text(v, 5) for v in r) + " |"
        )
    return "\n".join(lines)


def _vs(row: dict[str, Any], grid: GridConfig) -> str:
    """A run's parameter count relative to the budget, e.g. "+0.42%"."""
    return f"{(row['params'] - grid.params) / grid.params:+.2%}" if grid.params else "–"


def write_summary(
    path: Path,
    grid: GridConfig,
    rows: Sequence[dict[str, Any]],
    target: float | None,
    level: str,
    plots: Sequence[Path],
    notes: Sequence[str],
) -> Path:
    """summary.md: settings, sizes, the mean ± std table, every run, plots and notes."""
    metric = metric_for(level)
    k = metric.key
    char = level == "char"
    several_lrs = grid.shows_lr
    t = grid.train
    budget = (
        ", ".join(
            s
            for s in (
                f"{t.max_steps} steps" if t.max_steps else "",
                f"{grid.max_tokens:,} tokens" if grid.max_tokens else "",
                f"{t.max_minutes:g} minutes" if t.max_minutes else "",
            )
            if s
        )
        or f"{t.epochs} epochs"
    )
    target_rule = (
        "given"
        if grid.target_ppl is not None
        else f"the worst final validation {metric.name} of the grid"
    )
    source = (
        f"Piano rolls: {grid.data.describe()} (tokens are predicted time steps)"
        if metric is NLL
        else f"Text: {grid.data.describe()} ({level} level)"
    )
    rates = grid.describe_rates()
    extras = []
    if grid.optim.weight_noise:
        extras.append(f"weight noise {grid.optim.weight_noise:g}")
    if t.patience:
        extras.append(f"early stopping after {t.patience} epochs without improvement")
    parts = [
        "# rnnlab compare",
        "",
        f"{source}. Budget per run: {budget}. "
        f"Optimizer {grid.optim.optimizer}, lr {rates}, clip {grid.optim.clip:g}, "
        f"schedule {grid.optim.schedule}; batch {t.batch_size}; {grid.model.num_layers} layer(s)"
        + "".join(f"; {e}" for e in extras)
        + ".",
        "",
        "Sizes are matched by the parameter count of the whole model (embedding + recurrent + "
        "decoder)"
        + (f" to a budget of {grid.params:,}." if grid.params else "; no budget: one hidden size."),
        "",
        _md_table(
            ["cell", "hidden", "embed", "params", "recurrent params", "vs budget"],
            [
                [
                    r["cell"],
                    r["hidden"],
                    r["embed"],
                    r["params"],
                    r["recurrent_params"],
                    _vs(r, grid),
                ]
                for r in {row["cell"]: row for row in rows}.values()
            ],
        ),
        "",
        "## Summary: mean ± std over seeds",
        "",
        f"Target {metric.name} {_cell_text(target, 5)} ({target_rule}); time to target is the "
        "wall time (training plus the periodic validations) at the first logged validation at or "
        "below it. Std is the sample standard deviation (n/a for one seed); tokens/s counts "
        "training steps only.",
        "",
    ]
    summary = summarize(rows, metric)
    head = ["cell", "params", "fraction", "τ"] + (["lr"] if several_lrs else [])
    head += ["n", f"valid {k}", f"test {k}"]
    head += ["test bpc"] if char else []
    head += ["tokens/s", "time to target (s)", "tokens to target"]
    body = []
    for s in summary:
        line = [s["cell"], s["params"], s["data_fraction"], s["bptt"]]
        line += [s["lr"]] if several_lrs else []
        line += [s["n"], s[f"valid_{k}"], s[f"test_{k}"]]
        line += [s["test_bpc"]] if char else []
        line += [s["tokens_per_s"], s["wall_time_to_target_s"], s["tokens_to_target"]]
        body.append(line)
    parts += [_md_table(head, body), ""]
    if grid.searches_lr:
        chosen = selected_rates(rows, metric)
        picked = [
            s for s in summary if chosen.get((s["cell"], s["data_fraction"], s["bptt"])) == s["lr"]
        ]
        parts += [
            "## Selected by validation",
            "",
            f"Per cell, fraction and τ, the learning rate with the best mean validation "
            f"{metric.name}; its test figure is the result.",
            "",
            _md_table(
                ["cell", "fraction", "τ", "lr", "n", f"valid {k}", f"test {k}"],
                [
                    [
                        s["cell"],
                        s["data_fraction"],
                        s["bptt"],
                        s["lr"],
                        s["n"],
                        s[f"valid_{k}"],
                        s[f"test_{k}"],
                    ]
                    for s in picked
                ],
            ),
            "",
        ]
    parts += ["## Every run", ""]
    cols = ["run_id", "params", "data_fraction", "bptt", "seed"] + (["lr"] if several_lrs else [])
    cols += ["status", f"valid_{k}", f"test_{k}"]
    cols += ["test_bpc"] if char else []
    cols += ["tokens_per_s", "wall_time_s", "tokens_to_target", "wall_time_to_target_s"]
    parts += [_md_table(cols, [[row[c] for c in cols] for row in rows]), "", "## Plots", ""]
    parts += [f"![{p.stem}]({p.name})" for p in plots] or ["(none)"]
    if notes:
        parts += ["", *[f"- {n}" for n in notes]]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- plots
def _figure(nrows: int, ncols: int) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg canvas (no pyplot, no global state) and its axes grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(4.2 * ncols, 24), min(3.3 * nrows, 18)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _plain_log_ticks(ax: Any, which: str) -> None:
    """Label a log axis with plain numbers (25, not 2.5x10^1); minor labels only within a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if hi / max(lo, 1e-12) < 10 else NullFormatter())


def _color(cell: str) -> str:
    return f"C{CELL_NAMES.index(cell) % 10}"


def make_plots(
    rows: Sequence[dict[str, Any]],
    curves: dict[str, list[dict[str, Any]]],
    grid: GridConfig,
    out: Path,
    metric: Metric = PERPLEXITY,
) -> tuple[list[Path], list[str]]:
    """Draw the PNG plots of a grid; return the files and notes on plots left out.

    Learning curves of the validation figure by tokens (text) or by epoch (piano rolls, as
    Chung et al. 2014 draw them) and by wall time; the final figure against data fraction and
    against tau.
    """
    k = metric.key
    valid_key = f"valid_{k}"
    ok = [r for r in rows if r["status"] == "ok" and r[valid_key] is not None]
    files: list[Path] = []
    notes: list[str] = []
    if not ok:
        return files, ["no finished run yet: no plots"]
    fractions = sorted({r["data_fraction"] for r in ok})
    taus = sorted({r["bptt"] for r in ok})
    target = ok[0].get(f"target_{k}")
    first_axis = (
        ("epochs", "epochs", "epoch")
        if metric.by_epoch
        else ("tokens", "tokens", "training tokens")
    )
    for axis, key, name in (first_axis, ("time", "wall_time", "wall time (s)")):
        if not any(curves.get(r["run_id"]) for r in ok):
            notes.append("learning curves not drawn: no run logged a validation")
            break
        fig, axes = _figure(len(fractions), len(taus))
        for i, f in enumerate(fractions):
            for j, tau in enumerate(taus):
                ax = axes[i][j]
                seen: set[str] = set()
                for r in ok:
                    if r["data_fraction"] != f or r["bptt"] != tau or not curves.get(r["run_id"]):
                        continue
                    curve = [c for c in curves[r["run_id"]] if key in c]
                    label = None if r["cell"] in seen else r["cell"]
                    seen.add(r["cell"])
                    xs, ys = [c[key] for c in curve], [c[valid_key] for c in curve]
                    ax.plot(xs, ys, color=_color(r["cell"]), alpha=0.8, marker=".", label=label)
                if target is not None:
                    ax.axhline(target, color="gray", linestyle="--", linewidth=0.8)
                if metric.log_scale:
                    ax.set_yscale("log")
                    _plain_log_ticks(ax, "y")
                else:  # linear: show where the curves converge, not the first epochs' drop
                    finals = [
                        r[valid_key] for r in ok if r["data_fraction"] == f and r["bptt"] == tau
                    ]
                    if finals:
                        high = min(ax.get_ylim()[1], max(finals) + 0.5 * max(finals) ** 0.5 + 1)
                        ax.set_ylim(min(finals) - 0.1 * (high - min(finals)), high)
                ax.set_title(f"data fraction {f:g}, τ = {tau}", fontsize=9)
                ax.set_xlabel(name)
                ax.set_ylabel(f"validation {metric.name}")
                ax.legend(fontsize=7)
        fig.suptitle(f"Learning curves by {name}\n(dashed: target {metric.name})", fontsize=10)
        files.append(_save(fig, out / f"learning_curves_{axis}.png"))
    for axis, values, panel_key, panel_values, fname, label in (
        ("data_fraction", fractions, "bptt", taus, f"{k}_vs_data_fraction.png", "data fraction"),
        ("bptt", taus, "data_fraction", fractions, f"{k}_vs_bptt.png", "BPTT window τ"),
    ):
        if len(values) < 2:
            only = f"{values[0]:g}" if values else "none"
            notes.append(f"{fname} not drawn: the grid has a single {label} ({only})")
            continue
        from matplotlib.ticker import NullFormatter

        fig, axes = _figure(1, len(panel_values))
        for j, pv in enumerate(panel_values):
            ax = axes[0][j]
            for cell in grid.cells:
                xs, ys, es = [], [], []
                for v in values:
                    finals = [
                        r[valid_key]
                        for r in ok
                        if r["cell"] == cell and r[axis] == v and r[panel_key] == pv
                    ]
                    if finals:
                        mean, std = mean_std(finals)
                        xs.append(v)
                        ys.append(mean)
                        es.append(std or 0.0)
                if xs:
                    ax.errorbar(
                        xs, ys, yerr=es, color=_color(cell), marker="o", capsize=3, label=cell
                    )
            ax.set_xscale("log")
            if metric.log_scale:
                ax.set_yscale("log")
                _plain_log_ticks(ax, "y")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.set_xlabel(label)
            ax.set_ylabel(f"validation {metric.name} (mean ± std)")
            other = "τ" if panel_key == "bptt" else "data fraction"
            ax.set_title(f"{other} = {pv:g}", fontsize=9)
            ax.legend(fontsize=7)
        fig.suptitle(f"Final validation {metric.name}\nagainst {label}", fontsize=10)
        files.append(_save(fig, out / fname))
    return files, notes


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path
