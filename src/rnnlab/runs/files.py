"""Housekeeping of a run directory: the metrics file and the temporary files of killed writers."""

from __future__ import annotations

import json
from pathlib import Path

from rnnlab.atomic import temp_path, write_atomic
from rnnlab.runs import checkpoint as ck

METRICS = "metrics.jsonl"


_RUN_FILES = (ck.LAST, ck.BEST, ck.RUN_CONFIG, METRICS, "results.json")


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temporary files that a killed process left in ``run_dir`` (``.<name>.tmp-<pid>``
    of the run's own files; never this process's)."""
    for name in _RUN_FILES:
        mine = temp_path(run_dir / name)
        for tmp in run_dir.glob(temp_path(name, "*").name):
            if tmp != mine:
                try:
                    tmp.unlink()
                except OSError:
                    pass


def trim_metrics(path: Path, step: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (the checkpoint being resumed).

    Rows written after the checkpoint by a run that then died, and a row cut off by the crash,
    are dropped, so the resumed run's rows follow on without duplicates.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    lines = text.splitlines()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            keep.append(line)
    if len(keep) == len(lines) and (not text or text.endswith("\n")):
        return
    try:
        write_atomic(path, "".join(line + "\n" for line in keep).encode("utf-8"))
    except OSError as e:
        raise ck.CheckpointError(
            f"could not rewrite {path}: {e.strerror or e}; free disk space or fix permissions"
        ) from None
