"""``benchmarks/onnx_sampler.py`` runs on a small run and reports what it promises."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # for its `_common` import
    try:
        spec = importlib.util.spec_from_file_location(
            "onnx_sampler_bench", ROOT / "benchmarks" / "onnx_sampler.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_benchmark_smoke_run(tmp_path, save_run):
    run = save_run(tmp_path / "run", "lstm", "full", layers=1)
    out = tmp_path / "bench.json"
    bench = load_benchmark()
    bench.main(["--run", str(run), "--quick", "--batches", "1", "3", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["max_logprob_difference"] < 1e-4 and report["threads"] == 1
    assert [row["batch"] for row in report["results"]] == [1, 3]
    for row in report["results"]:
        for name in ("onnx", "rnnlab_fp32", "rnnlab_int8"):
            assert row[f"{name}_chars_per_s"] > 0
        assert row["ratio_onnx_over_rnnlab_int8"] > 0
    assert report["setup_seconds"]["export"] > 0 and report["int8_note"] is None
