"""Running a comparison grid: train every planned run in its own directory, then report.

Each run trains through the same :class:`rnnlab.training.trainer.Trainer` as ``rnnlab train``, in
``OUT/runs/<run-id>``, on its fraction of data tokenized once for the whole grid
(:func:`load_grid_data`).

**Resuming**: a run whose directory holds ``results.json`` is finished and not redone; a run
with a checkpoint continues from it (``Trainer(resume=True)``); so re-running an interrupted
``rnnlab compare`` finishes the grid. A directory trained with other settings is refused.

**Diverged runs** are recorded (``results.json`` says so) and the grid goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rnnlab.config.run import RunConfig
from rnnlab.data.dataset import LMData, load_data
from rnnlab.data.rolls import RollData
from rnnlab.errors import ConfigError, RnnlabError, TrainingDiverged
from rnnlab.lab.grid import GridConfig, PlannedRun, fraction_data, metric_for, plan_grid
from rnnlab.lab.report import write_report
from rnnlab.lab.results import RESULTS, Row, collect_results
from rnnlab.training.trainer import Trainer

log = logging.getLogger(__name__)

RunCallback = Callable[[int, int, PlannedRun, str], None]


@dataclass
class GridReport:
    """What a grid run produced: one row per run and the files written."""

    rows: list[Row]
    target_ppl: float | None
    files: list[Path]
    notes: list[str]


def load_grid_data(grid: GridConfig) -> LMData | RollData:
    """Tokenize the grid's text once, with the vocabulary of the full training split (or read
    the piano rolls once)."""
    return load_data(replace(grid.data, data_fraction=1.0))


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
        run_dir = run.directory(out)
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
    results = collect_results(grid, out, runs, metric_for(data.level))
    files, notes = write_report(grid, out, results, level=data.level)
    return GridReport(results.rows, results.target, files, notes)


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
