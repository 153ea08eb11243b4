#!/usr/bin/env bash
# The prepared GPU check of issue 8 (item 5), for a lent CUDA machine (H100 class).
#
# Assumptions about that machine (it reaches no network; nothing is pip-installed there):
#   * a python3 with torch built for CUDA (and numpy) is preinstalled (python3 on PATH, or $PYTHON);
#   * the repository is copied there; its .venv is NOT usable (CPU torch, another machine), so
#     rnnlab runs from source: PYTHONPATH=src (no `pip install -e`);
#   * rnnlab's other imports (safetensors, platformdirs, tqdm) and pytest come from that python if
#     it has them, else from .gpu-vendor/, prepared HERE (on the CPU machine) with
#         bash benchmarks/gpu_check.sh --prepare-vendor
#     and carried along (run(carry=[".gpu-vendor", ...])); pure Python plus safetensors' abi3
#     wheel, so any CPython >= 3.11 on x86-64 Linux takes it;
#   * DATA_DIR holds ptb/{train,valid,test}.txt exactly as /work/shared/data does (sha256-checked).
#
# Usage (repository root):  bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]
#   OUT_DIR defaults to $OUT (the device tool's output folder), else ./gpu_out.
# Steps, each under `timeout`, logged to OUT_DIR/<step>.log, exit codes in OUT_DIR/summary.txt; a
# failing step does not stop the next:
#   1 env         nvidia-smi, python / torch / CUDA / cuDNN versions
#   2 tests       tests/training/test_cuda.py (fused layers vs torch.nn on CUDA, tiny train+eval, a CUDA
#                 checkpoint read on the CPU, resume on CUDA)
#   3 bench       benchmarks/bench_train.py --device cuda --shapes medium: rnnlab's Trainer loop vs
#                 a plain torch.nn loop, tokens/s (-> OUT_DIR/bench_train_cuda.json)
#   4 awd-ptb     rnnlab train --preset awd-ptb --device cuda --max-steps 300 (AWD-LSTM's
#                 regularisers on CUDA; results.json, metrics.jsonl, run.json -> OUT_DIR/awd-ptb/)
#   5 ptb-medium  rnnlab train --preset ptb-medium --device cuda --max-minutes M: time and test
#                 perplexity (results.json, metrics.jsonl, run.json -> OUT_DIR/ptb-medium/)
# Budget: the whole script keeps within GPU_CHECK_BUDGET_S seconds (default 540, under the device
# tool's 600 s per command): the training gets min(GPU_CHECK_TRAIN_MINUTES (default 8), what is
# left after steps 1-4 less 90 s for its final evaluation) minutes.
set -u

if [ "${1:-}" = "--prepare-vendor" ]; then  # on the CPU machine, from the repository root
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || exit 1
    rm -rf .gpu-vendor && mkdir -p .gpu-vendor || exit 1
    for pkg in pytest _pytest py.py pluggy iniconfig packaging pygments safetensors platformdirs tqdm; do
        cp -r "$site/$pkg" .gpu-vendor/ || exit 1
    done
    find .gpu-vendor -name __pycache__ -prune -exec rm -rf {} +
    du -sh .gpu-vendor
    exit 0
fi

DATA_DIR=${1:?usage: bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]}
OUT_DIR=${2:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
TRAIN_MINUTES=${GPU_CHECK_TRAIN_MINUTES:-8}
RUN_DIR=${TMPDIR:-/tmp}/rnnlab-gpu-check-run  # checkpoints (~80 MB each) stay out of OUT_DIR
START=$(date +%s)
mkdir -p "$OUT_DIR"
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"

export PYTHONPATH=$PWD/src
if ! "$PY" -c "import pytest, safetensors, platformdirs, tqdm, numpy" 2>/dev/null && [ -d .gpu-vendor ]; then
    export PYTHONPATH=$PYTHONPATH:$PWD/.gpu-vendor
fi
export RNNLAB_DATA_DIR=$DATA_DIR
export RNNLAB_CACHE_DIR=${TMPDIR:-/tmp}/rnnlab-cache
export PYTHONUNBUFFERED=1

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, record the exit code and seconds
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    echo "== $name (timeout ${limit}s): $(echo "$*" | head -c 200 | tr '\n' ' ')" >>"$SUMMARY"
    timeout --kill-after=15 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    rc=$?
    echo "   $name: exit $rc after $(($(date +%s) - t0)) s$([ $rc -eq 124 ] && echo ' (timed out)')" >>"$SUMMARY"
    tail -n 5 "$OUT_DIR/$name.log" | sed 's/^/   | /' >>"$SUMMARY"
    return 0
}

ENV_PY="import sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version(), '| available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('GPU', torch.cuda.get_device_name(0), '| TF32 cudnn', torch.backends.cudnn.allow_tf32,
          '| TF32 matmul', torch.backends.cuda.matmul.allow_tf32)
import rnnlab.training.trainer, safetensors, platformdirs, numpy
print('rnnlab imports: ok; PYTHONPATH', sys.path[1:3])"
step env 60 bash -c 'nvidia-smi; "$1" -c "$2"' env "$PY" "$ENV_PY"

step tests 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/training/test_cuda.py

step bench 240 "$PY" benchmarks/bench_train.py --device cuda --shapes medium --steps 100 \
    --reps 5 --out "$OUT_DIR/bench_train_cuda.json"

# AWD-LSTM (issue 16): a short bounded awd-ptb run, weight drop on cuDNN, locked dropout layer by
# layer, AR/TAR; 300 steps is far from NT-ASGD's switch (epoch ends only), so it checks speed and
# that the run trains and evaluates on CUDA, not the paper's perplexity
rm -rf "$RUN_DIR-awd"
step awd-ptb 180 "$PY" -m rnnlab train --preset awd-ptb --device cuda --max-steps 300 \
    --log-every 50 --out "$RUN_DIR-awd" --no-progress --no-sample --json
mkdir -p "$OUT_DIR/awd-ptb"
for f in results.json metrics.jsonl run.json; do
    [ -f "$RUN_DIR-awd/$f" ] && cp "$RUN_DIR-awd/$f" "$OUT_DIR/awd-ptb/"
done

left=$((BUDGET_S - ($(date +%s) - START) - 90))
minutes=$(awk -v left="$left" -v cap="$TRAIN_MINUTES" 'BEGIN { m = left / 60; if (m > cap) m = cap; printf "%.1f", m }')
if awk -v m="$minutes" 'BEGIN { exit !(m >= 1) }'; then
    rm -rf "$RUN_DIR"
    step ptb-medium $(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 + 90 }') \
        "$PY" -m rnnlab train --preset ptb-medium --device cuda --max-minutes "$minutes" \
        --log-every 200 --out "$RUN_DIR" --no-progress --no-sample --json
    mkdir -p "$OUT_DIR/ptb-medium"
    for f in results.json metrics.jsonl run.json; do
        [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" "$OUT_DIR/ptb-medium/"
    done
    echo "   ptb-medium: capped at $minutes minutes; test perplexity in ptb-medium/results.json" >>"$SUMMARY"
else
    echo "== ptb-medium skipped: only ${left}s of the ${BUDGET_S}s budget left" >>"$SUMMARY"
fi

echo "== total $(($(date +%s) - START)) s" >>"$SUMMARY"
cat "$SUMMARY"
