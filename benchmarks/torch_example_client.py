"""A real torch.nn client: pytorch/examples' word_language_model, run on rnnlab's layers.

Given a checkout of https://github.com/pytorch/examples and a folder holding WikiText-2's
``train.txt``, ``valid.txt`` and ``test.txt``, this script

1. copies ``word_language_model`` to a scratch folder twice: once untouched (torch.nn) and once
   with ONLY ``model.py`` changed by a small textual substitution, so that ``RNNModel`` builds
   ``rnnlab.LSTM`` / ``rnnlab.GRU`` / ``rnnlab.RNN`` instead of torch.nn's (``main.py``,
   ``data.py``, its training loop, ``torch.save(model)``, its ``torch.load`` under
   ``safe_globals([...torch.nn classes...])`` and its ONNX export are the example's own);
2. truncates the corpus to its first lines, so that each run takes seconds;
3. runs ``main.py`` over a matrix of its options (``--model``, ``--tied``, ``--dropout``,
   ``--nlayers``, ``--onnx-export``, ``--dry-run``) with small sizes and one epoch, for both
   copies, with the same seed;
4. writes, per option set and per copy, ok/failed, the last line of a failure and the final
   test perplexity, to ``benchmarks/results/torch_example_client/results.json``.

It is a compatibility check, not a timed benchmark::

    python benchmarks/torch_example_client.py /work/ext/examples /work/shared/data/wikitext-2
    python benchmarks/torch_example_client.py EXAMPLES DATA --models LSTM --out /tmp/r.json

It exits 1 when an option set works with torch.nn but fails with rnnlab.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine_info, write_report  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "torch_example_client" / "results.json"
MODELS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
# Small and short: every run takes seconds on one CPU core.
COMMON = [
    "--emsize", "16", "--nhid", "16", "--epochs", "1", "--bptt", "10",
    "--batch_size", "10", "--log-interval", "100000", "--lr", "20", "--seed", "1111",
]  # fmt: skip
# Option sets of the example's own flags, applied to every --model.
OPTION_SETS: dict[str, list[str]] = {
    "defaults": [],  # the example's --nlayers 2 --dropout 0.2
    "--tied": ["--tied"],
    "--dropout 0": ["--dropout", "0"],
    "--nlayers 1 --dropout 0.5": ["--nlayers", "1", "--dropout", "0.5"],
    "--nlayers 3": ["--nlayers", "3"],
    "--dry-run": ["--dry-run"],
    "--onnx-export": ["--onnx-export", "{tmp}/model.onnx"],
}
TEST_PPL = re.compile(r"End of training \| test loss\s+([0-9.]+) \| test ppl\s+([0-9.einf]+)")


def rnnlab_model_py(source: str) -> str:
    """The example's model.py with torch.nn's recurrent layers swapped for rnnlab's.

    Three substitutions and an import; everything else (embedding, dropout, decoder, tying,
    init_hidden) stays torch.nn. Raises ValueError if the file no longer has the expected
    lines, so a changed upstream file is noticed instead of silently running torch.nn.
    """
    replacements = [
        ("getattr(nn, rnn_type)(", "getattr(rnnlab, rnn_type)("),
        ("self.rnn = nn.RNN(", "self.rnn = rnnlab.RNN("),
    ]
    text = source
    for old, new in replacements:
        if old not in text:
            raise ValueError(f"model.py has no {old!r}; the example changed, update this script")
        text = text.replace(old, new)
    return text.replace("import torch.nn as nn\n", "import torch.nn as nn\nimport rnnlab\n", 1)


def truncated_corpus(data_dir: Path, dest: Path, lines: dict[str, int]) -> dict[str, int]:
    """Copy the first ``lines[split]`` lines of each split to ``dest``; return the token counts."""
    dest.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for split, n in lines.items():
        source = data_dir / f"{split}.txt"
        if not source.is_file():
            raise SystemExit(f"torch_example_client: no {source}; pass the WikiText-2 folder")
        with source.open(encoding="utf-8") as f:
            head = [line for _, line in zip(range(n), f, strict=False)]
        (dest / f"{split}.txt").write_text("".join(head), encoding="utf-8")
        tokens[split] = sum(len(line.split()) + 1 for line in head)
    return tokens


def prepare_copies(examples: Path, scratch: Path) -> dict[str, Path]:
    """The example twice under ``scratch``: ``torch_nn`` untouched, ``rnnlab`` with model.py
    changed. Returns the two folders by flavour."""
    source = examples / "word_language_model"
    if not (source / "main.py").is_file():
        raise SystemExit(
            f"torch_example_client: {source} has no main.py; pass an examples checkout"
        )
    copies = {}
    for flavour in ("torch_nn", "rnnlab"):
        target = scratch / flavour
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("data", "*.pt", "*.onnx"))
        copies[flavour] = target
    model_py = copies["rnnlab"] / "model.py"
    model_py.write_text(rnnlab_model_py(model_py.read_text(encoding="utf-8")), encoding="utf-8")
    return copies


def last_error_line(stderr: str) -> str:
    """The line that says what failed: the last line of the traceback (or of stderr)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line):
            return line[:500]
    return lines[-1][:500] if lines else ""


