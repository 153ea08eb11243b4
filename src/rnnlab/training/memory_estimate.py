"""Memory estimates: refuse a model that cannot fit before allocating any of it.

The estimate errs low on purpose (weights, gradients, optimizer slots and the activations kept for
backpropagation; no allocator overhead), so a refusal is certain and a pass is only likely.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rnnlab.config.run import OptimConfig, RunConfig
from rnnlab.errors import ConfigError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.registry import get_cell


def training_memory(
    model: LanguageModelConfig, optim: OptimConfig, batch_size: int, bptt: int, ddp: bool = False
) -> int:
    """A rough lower bound on the bytes one training process needs (float32)::

        weights:      4 P (2 + s + d)   P parameters; weights and gradients, s optimizer slots
                                        (Adam 2, SGD with momentum 1, else 0), d = 1 under DDP
                                        (its gradient buckets)
        activations:  4 tau B (3 V' + 10 g sum H_l + 2 E)   kept for backpropagation: logits,
                                        softmax and their gradient; g gates, states and cells
                                        per layer; embeddings

    V' is the vocabulary for the softmax head and, for the adaptive head, only its head
    cluster (``cutoffs[0]`` words and one entry per tail cluster), which every token scores;
    the tails score only their own tokens and are left out.

    It errs low on purpose: it serves to refuse sizes that cannot fit, before allocating them.
    """
    slots = 2 if optim.optimizer in ("adam", "adamw") else (1 if optim.momentum else 0)
    slots += 1 if optim.optimizer == "rmsprop" else 0
    weights = 4 * model.num_parameters() * (2 + slots + int(ddp))
    gates = get_cell(model.cell).gates
    scored = model.vocab_size
    if model.head == "adaptive" and model.cutoffs:
        scored = model.cutoffs[0] + len(model.cutoffs)
    per_token = 3 * scored + 10 * gates * sum(model.layer_sizes())
    per_token += 2 * model.embed_size
    return weights + 4 * bptt * batch_size * per_token


def machine_memory(device: torch.device) -> int | None:
    """Total memory of ``device``: the GPU's, or the machine's RAM (capped by a cgroup limit);
    None where the system does not say."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        total = min(total, limit)
    return total if total > 0 else None


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def check_memory(
    model: LanguageModelConfig,
    config: RunConfig,
    device: torch.device,
    *,
    processes: int = 1,
    ddp: bool = False,
) -> None:
    """Refuse, before allocating anything, a model that cannot fit in ``device``'s memory.

    ``processes`` share the device (data-parallel ranks on one CPU machine).
    """
    t = config.train
    need = training_memory(model, config.optim, t.batch_size, t.bptt, ddp) * processes
    have = machine_memory(device)
    if have is not None and need > have:
        who = f" for {processes} processes" if processes > 1 else ""
        raise ConfigError(
            f"the model would need at least {_size(need)} of memory{who} "
            f"({model.num_parameters():,} parameters), more than the {_size(have)} of "
            f"{'this GPU' if device.type == 'cuda' else 'this machine'}; use a smaller --hidden, "
            "--embed, --layers, --batch-size or --max-vocab"
        )
