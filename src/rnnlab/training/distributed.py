"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` + DistributedDataParallel.

Launch with ``torchrun`` (one process per GPU, or several on a CPU machine)::

    torchrun --standalone --nproc_per_node 4 -m rnnlab train --text corpus.txt --batch-size 64

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address) in every
process; :func:`setup` reads them and joins the process group: NCCL on CUDA (device
``cuda:LOCAL_RANK``), gloo on the CPU. Without them (a plain ``rnnlab train``) nothing changes.

**The combined batch.** The batch of ``B`` columns is laid out exactly as in a single process;
rank ``r`` of ``W`` trains on its own contiguous block of ``B / W`` columns
(:func:`rnnlab.data.batching.column_slice`) and carries its own part of the hidden state. Each rank's
loss is the mean over its ``L * B / W`` tokens; DDP averages the gradients over the ranks, and
since every rank holds the same number of tokens,

.. math::  \\frac{1}{W} \\sum_r \\nabla \\frac{1}{L B / W} \\sum_{t \\in r} \\ell_t
           = \\nabla \\frac{1}{L B} \\sum_t \\ell_t ,

the gradient of the combined batch's mean loss. Clipping runs after DDP's all-reduce, on the
same global gradient everywhere, so every rank takes the same step and the run equals the
single-process run with batch ``B`` up to floating-point summation order.

**Agreement.** Anything that decides what happens next is the same on every rank: the logged
loss is the mean of the ranks' losses (one ``all_reduce`` per step, which also carries the
"stop now" flags of Ctrl-C and ``--max-minutes``); every rank evaluates the validation set and
rank 0's figure is broadcast, so learning-rate decisions agree. Only rank 0 writes checkpoints,
``metrics.jsonl`` and ``results.json`` and shows a progress bar.

**Checkpoints** hold the hidden state of all ranks, gathered into the full ``(layers, B, H)``
tensor (each rank slices its columns back on resume), and each rank's RNG state, so a run can be
resumed with the same number of processes exactly, or with another number (any that divides
``B``, one process included) with the same weights, optimizer and hidden state (only the dropout
masks differ, as they would between any two world sizes).
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rnnlab.errors import ConfigError, RnnlabError

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT = timedelta(minutes=30)  # how long a rank waits for the others in one collective


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int  # processes on this machine (they share its memory)
    device: torch.device
    backend: str
    owns_group: bool = True  # setup() created the process group (and so leaves it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside a distributed launch)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def launched_by_torchrun() -> bool:
    """True when the environment describes a run of two or more processes."""
    return all(v in os.environ for v in ENV_VARS) and _env_int("WORLD_SIZE") > 1


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={value!r} is not an integer; launch with torchrun"
        ) from None


def setup(device_name: str) -> DistContext | None:
    """Join the process group described by torchrun's environment; None for a single process.

    ``device_name`` is the run's ``--device``: ``auto`` picks CUDA when present. On CUDA each
    process takes ``cuda:LOCAL_RANK`` and NCCL; on the CPU, gloo. An already initialised
    process group (a caller that set one up itself) is used as it is.
    """
    if not launched_by_torchrun():
        return None
    rank, world, local_rank = (_env_int(v) for v in ENV_VARS)
    local_world = _env_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else world
    use_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU (this machine has "
                f"{torch.cuda.device_count()}); use --nproc_per_node <= the GPU count"
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    elif device_name in ("auto", "cpu"):
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise ConfigError(f"unknown device {device_name!r}; use auto, cpu or cuda")
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run a single process")
    owns_group = not dist.is_initialized()
    if owns_group:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set; launch distributed runs with torchrun"
            )
        dist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(shutdown)  # also when an error ends the process
    elif dist.get_world_size() != world or dist.get_rank() != rank:
        raise ConfigError("the existing process group does not match RANK/WORLD_SIZE")
    backend = dist.get_backend()
    ctx = DistContext(rank, world, local_rank, local_world, device, backend, owns_group)
    log.info("rank %d of %d on %s (%s)", rank, world, device, ctx.backend)
    return ctx


def shutdown() -> None:
    """Leave the process group (if this process joined one).

    DDP wrappers that are no longer used are collected first, so that none outlives the group
    (a wrapper freed during interpreter teardown, after the group, can abort the process).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` inside DistributedDataParallel (which starts by copying rank 0's weights).

    The adaptive softmax skips the tail clusters no target of a window falls in, so DDP must
    look for parameters without a gradient.
    """
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    unused = getattr(getattr(model, "config", None), "head", None) == "adaptive"
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=unused
    )


def agree(
    ctx: DistContext, means: Sequence[float], flags: Sequence[bool] = ()
) -> tuple[list[float], list[bool]]:
    """The ranks' mean of each of ``means`` and, per flag, whether any rank raised it.

    One ``all_reduce`` of ``[*means, *flags]``. With equal tokens per rank the mean loss is the
    combined batch's loss; the mean clock is the one every rank then reads for a schedule that
    follows the clock (cosine over ``--max-minutes``), so the ranks keep equal learning rates.
    """
    t = torch.tensor([*means, *(float(f) for f in flags)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    values = t.tolist()
    n = len(means)
    return [v / ctx.world_size for v in values[:n]], [v > 0 for v in values[n:]]


def broadcast_float(ctx: DistContext, value: float) -> float:
    """Rank 0's ``value`` on every rank."""
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def gather_columns(ctx: DistContext, part: Tensor) -> Tensor:
    """The ranks' column blocks ``(layers, B / W, H)`` side by side: ``(layers, B, H)``."""
    parts = [torch.empty_like(part) for _ in range(ctx.world_size)]
    dist.all_gather(parts, part.contiguous())
    return torch.cat(parts, dim=1)  # (layers, B, H)


def own_columns(full: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s block of the columns (dim 1) of a full ``(layers, B, H)`` state."""
    b = full.shape[1]
    if b % world_size:
        raise RnnlabError(
            f"the saved hidden state has {b} columns, not divisible by {world_size} processes; "
            "resume with a number of processes that divides the batch size"
        )
    n = b // world_size
    return full[:, rank * n : (rank + 1) * n].contiguous()


def gather_tensors(ctx: DistContext, t: Tensor) -> list[Tensor]:
    """Every rank's copy of a same-shaped tensor (e.g. RNG states), on the CPU."""
    moved = t.to(ctx.device)
    parts = [torch.empty_like(moved) for _ in range(ctx.world_size)]
    dist.all_gather(parts, moved)
    return [p.cpu() for p in parts]


def fingerprint(*parts: bytes | memoryview) -> int:
    """A 62-bit digest of some buffers (to compare the ranks' data cheaply, without copies)."""
    h = hashlib.sha256()
    for p in parts:
        view = memoryview(p).cast("B")
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)
    return int.from_bytes(h.digest()[:8], "little") >> 2


def check_same(ctx: DistContext, value: int, what: str) -> None:
    """Raise on every rank unless ``value`` is the same on all ranks."""
    t = torch.tensor([value, -value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise RnnlabError(
            f"the {ctx.world_size} processes do not see the same {what}; give every machine the "
            "same files (and Python, for the default corpus)"
        )