def run_one(
    folder: Path, data: Path, args: list[str], timeout: float, keep_onnx: Path | None = None
) -> dict:
    """Run main.py in ``folder`` with ``args``; its outcome and final test perplexity (an ONNX
    export, if asked for, is copied to ``keep_onnx``)."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=folder.parent))
    argv = [a.replace("{tmp}", str(run_dir)) for a in args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "main.py", "--data", str(data), "--save", f"{run_dir}/model.pt"]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*command, *argv],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s", "test_ppl": None}
    seconds = round(time.perf_counter() - start, 2)
    match = TEST_PPL.search(done.stdout)
    result: dict = {
        "status": "ok" if done.returncode == 0 and match else "failed",
        "returncode": done.returncode,
        "seconds": seconds,
        "test_loss": float(match.group(1)) if match else None,
        "test_ppl": float(match.group(2)) if match else None,
        "error": None,
    }
    if result["status"] == "failed":
        result["error"] = last_error_line(done.stderr) or "no test perplexity printed"
    warnings = sorted({line.strip() for line in done.stderr.splitlines() if "Warning:" in line})
    if warnings:
        result["warnings"] = [w[:300] for w in warnings]
    if "--onnx-export" in args:
        onnx_file = run_dir / "model.onnx"
        result["onnx_bytes"] = onnx_file.stat().st_size if onnx_file.is_file() else None
        if keep_onnx is not None and onnx_file.is_file():  # with its external data file(s)
            keep_onnx.parent.mkdir(parents=True, exist_ok=True)
            for part in run_dir.glob("model.onnx*"):
                shutil.copy(part, keep_onnx.parent / part.name)
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def compare_onnx(files: dict[str, Path], seed: int = 0) -> dict:
    """Run the two exported ONNX files (same seed, so same weights) on the same random input
    with onnxruntime; the largest absolute difference of each output, or why not."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        return {"status": "skipped", "error": f"onnxruntime not installed ({e})"}
    if not all(f.is_file() for f in files.values()):
        return {"status": "skipped", "error": "an export is missing"}
    rng = np.random.default_rng(seed)
    outputs = {}
    feeds: dict | None = None
    try:
        for flavour, path in files.items():
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            if feeds is None:
                feeds = {}
                for i, spec in enumerate(session.get_inputs()):
                    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
                    if i == 0:  # token ids (seq_len, batch)
                        feeds[spec.name] = rng.integers(0, 50, size=shape, dtype=np.int64)
                    else:  # hidden state(s)
                        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
            names = [spec.name for spec in session.get_inputs()]
            outputs[flavour] = session.run(None, dict(zip(names, feeds.values(), strict=True)))
    except Exception as e:  # noqa: BLE001 - recorded, not raised: this is a report
        return {"status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    diffs = [
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(outputs["torch_nn"], outputs["rnnlab"], strict=True)
    ]
    return {"status": "ok", "max_abs_difference_per_output": diffs}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the matrix, write the report; 1 if rnnlab fails where torch works."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", type=Path, help="a checkout of pytorch/examples")
    parser.add_argument("data", type=Path, help="folder with WikiText-2 train/valid/test.txt")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated --model values")
    parser.add_argument(
        "--options", default=None, help="comma-separated option-set names (default: all)"
    )
    parser.add_argument("--train-lines", type=int, default=600, help="lines of train.txt kept")
    parser.add_argument("--eval-lines", type=int, default=150, help="lines of valid/test kept")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report")
    args = parser.parse_args(argv)

    models = [m for m in args.models.split(",") if m]
    names = list(OPTION_SETS) if args.options is None else args.options.split(",")
    unknown = [n for n in names if n not in OPTION_SETS]
    if unknown:
        parser.error(f"unknown option sets {unknown}; choose from {list(OPTION_SETS)}")

    scratch = Path(tempfile.mkdtemp(prefix="torch-example-client-"))
    try:
        copies = prepare_copies(args.examples.resolve(), scratch)
        lines = {"train": args.train_lines, "valid": args.eval_lines, "test": args.eval_lines}
        tokens = truncated_corpus(args.data.resolve(), scratch / "data", lines)
        runs = []
        for model in models:
            for name in names:
                run_args = ["--model", model, *COMMON, *OPTION_SETS[name]]
                entry: dict = {"model": model, "options": name, "args": run_args}
                onnx = {f: scratch / f"onnx-{f}-{model}" / "model.onnx" for f in copies}
                for flavour, folder in copies.items():
                    entry[flavour] = run_one(
                        folder, scratch / "data", run_args, args.timeout, onnx[flavour]
                    )
                if "--onnx-export" in run_args:
                    entry["onnx_runtime_comparison"] = compare_onnx(onnx)
                ours, theirs = entry["rnnlab"]["test_ppl"], entry["torch_nn"]["test_ppl"]
                if ours is not None and theirs is not None and math.isfinite(theirs):
                    entry["ppl_relative_difference"] = abs(ours - theirs) / theirs
                runs.append(entry)
                print(
                    f"{model:9s} {name:34s} torch.nn {entry['torch_nn']['status']:6s} "
                    f"{theirs}  rnnlab {entry['rnnlab']['status']:6s} {ours}"
                    + (f"  ({entry['rnnlab']['error']})" if entry["rnnlab"]["error"] else ""),
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    regressions = [
        f"{r['model']} {r['options']}"
        for r in runs
        if r["torch_nn"]["status"] == "ok" and r["rnnlab"]["status"] != "ok"
    ]
    report = {
        "what": "pytorch/examples word_language_model run unchanged (torch_nn) and with only "
        "model.py switched to rnnlab layers (rnnlab); one epoch on a truncated WikiText-2",
        "machine": machine_info(),
        "examples_commit": _git_head(args.examples),
        "corpus_tokens": tokens,
        "common_args": COMMON,
        "model_py_change": "getattr(nn, rnn_type)( -> getattr(rnnlab, rnn_type)(; "
        "nn.RNN( -> rnnlab.RNN(; import rnnlab",
        "summary": {
            "runs": len(runs),
            "rnnlab_ok": sum(r["rnnlab"]["status"] == "ok" for r in runs),
            "torch_nn_ok": sum(r["torch_nn"]["status"] == "ok" for r in runs),
            "rnnlab_fails_where_torch_works": regressions,
        },
        "runs": runs,
    }
    write_report(args.out, report)
    return 1 if regressions else 0


def _git_head(path: Path) -> str | None:
    """The checkout's commit, or None when it is not a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
