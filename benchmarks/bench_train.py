"""Training speed of rnnlab's Trainer against a plain torch.nn loop, same process, interleaved.

Contenders, holding the same initial weights and walking the same token stream:

* ``rnnlab``: the real :class:`rnnlab.training.trainer.Trainer` loop (``_train_loop``), so the figure
  includes its per-step bookkeeping: the loss read back and checked for NaN / explosion, the
  gradient-norm clip, the learning-rate setting, the metrics row. One-time setup, validation and
  checkpoint writing are excluded: the clock runs from the call into the loop to the metrics row
  it logs after the repetition's last step (``log_every`` = steps per repetition), and ``save``
  is replaced on the instance (writing checkpoints is not training);
* ``plain``: the loop of the PyTorch word-language-model example, written here: ``nn.Embedding ->
  nn.LSTM -> nn.Linear -> log_softmax`` with NLL loss, ``batchify`` + ``get_batch`` slicing, the
  hidden state repackaged each window, ``clip_grad_norm_`` then manual SGD
  (``p.data.add_(p.grad, alpha=-lr)``), ``loss.item()`` every step;
* ``plain_control``: a second, identical plain loop. ``control_ratio`` (ideally 1.0) shows how far
  two equal contenders land apart: the noise floor of the run on a shared machine.

Repetitions of ``--steps`` windows are interleaved with a rotating order (after one warm-up
repetition each), so drifts in machine load hit every contender alike. tokens/s = steps * bptt *
batch / seconds from the median repetition; ``ratio_best`` compares the fastest repetitions
(load from other processes only ever slows a repetition down) and ``ratio_cpu`` the median CPU
seconds of this process (less sensitive to other processes taking turns on the cores; use it with
``--threads 1``, where idle OpenMP workers do not spin).

Work per token (multiply-adds counted as 2 FLOPs; matrix products only; the backward pass costs
twice the forward: the gradient with respect to the input and to the weights)::

    LSTM layer l:  2 * 4H * (I_l + H) * 3     (I_0 = embedding width, I_l = H above)
    decoder:       2 * H * V * 3
    training FLOPs/token = sum over layers + decoder      (eval: the same with * 1 for * 3)

Elementwise work (gates, softmax, dropout, the optimizer) and the embedding lookup are left out,
so the GFLOP/s figures err low. They are reported as a share of two float32 ``torch.mm`` peaks
measured in the same run (best of several, before and after the contest): the decoder GEMM
(bptt*batch, H) x (H, V) of the shape, and a large square one (2048^3).

Also: peak memory (``ru_maxrss``) of each loop in a fresh subprocess, and eval tokens/s of
:func:`rnnlab.evaluation.text.evaluate` against the example's ``no_grad`` evaluation loop (the same batch
and window for both: the trainer's ``eval_batch_size`` 10 and ``max(bptt, 50)``).

Data: the real PTB training stream when ``RNNLAB_DATA_DIR`` points at the corpus mirror, else a
synthetic Zipf-distributed stream over a 10,000-word vocabulary (the cost does not depend on
which ids are drawn).

    python benchmarks/bench_train.py                      # -> benchmarks/results/train.json
    python benchmarks/bench_train.py --quick              # a smoke run of seconds
    python benchmarks/bench_train.py --threads 1 --shapes small --steps 20 --reps 5
    python benchmarks/bench_train.py --device cuda --shapes medium
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_info, write_report
from torch import Tensor, nn

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig, LMData, load_data
from rnnlab.data.vocab import Vocab
from rnnlab.evaluation.text import evaluate
from rnnlab.models.config import LanguageModelConfig
from rnnlab.training.trainer import Trainer

# The two shapes of issue 8: Zaremba et al.'s small and medium PTB models. lr and clip are the
# PyTorch example's defaults (they do not change the cost, only keep the loss finite).
SHAPES = {
    "small": {"hidden": 200, "layers": 2, "batch": 20, "bptt": 20, "dropout": 0.0},
    "medium": {"hidden": 650, "layers": 2, "batch": 20, "bptt": 35, "dropout": 0.5},
}
LR, CLIP = 20.0, 0.25
EVAL_BATCH = 10
TARGET_RATIO = 0.97
DEFAULT_STEPS = {"small": 40, "medium": 10}
SQUARE = 2048
Timing = tuple[float, float]  # (wall-clock seconds, CPU seconds of this process)


# ------------------------------------------------------------------------------ the plain loop
class PlainLM(nn.Module):
    """The PyTorch word-language-model example's RNNModel (LSTM only)."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float) -> None:
        super().__init__()
        self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, input: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        emb = self.drop(self.encoder(input))  # (T, B, D)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)  # (T*B, V)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> tuple[Tensor, Tensor]:
        weight = next(self.parameters())
        shape = (self.nlayers, bsz, self.nhid)
        return weight.new_zeros(shape), weight.new_zeros(shape)


