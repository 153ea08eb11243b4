"""Data-parallel training: ``torchrun`` on the CPU (gloo) equals one process with the same batch.

The two-process runs are real ``torchrun`` launches of ``python -m rnnlab train``; the
single-process references run in-process. Dropout is 0 so that both runs draw no random masks.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from rnnlab.cli import main
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.runs import checkpoint as ck
from rnnlab.training import distributed

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)

COMMON = [
    "--hidden", "16", "--embed", "8", "--layers", "2", "--bptt", "8", "--batch-size", "4",
    "--epochs", "2", "--optimizer", "adam", "--lr", "0.01", "--clip", "0.5", "--log-every", "1",
    "--schedule", "plateau",
    "--save-every", "5", "--device", "cpu", "--threads", "1", "--no-progress", "--no-sample",
]  # fmt: skip
QUIET = ["--no-progress", "--no-sample"]
STOP = 30  # a step inside the first epoch (97 windows)
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, make_fox_file):
    return make_fox_file(tmp_path_factory.mktemp("ddp"))


def torchrun(nproc: int, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "rnnlab", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc


def cli(*args) -> int:
    return main([str(a) for a in args])


def rows(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def assert_close_checkpoints(a, b, rtol=1e-4, atol=1e-5, groups=("model", "state")):
    for group in groups:
        ta, tb = a.group(group), b.group(group)
        assert ta.keys() == tb.keys() and ta, group
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=rtol, atol=atol, msg=f"{group}.{k}")


def test_two_processes_equal_one_with_the_combined_batch(text_file, tmp_path):
    ref, ddp = tmp_path / "single", tmp_path / "ddp"
    assert cli("train", "--text", text_file, *COMMON, "--max-steps", STOP, "--out", ref) == 0
    proc = torchrun(2, "train", "--text", text_file, *COMMON, "--max-steps", STOP, "--out", ddp)

    assert proc.stdout.count("trained ") == 1  # rank 0 reports, rank 1 is silent
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in ref.iterdir())
    one, two = rows(ref, "train"), rows(ddp, "train")
    assert [r["step"] for r in two] == list(range(1, STOP + 1))
    for r1, r2 in zip(one, two, strict=True):  # the loss of the combined batch, step by step
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-4)
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-3)
        assert r2["tokens"] == r1["tokens"]
    assert rows(ddp, "valid")[-1]["valid_loss"] == pytest.approx(
        rows(ref, "valid")[-1]["valid_loss"], rel=1e-4
    )
    c1, c2 = (
        ck.load_checkpoint(ref / "last.safetensors"),
        ck.load_checkpoint(ddp / "last.safetensors"),
    )
    assert c2.meta["world_size"] == 2 and "rng.rank1.cpu" in c2.tensors
    assert c2.group("state")["0"].shape == (2, 4, 16)  # both ranks' columns, gathered
    assert_close_checkpoints(c1, c2)  # weights, and the carried hidden state of every column

    # The two-process checkpoint resumes in one process (another world size) to the same end.
    for run in (ref, ddp):
        assert cli("train", "--resume", run, "--max-steps", 10**6, *QUIET) == 0
    c1, c2 = (
        ck.load_checkpoint(ref / "last.safetensors"),
        ck.load_checkpoint(ddp / "last.safetensors"),
    )
    assert c1.meta["progress"]["step"] == c2.meta["progress"]["step"] == 2 * 97
    assert_close_checkpoints(c1, c2, rtol=1e-3, atol=1e-4, groups=["model"])  # epoch end: no state
    v1, v2 = (json.loads((r / "results.json").read_text())["valid"] for r in (ref, ddp))
    assert v2["loss"] == pytest.approx(v1["loss"], rel=1e-3)


@pytest.mark.slow
def test_a_resumed_two_process_run_is_exact(text_file, tmp_path):
    """Stopped and resumed under torchrun (dropout on: each rank's RNG is saved) = uninterrupted."""
    args = ["train", "--text", text_file, *COMMON, "--dropout", "0.2"]
    full, part = tmp_path / "full", tmp_path / "part"
    torchrun(2, *args, "--out", full)
    torchrun(2, *args, "--max-steps", STOP + 3, "--out", part)  # stops between two saves
    torchrun(2, "train", "--resume", part, "--max-steps", 10**6, *QUIET)
    a, b = (
        ck.load_checkpoint(full / "last.safetensors"),
        ck.load_checkpoint(part / "last.safetensors"),
    )
    for k, t in a.group("model").items():
        assert torch.equal(t, b.group("model")[k]), k


# ------------------------------------------------------------------------- without a launch


def test_a_plain_process_is_not_distributed(monkeypatch):
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun() and distributed.env_rank() == 0
    assert distributed.setup("cpu") is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.setup("auto") is None  # torchrun --nproc_per_node 1: one process


@pytest.mark.parametrize(
    "env,device,mention",
    [
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "cpu", "MASTER_ADDR"),
        ({"WORLD_SIZE": "two", "RANK": "1", "LOCAL_RANK": "1"}, "cpu", "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "tpu", "unknown device"),
    ],
)
def test_a_broken_launch_environment_is_one_line(monkeypatch, env, device, mention):
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=mention) as e:
        distributed.setup(device)
    assert "\n" not in str(e.value)


def test_own_columns_undo_the_gather():
    full = torch.arange(2 * 6 * 3).view(2, 6, 3)  # (layers, B, H)
    for world in (1, 2, 3, 6):
        parts = [distributed.own_columns(full, r, world) for r in range(world)]
        assert torch.equal(torch.cat(parts, dim=1), full)
    with pytest.raises(RnnlabError, match="divides the batch size"):
        distributed.own_columns(full, 0, 4)


def test_fingerprint_tells_data_apart():
    a = distributed.fingerprint(b"abc", memoryview(torch.arange(5).numpy()))
    assert a == distributed.fingerprint(b"abc", memoryview(torch.arange(5).numpy()))
    assert a != distributed.fingerprint(b"abc", memoryview(torch.arange(6).numpy()))
    assert a != distributed.fingerprint(b"ab", b"c" + torch.arange(5).numpy().tobytes())
    assert 0 <= a < 2**62


def test_cosine_over_minutes_follows_one_clock_for_all_ranks(text_file, tmp_path):
    """The quick preset anneals over --max-minutes; under torchrun the ranks agree on the clock
    at every step (one all-reduce with the loss), so the rate is the same on every rank."""
    out = tmp_path / "cos"
    args = [a for a in COMMON if a not in ("--schedule", "plateau")]
    proc = torchrun(
        2, "train", "--text", text_file, *args, "--schedule", "cosine", "--max-minutes", "0.5",
        "--max-steps", 8, "--out", out,
    )  # fmt: skip
    assert proc.stdout.count("trained ") == 1
    lrs = [r["lr"] for r in rows(out, "train")]
    assert len(lrs) == 8 and lrs[0] <= 0.01 and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.01
