"""What every benchmark records: the machine it ran on, and its JSON report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def machine_info(device: torch.device | None = None) -> dict:
    """Where the numbers come from: platform, CPUs, threads, load, torch and (on CUDA) the GPU."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
            info["cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
    return info


def write_report(path: Path, report: dict, *, ascii_only: bool = True) -> None:
    """Write ``report`` as indented JSON to ``path`` (creating its folder) and say so;
    ``ascii_only=False`` keeps non-ASCII text (Chinese poems) readable, in UTF-8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=ascii_only) + "\n"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


def bench(
    loops: dict[str, Callable[[], None]], reps: int, chars: int
) -> dict[str, dict[str, float | list[float]]]:
    """Interleaved repetitions of every loop (the order rotates each repetition, so drifts in
    machine load hit every contender alike) after one warm-up each; chars/s from the median and
    from the best time."""
    for run in loops.values():  # warm up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            loops[name]()
            seconds[name].append(time.perf_counter() - start)
    return {
        name: {
            "chars_per_s": chars / statistics.median(s),
            "chars_per_s_best": chars / min(s),
            "seconds": s,
        }
        for name, s in seconds.items()
    }