def plain_batchify(data: Tensor, bsz: int) -> Tensor:
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()  # (N // B, B)


def get_batch(source: Tensor, i: int, bptt: int) -> tuple[Tensor, Tensor]:
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


def repackage_hidden(h: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(v.detach() for v in h)


class PlainLoop:
    """The example's ``train()``, resumable: each ``run(steps)`` continues where the last ended."""

    def __init__(self, model: PlainLM, ids: Tensor, batch: int, bptt: int, device: torch.device):
        self.model, self.bptt, self.device = model, bptt, device
        self.data = plain_batchify(ids, batch).to(device)  # (T, B)
        self.hidden = model.init_hidden(batch)
        self.criterion = nn.NLLLoss()
        self.i = 0
        self.losses: list[float] = []

    def run(self, steps: int) -> Timing:
        """Seconds (wall, CPU) for ``steps`` training windows."""
        model = self.model
        model.train()
        _sync(self.device)
        start = clock()
        for _ in range(steps):
            data, targets = get_batch(self.data, self.i, self.bptt)
            self.i += self.bptt
            self.hidden = repackage_hidden(self.hidden)
            model.zero_grad()
            output, self.hidden = model(data, self.hidden)
            loss = self.criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-LR)
            self.losses.append(loss.item())
        _sync(self.device)
        return since(start)


@torch.no_grad()
def plain_evaluate(model: PlainLM, ids: Tensor, batch: int, bptt: int) -> float:
    """The example's ``evaluate()``: mean NLL over the batchified stream."""
    model.eval()
    data = plain_batchify(ids, batch).to(next(model.parameters()).device)
    criterion = nn.NLLLoss()
    hidden = model.init_hidden(batch)
    total = 0.0
    for i in range(0, data.size(0) - 1, bptt):
        x, y = get_batch(data, i, bptt)
        output, hidden = model(x, hidden)
        hidden = repackage_hidden(hidden)
        total += len(x) * criterion(output, y).item()
    return total / (len(data) - 1)


