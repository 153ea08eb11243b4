"""Where a new run goes: its default directory (``runs/<preset or text stem>-<time>``) and the
refusal of a directory that already holds a run (a run is continued with ``--resume``, never
overwritten)."""

from __future__ import annotations

import time
from pathlib import Path

from rnnlab.config.run import RunConfig
from rnnlab.errors import ConfigError
from rnnlab.runs import checkpoint as ck

RUNS_ROOT = Path("runs")  # relative: under the directory the command runs in
TIME_FORMAT = "%Y%m%d-%H%M%S"


def run_name(config: RunConfig) -> str:
    """A run's short name: the stem of its text file, else its preset, else its corpus's name."""
    if config.data.text:
        return Path(config.data.text).stem
    return config.preset or Path(config.data.describe()).stem


def default_run_dir(config: RunConfig, when: time.struct_time | None = None) -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` for ``config``, stamped with ``when`` (default: now,
    local time)."""
    stamp = time.strftime(TIME_FORMAT, when if when is not None else time.localtime())
    return RUNS_ROOT / f"{run_name(config)}-{stamp}"


def new_run_dir(config: RunConfig, out: str | Path | None = None) -> Path:
    """The directory of a new run: ``out`` if given, else :func:`default_run_dir`."""
    return Path(out) if out else default_run_dir(config)


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds a run (it has a ``run.json``) in one line."""
    if (run_dir / ck.RUN_CONFIG).exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} "
            "or pick another --out"
        )
