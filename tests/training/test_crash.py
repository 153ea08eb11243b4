"""Crash safety: a training process killed with SIGKILL at any moment loses nothing.

A real ``rnnlab train`` process is killed several times: before its first checkpoint, in the
middle of writing a checkpoint, during start-up and at random moments (seeded delays). Each
time the run is continued with ``--resume`` (or, if the run directory does not hold a run yet,
started again with the same command), and at the end its weights, optimizer state, best
checkpoint, results and metrics are identical, bit for bit, to an uninterrupted run's.

To make kills during a checkpoint write likely, the killed processes run ``rnnlab.cli.main``
through a small wrapper that sleeps inside ``os.replace`` for checkpoint files, i.e. after the
temporary file is complete and before it replaces the old checkpoint: the widest window a crash
can hit. The library has no test hook; the wrapper only slows the process down.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnlab.cli import main
from rnnlab.runs import checkpoint as ck

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")

ARGS = [
    "--hidden", "16", "--embed", "8", "--layers", "2", "--dropout", "0.1", "--bptt", "8",
    "--batch-size", "16", "--epochs", "2", "--optimizer", "adam", "--lr", "0.01",
    "--schedule", "plateau", "--save-every", "2", "--log-every", "1", "--threads", "1", "--seed", "3",
    "--no-progress", "--no-sample",
]  # fmt: skip
SLOW_REPLACE_S = "0.1"
WRAPPER = """
import os, sys, time
real_replace = os.replace
def slow_replace(src, dst, *args, **kwargs):
    if str(dst).endswith(".safetensors"):
        time.sleep(float(os.environ["RNNLAB_TEST_SLOW_REPLACE_S"]))
    return real_replace(src, dst, *args, **kwargs)
os.replace = slow_replace
from rnnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, make_fox_file):
    return make_fox_file(tmp_path_factory.mktemp("crash"))


@pytest.fixture(scope="module")
def reference(text_file, tmp_path_factory):
    """The uninterrupted run (in this process: the same code, one thread)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", "--text", str(text_file), *ARGS, "--out", str(out)]) == 0
    return out


def temp_files(run):
    return sorted(p.name for p in run.glob(".*.tmp-*"))


def mtime(path):
    return path.stat().st_mtime_ns if path.exists() else None


class Moment:
    """What a kill trigger knows: when the process started, the checkpoint it started from, and
    its random delay (drawn once per kill from the seeded generator)."""

    def __init__(self, run, delay):
        self.started = time.monotonic()
        self.initial = mtime(run / "last.safetensors")
        self.delay = delay
        self.training_since = None

    def training(self, run):
        """Whether this process has written a checkpoint of its own (training is under way)."""
        if self.training_since is None and mtime(run / "last.safetensors") != self.initial:
            self.training_since = time.monotonic()
        return self.training_since is not None


# Kill triggers: each says whether its moment has come.
def at_startup(run, m):
    return time.monotonic() - m.started >= m.delay * 2.5  # start-up takes about 2-4 s


def before_first_checkpoint(run, m):
    return (run / "run.json").exists() and not (run / "last.safetensors").exists()


def at_a_random_step(run, m):
    return m.training(run) and time.monotonic() - m.training_since >= m.delay


def during_a_checkpoint_write(run, m):
    writing = any(name.startswith((".last.", ".best.")) for name in temp_files(run))
    return at_a_random_step(run, m) and writing


def launch(text_file, run):
    fresh = not (run / "run.json").exists()
    args = (
        ["train", "--text", text_file, *ARGS, "--out", run] if fresh else ["train", "--resume", run]
    )
    env = dict(os.environ, RNNLAB_TEST_SLOW_REPLACE_S=SLOW_REPLACE_S)
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def kill_when(trigger, text_file, run, rng):
    """Start the run (or resume it), SIGKILL it when ``trigger`` fires; the temp files seen."""
    moment = Moment(run, delay=rng.uniform(0.0, 0.4))
    proc = launch(text_file, run)
    while not trigger(run, moment):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {trigger.__name__}: {proc.stderr.read()!r}")
        if time.monotonic() - moment.started > 90:
            proc.kill()
            pytest.fail(f"{trigger.__name__} never came")
        time.sleep(0.002)
    seen = temp_files(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


def weights(ckpt):
    return {k: v for k, v in ckpt.tensors.items() if k.startswith(("model.", "optim."))}


def metric_rows(run):
    keys = ("kind", "step", "epoch", "train_loss", "grad_norm", "valid_loss", "lr", "tokens")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [tuple(r.get(k) for k in keys) for r in map(json.loads, lines)]


def crash_and_resume(text_file, run, triggers, seed):
    rng = random.Random(seed)
    for trigger in triggers:
        seen = kill_when(trigger, text_file, run, rng)
        if trigger is before_first_checkpoint:
            assert not (run / "last.safetensors").exists()
        if trigger is during_a_checkpoint_write:
            assert seen and set(seen) <= set(temp_files(run))  # the write was cut short
    proc = launch(text_file, run)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


def assert_identical_runs(reference, run):
    for name in ("last.safetensors", "best.safetensors"):
        a, b = ck.load_checkpoint(reference / name), ck.load_checkpoint(run / name)
        wa, wb = weights(a), weights(b)
        assert wa.keys() == wb.keys() and wa
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k}"
        assert a.meta["progress"]["step"] == b.meta["progress"]["step"]
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (reference, run))
    assert ra["valid"] == rb["valid"] and ra["test"] == rb["test"]
    assert metric_rows(run) == metric_rows(reference)  # no rows lost or repeated
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in reference.iterdir())


def test_killed_before_its_first_checkpoint_and_while_saving(text_file, reference, tmp_path):
    run = tmp_path / "run"
    crash_and_resume(text_file, run, [before_first_checkpoint, during_a_checkpoint_write], seed=1)
    assert_identical_runs(reference, run)


@pytest.mark.slow
def test_killed_again_and_again(text_file, reference, tmp_path):
    run = tmp_path / "run"
    triggers = [
        at_startup,
        before_first_checkpoint,
        during_a_checkpoint_write,
        at_a_random_step,
        during_a_checkpoint_write,
        at_a_random_step,
        during_a_checkpoint_write,
    ]
    crash_and_resume(text_file, run, triggers, seed=6)
    assert_identical_runs(reference, run)