# ------------------------------------------------------------------------------ rnnlab's loop
class TrainerLoop:
    """The real Trainer loop, resumable: each ``run(steps)`` raises ``max_steps`` by ``steps``."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.end: Timing = (math.nan, math.nan)
        trainer.on_log = self._on_log
        trainer.save = lambda best=False: None  # checkpoint writing is not training

    def _on_log(self, row: dict) -> None:
        if row["kind"] == "train":
            self.end = clock()

    def run(self, steps: int) -> Timing:
        """Seconds (wall, CPU) from entering the loop to the metrics row after its
        ``steps``-th window."""
        t = self.trainer
        t.config.train.max_steps = t.progress.step + steps
        t.config.train.log_every = steps
        self.end = (math.nan, math.nan)
        start = clock()
        t._train_loop()  # ends with a validation on the short valid stream (not timed)
        return since(start, self.end)

    def losses(self) -> list[float]:
        return [r["train_loss"] for r in self.trainer.history if r["kind"] == "train"]


def make_trainer(
    shape: dict,
    data: LMData,
    run_dir: Path,
    device: str,
    threads: int | None,
    cell: str = "lstm",
    impl: str = "auto",
) -> Trainer:
    """A Trainer of ``shape`` on ``data`` (``shape["embed"]``, when given, is the embedding
    width; else the hidden size), with ``cell`` and the layers' ``impl``."""
    h = shape["hidden"]
    config = RunConfig(
        model=LanguageModelConfig(
            cell=cell,
            impl=impl,
            embed_size=shape.get("embed", h),
            hidden_size=h,
            num_layers=shape["layers"],
            dropout=shape["dropout"],
        ),
        optim=OptimConfig(optimizer="sgd", lr=LR, clip=CLIP, schedule="constant"),
        train=TrainConfig(
            bptt=shape["bptt"],
            batch_size=shape["batch"],
            eval_batch_size=EVAL_BATCH,
            epochs=1_000_000,
            device=device,
            threads=threads,
        ),
    )
    return Trainer(config, run_dir, data=short_eval(data))


def short_eval(data: LMData) -> LMData:
    """``data`` with its validation and test streams cut to 1,000 tokens, so the validation
    after each repetition (untimed) stays short."""
    return LMData(
        data.name, data.level, data.vocab, data.train, data.valid[:1000], data.test[:1000]
    )


def plain_like(trainer: Trainer, shape: dict, device: torch.device) -> PlainLM:
    """A PlainLM holding the trainer's initial weights (rnnlab names them like torch.nn)."""
    h, vocab = shape["hidden"], trainer.model_config.vocab_size
    model = PlainLM(vocab, h, h, shape["layers"], shape["dropout"]).to(device)
    weights = {
        k.replace("embedding.", "encoder."): v for k, v in trainer.model.state_dict().items()
    }
    model.load_state_dict(weights)
    return model


# ------------------------------------------------------------------------------ measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_token(shape: dict, vocab: int, backward: bool = True) -> dict[str, float]:
    """Matrix-product FLOPs per token (see the module docstring)."""
    h, k = shape["hidden"], 3 if backward else 1
    lstm = sum(2 * 4 * h * (h + h) * k for _ in range(shape["layers"]))  # I_l = H (embed = H)
    decoder = 2 * h * vocab * k
    return {"lstm": float(lstm), "decoder": float(decoder), "total": float(lstm + decoder)}


def matmul_gflops(m: int, k: int, n: int, device: torch.device, reps: int = 5) -> float:
    """Best float32 ``torch.mm`` (m, k) x (k, n) rate in GFLOP/s."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    work = 2e11 if device.type == "cuda" else 2e9  # FLOPs per timing: ~10 ms or more
    iters = max(1, int(work // (2 * m * k * n)))
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b)
        _sync(device)
        best = min(best, (time.perf_counter() - start) / iters)
    return 2 * m * k * n / best / 1e9


def clock() -> Timing:
    """Now: wall-clock and this process's CPU seconds."""
    return time.perf_counter(), time.process_time()


def since(start: Timing, end: Timing | None = None) -> Timing:
    end = end or clock()
    return end[0] - start[0], end[1] - start[1]


def interleave(runs: dict[str, Callable[[], Timing]], reps: int) -> dict[str, list[Timing]]:
    """Timings of every run per repetition, the order rotating so position effects cancel."""
    seconds: dict[str, list[Timing]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(runs[name]())
    return seconds


def summarize(timings: list[Timing], tokens: int, flops: float) -> dict:
    """tokens/s (median and best repetition, and per CPU second) and GFLOP/s at the median."""
    wall = [t[0] for t in timings]
    cpu = [t[1] for t in timings]
    rate = tokens / statistics.median(wall)
    return {
        "tokens_per_s": rate,
        "tokens_per_s_best": tokens / min(wall),
        "tokens_per_cpu_s": tokens / statistics.median(cpu),
        "gflops": rate * flops / 1e9,
        "seconds": wall,
        "cpu_seconds": cpu,
    }


def ratios(rows: dict, ours: str, theirs: str) -> dict[str, float]:
    """ours / theirs: at the median, the best repetitions, and per CPU second."""
    a, b = rows[ours], rows[theirs]
    return {
        "ratio": a["tokens_per_s"] / b["tokens_per_s"],
        "ratio_best": a["tokens_per_s_best"] / b["tokens_per_s_best"],
        "ratio_cpu": a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"],
    }


def add_shares(row: dict, peaks: dict[str, float]) -> None:
    """The achieved GFLOP/s as a share of each measured matmul peak."""
    for name, peak in peaks.items():
        row[f"share_of_{name}_peak"] = row["gflops"] / peak


def add_stream_args(
    parser: argparse.ArgumentParser, eval_tokens: int, eval_help: str = argparse.SUPPRESS
) -> None:
    """The flags :func:`load_stream` reads: ``--eval-tokens`` (default ``eval_tokens``),
    ``--synthetic``, ``--vocab`` and ``--seed``."""
    parser.add_argument("--eval-tokens", type=int, default=eval_tokens, help=eval_help)
    parser.add_argument("--synthetic", action="store_true", help="synthetic data even with PTB")
    parser.add_argument("--vocab", type=int, default=10_000, help="synthetic vocabulary size")
    parser.add_argument("--seed", type=int, default=0)


def load_stream(args: argparse.Namespace, n_train: int) -> LMData:
    """PTB when RNNLAB_DATA_DIR is set, else a synthetic Zipf stream of ``n_train`` tokens."""
    if os.environ.get("RNNLAB_DATA_DIR") and not args.synthetic:
        return load_data(DataConfig(corpus="ptb", level="word"))
    g = torch.Generator().manual_seed(args.seed)
    probs = 1.0 / torch.arange(1, args.vocab + 1, dtype=torch.float64)  # Zipf, exponent 1
    vocab = Vocab(["<unk>"] + [f"w{i}" for i in range(1, args.vocab)], level="word")

    def draw(n: int) -> Tensor:
        return torch.multinomial(probs, n, replacement=True, generator=g)

    return LMData(
        "synthetic-zipf", "word", vocab, draw(n_train), draw(args.eval_tokens + 1), draw(1001)
    )


def bench_shape(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    shape = SHAPES[name]
    steps = args.steps or DEFAULT_STEPS[name]
    batch, bptt = shape["batch"], shape["bptt"]
    windows = steps * (args.reps + 1)  # one warm-up repetition
    data = load_stream(args, batch * (windows * bptt + 2))
    rows = len(data.train) // batch
    if windows * bptt > rows - 1:
        raise SystemExit(
            f"{name}: {windows} windows of {bptt} need more than the {rows} rows of the stream; "
            "lower --steps or --reps"
        )
    vocab = len(data.vocab)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = make_trainer(shape, data, Path(run_dir), str(device), args.threads or None)
        ours = TrainerLoop(trainer)
        plain = PlainLoop(plain_like(trainer, shape, device), data.train, batch, bptt, device)
        runs: dict[str, Callable[[], Timing]] = {
            "rnnlab": lambda: ours.run(steps),
            "plain": lambda: plain.run(steps),
        }
        if not args.no_control:
            control = PlainLoop(plain_like(trainer, shape, device), data.train, batch, bptt, device)
            runs["plain_control"] = lambda: control.run(steps)
        for run in runs.values():  # warm-up repetition
            run()
        first_loss = {"rnnlab": ours.losses()[0], "plain": statistics.mean(plain.losses)}
        seconds = interleave(runs, args.reps)
        tokens = steps * bptt * batch
        flops = flops_per_token(shape, vocab)
        train = {k: summarize(s, tokens, flops["total"]) for k, s in seconds.items()}
        result = {
            "shape": {**shape, "vocab": vocab, "steps_per_rep": steps, "tokens_per_rep": tokens},
            "data": data.name,
            "flops_per_token": flops,
            "train": train,
            **ratios(train, "rnnlab", "plain"),
            "target_ratio": TARGET_RATIO,
            # mean loss of the warm-up repetition: equal up to rounding when dropout is 0
            "warmup_loss": first_loss,
        }
        if "plain_control" in train:  # the noise floor: two equal contenders
            control = ratios(train, "plain_control", "plain")
            result.update({f"control_{k}": v for k, v in control.items()})
        ids = data.valid[: args.eval_tokens + 1]
        result["eval"] = bench_eval(trainer, plain.model, ids, shape, args, device)
    return result


def bench_eval(
    trainer: Trainer,
    plain: PlainLM,
    ids: Tensor,
    shape: dict,
    args: argparse.Namespace,
    device: torch.device,
) -> dict:
    """Eval tokens/s: rnnlab.evaluation.text against the example's no_grad loop."""
    bptt = max(shape["bptt"], 50)
    loss: dict[str, float] = {}

    def ours() -> Timing:
        _sync(device)
        start = clock()
        loss["rnnlab"] = evaluate(trainer.model, ids, batch_size=EVAL_BATCH, bptt=bptt).loss
        return since(start)

    def theirs() -> Timing:
        _sync(device)
        start = clock()
        loss["plain"] = plain_evaluate(plain, ids, EVAL_BATCH, bptt)
        return since(start)

    ours(), theirs()  # warm-up
    seconds = interleave({"rnnlab": ours, "plain": theirs}, args.reps)
    flops = flops_per_token(shape, len(trainer.data.vocab), backward=False)["total"]
    out = {
        "batch": EVAL_BATCH,
        "bptt": bptt,
        # rnnlab scores all N - 1 targets; the example's batchify drops the N mod B tail
        "tokens": {
            "rnnlab": ids.numel() - 1,
            "plain": (ids.numel() // EVAL_BATCH - 1) * EVAL_BATCH,
        },
        "loss": loss,
    }
    for name, s in seconds.items():
        out[name] = summarize(s, out["tokens"][name], flops)
    out.update(ratios(out, "rnnlab", "plain"))
    return out


# ------------------------------------------------------------------------------ memory
def peak_rss_kib() -> tuple[int, str]:
    """This process's peak resident memory in KiB, and where it comes from.

    ``VmHWM`` of ``/proc/self/status`` where there is one: Linux carries ``ru_maxrss`` over
    ``execve`` (a child started from this benchmark would report the parent's peak), while the
    high-water mark of the new address space starts afresh. Elsewhere ``ru_maxrss`` (KiB on
    Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss // 1024 if sys.platform == "darwin" else rss), "ru_maxrss"


def rss_child(args: argparse.Namespace) -> None:
    """In a fresh process: set up one loop, train ``--steps`` windows, print peak RSS (KiB)."""
    name = args.shapes[0]
    shape = SHAPES[name]
    device = torch.device(args.device)
    data = load_stream(args, shape["batch"] * ((args.steps + 1) * shape["bptt"] + 2))
    with tempfile.TemporaryDirectory() as run_dir:
        if args.rss_child == "rnnlab":
            trainer = make_trainer(shape, data, Path(run_dir), str(device), args.threads or None)
            loop: TrainerLoop | PlainLoop = TrainerLoop(trainer)
        else:  # the example's own initialisation; no Trainer in this process
            h = shape["hidden"]
            model = PlainLM(len(data.vocab), h, h, shape["layers"], shape["dropout"]).to(device)
            with torch.no_grad():
                model.encoder.weight.uniform_(-0.1, 0.1)
                model.decoder.weight.uniform_(-0.1, 0.1)
                model.decoder.bias.zero_()
            loop = PlainLoop(model, data.train, shape["batch"], shape["bptt"], device)
        setup, source = peak_rss_kib()
        loop.run(args.steps)
        peak, _ = peak_rss_kib()
    row = {"rss_setup_kib": setup, "rss_peak_kib": peak, "source": source}
    if device.type == "cuda":
        row["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(row))


def measure_rss(name: str, args: argparse.Namespace) -> dict:
    """Peak RSS of each loop at shape ``name``, each in a fresh subprocess."""
    out: dict = {}
    for loop in ("rnnlab", "plain"):
        cmd = [sys.executable, __file__, "--rss-child", loop, "--shapes", name]
        cmd += ["--steps", str(args.rss_steps), "--device", args.device]
        cmd += ["--threads", str(args.threads), "--vocab", str(args.vocab)]
        cmd += ["--seed", str(args.seed), "--eval-tokens", "100", "--malloc", args.malloc]
        if args.synthetic:
            cmd.append("--synthetic")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            out[loop] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        kib = json.loads(done.stdout.strip().splitlines()[-1])
        out[loop] = {
            "rss_setup_mib": kib["rss_setup_kib"] / 1024,
            "rss_peak_mib": kib["rss_peak_kib"] / 1024,
            "source": kib["source"],
        }
        if "cuda_max_allocated_mib" in kib:
            out[loop]["cuda_max_allocated_mib"] = kib["cuda_max_allocated_mib"]
    if all("rss_peak_mib" in v for v in out.values()):
        out["ratio"] = out["rnnlab"]["rss_peak_mib"] / out["plain"]["rss_peak_mib"]
    out["steps"] = args.rss_steps
    out["note"] = (
        "peak RSS of a fresh process after setup (imports, data, model) and after training"
    )
    return out


# ------------------------------------------------------------------------------ main
def keep_freed_memory() -> bool:
    """glibc only: serve every allocation from the heap and never give freed memory back.

    By default glibc maps big blocks (the (T*B, V) logits and their gradient) with ``mmap`` and
    trims the heap top, so a training step can page-fault its buffers afresh every time; how
    often depends on the allocation history, which makes two loops in one process differ by up
    to a quarter of a step at the PTB-small shape. ``mallopt(M_MMAP_MAX, 0)`` and a maximal
    ``M_TRIM_THRESHOLD`` remove that: after the first step no page is faulted again.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def measure_peaks(names: list[str], vocab: int, device: torch.device) -> dict:
    peaks = {"square": matmul_gflops(SQUARE, SQUARE, SQUARE, device)}
    for name in names:
        s = SHAPES[name]
        peaks[name] = matmul_gflops(s["bptt"] * s["batch"], s["hidden"], vocab, device)
    return peaks


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--shapes", default=None, help="comma-separated: small,medium")
    parser.add_argument("--steps", type=int, default=0, help="windows per rep (0: per shape)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    add_stream_args(parser, 20_000, "eval stream length")
    parser.add_argument("--rss-steps", type=int, default=5, help="windows in each memory run")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--no-control", action="store_true", help="skip the torch-vs-torch run")
    parser.add_argument(
        "--malloc",
        choices=("default", "keep"),
        default="default",
        help="keep: no mmap / heap trimming in glibc (no page faults per step; steadier ratios)",
    )
    parser.add_argument("--rss-child", choices=("rnnlab", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shapes is None:
        args.shapes = "small" if args.quick else "small,medium"
    args.shapes = args.shapes.split(",")
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}")
    if args.quick:
        args.steps, args.reps = args.steps or 3, 2
        args.eval_tokens, args.rss_steps = 2_000, 2
    if args.malloc == "keep" and not keep_freed_memory():
        parser.error("--malloc keep needs glibc (libc.so.6)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.rss_child:
        rss_child(args)
        return None
    device = torch.device(args.device)
    vocab = args.vocab if not os.environ.get("RNNLAB_DATA_DIR") or args.synthetic else 10_000
    peaks = measure_peaks(args.shapes, vocab, device)
    results = {}
    for name in args.shapes:
        r = bench_shape(name, args, device)
        for row in (r["train"]["rnnlab"], r["eval"]["rnnlab"]):  # provisional, for the printout
            add_shares(row, {"decoder_gemm": peaks[name], "square": peaks["square"]})
        if not args.no_rss:
            r["memory"] = measure_rss(name, args)
        results[name] = r
        tr, ev = r["train"], r["eval"]
        print(
            f"{name:6s} train rnnlab {tr['rnnlab']['tokens_per_s']:8.0f} tok/s  plain "
            f"{tr['plain']['tokens_per_s']:8.0f} tok/s  ratio {r['ratio']:.3f} (best-of-reps "
            f"{r['ratio_best']:.3f}, per CPU s {r['ratio_cpu']:.3f}; torch-vs-torch control "
            f"{r.get('control_ratio', math.nan):.3f})  "
            f"{tr['rnnlab']['gflops']:.1f} GFLOP/s = "
            f"{tr['rnnlab']['share_of_decoder_gemm_peak']:.0%} of the decoder GEMM peak, "
            f"{tr['rnnlab']['share_of_square_peak']:.0%} of the square",
            flush=True,
        )
        print(
            f"{name:6s} eval  rnnlab {ev['rnnlab']['tokens_per_s']:8.0f} tok/s  plain "
            f"{ev['plain']['tokens_per_s']:8.0f} tok/s  ratio {ev['ratio']:.3f} (best-of-reps "
            f"{ev['ratio_best']:.3f}, per CPU s {ev['ratio_cpu']:.3f})",
            flush=True,
        )
        if "memory" in r and "ratio" in r["memory"]:
            m = r["memory"]
            print(
                f"{name:6s} peak RSS rnnlab {m['rnnlab']['rss_peak_mib']:.0f} MiB  plain "
                f"{m['plain']['rss_peak_mib']:.0f} MiB",
                flush=True,
            )
    after = measure_peaks(args.shapes, vocab, device)  # best of before and after
    peaks = {k: max(v, after[k]) for k, v in peaks.items()}
    for name, r in results.items():
        for part in ("train", "eval"):
            for row in r[part].values():
                if isinstance(row, dict) and "gflops" in row:
                    add_shares(row, {"decoder_gemm": peaks[name], "square": peaks["square"]})
    report = {
        "benchmark": "train: tokens/s of rnnlab's Trainer loop vs a plain torch.nn loop "
        "(PyTorch word-language-model example), same process, interleaved",
        "command": "python benchmarks/bench_train.py " + " ".join(argv or []),
        "machine": machine_info(device),
        "config": {
            "shapes": {n: SHAPES[n] for n in args.shapes},
            "lr": LR,
            "clip": CLIP,
            "steps": args.steps or {n: DEFAULT_STEPS[n] for n in args.shapes},
            "reps": args.reps,
            "threads": args.threads or torch.get_num_threads(),
            "quick": args.quick,
            "seed": args.seed,
            "malloc": args.malloc,
            "flops": "matrix products only, per token: LSTM layer 2*4H*(I+H)*3, decoder 2*H*V*3 "
            "(eval: *1); elementwise work left out",
            "statistic": "tokens/s from the median time over interleaved reps; ratio_best from "
            "the minimum times; ratio_cpu from the median CPU seconds of the process; peaks: best "
            "float32 torch.mm GFLOP/s before and after",
        },
        "matmul_peak_gflops": {
            "square": {"shape": [SQUARE] * 3, "gflops": peaks["square"]},
            **{
                f"decoder_gemm_{n}": {
                    "shape": [SHAPES[n]["bptt"] * SHAPES[n]["batch"], SHAPES[n]["hidden"], vocab],
                    "gflops": peaks[n],
                }
                for n in args.shapes
            },
        },
        "results": results,
    }
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
