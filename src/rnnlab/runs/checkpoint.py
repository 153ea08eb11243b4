"""Self-describing checkpoints: one safetensors file, tensors plus a JSON description.

A checkpoint is a single ``.safetensors`` file. Its tensors are the model weights
(``model.*``), the optimizer's tensor state (``optim.*``), the carried hidden state
(``state.*``) and the torch RNG state (``rng.*``). Its metadata holds one JSON document with
everything else: format and version, the run config, the model config, the vocabulary, the
optimizer's non-tensor state, the schedule, the data position and the metrics so far. So
``eval``, ``sample`` and ``resume`` need only the path, and loading never unpickles anything.

Writes are atomic (:func:`rnnlab.atomic.write_atomic`): the bytes go to a temporary file in the
same directory, are fsynced, and replace the old file with ``os.replace``; a crash at any moment
leaves either the old or the new checkpoint, never a broken one. Tied weights are stored once and
re-linked on load.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from rnnlab.atomic import write_atomic
from rnnlab.errors import CheckpointError

FORMAT = "rnnlab-checkpoint"
VERSION = 1
LAST = "last.safetensors"
BEST = "best.safetensors"
RUN_CONFIG = "run.json"


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file that exists but cannot be read whole: cut short or damaged (a crash of
    a non-atomic copy, a full disk, a bad transfer). ``path`` and ``problem`` (what is wrong, e.g.
    ``"is corrupt or truncated (SafetensorError)"``) let a caller give its own advice."""

    def __init__(self, path: Path, problem: str, advice: str = "") -> None:
        super().__init__(f"{path} {problem}" + (f"; {advice}" if advice else ""))
        self.path = path
        self.problem = problem


@dataclass
class Checkpoint:
    """The JSON description (``meta``) and the named tensors of one checkpoint."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, Tensor]:
        """Tensors under ``prefix.`` with the prefix removed."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}


def _dedupe(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Store tensors that are the same view of the same memory (tied weights) once.

    Returns the tensors to write and ``aliases`` (dropped name -> kept name). A tensor that only
    overlaps another one's memory (a different view) is copied, since safetensors refuses to
    write shared memory.
    """
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[str, int]] = set()
    kept: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in tensors.items():
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        key = (t.device, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        shared = t.numel() > 0 and (t.device.type, ptr) in storages
        storages.add((t.device.type, ptr))
        t = t.to("cpu")
        kept[name] = t.clone(memory_format=torch.contiguous_format) if shared else t.contiguous()
    return kept, aliases


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically; on failure the previous file is untouched.

    The bytes go to ``.<name>.tmp-<pid>`` beside ``path``, are fsynced and renamed over
    ``path``; whatever fails (disk full, permissions, an interrupt), the temporary file is
    removed and ``path`` holds the old checkpoint or none, never a partial one.
    """
    path = Path(path)
    tensors, aliases = _dedupe(ckpt.tensors)
    meta = dict(ckpt.meta, format=FORMAT, version=VERSION, aliases=aliases)
    blob = st_save(tensors, metadata={"format": FORMAT, "rnnlab": json.dumps(meta)})
    try:
        write_atomic(path, blob)
    except OSError as e:
        kept = "; the previous checkpoint is kept" if path.exists() else ""
        raise CheckpointError(
            f"could not save checkpoint {path}: {e.strerror or e}{kept}; free disk space or fix "
            f"permissions, then continue with rnnlab train --resume {path.parent}"
        ) from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint onto the CPU, refusing anything that is not an rnnlab checkpoint.

    ``path`` is a checkpoint file or a run directory (its best, else last, checkpoint). The
    header is parsed by hand and checked before any tensor is read; nothing is unpickled.

    Raises:
        CorruptCheckpoint: the file is cut short or damaged; its message says what else can be
            loaded (the run's other checkpoint when that one reads whole) or to retrain.
        CheckpointError: anything else (missing, foreign, pickled, from a newer rnnlab).
    """
    path = Path(path)
    if path.is_dir():
        path = checkpoint_in(path)
    try:
        return _read_checkpoint(path)
    except CorruptCheckpoint as e:
        raise CorruptCheckpoint(path, e.problem, _load_advice(path)) from None


def _read_checkpoint(path: Path) -> Checkpoint:
    """:func:`load_checkpoint` of a file, whose :class:`CorruptCheckpoint` carries no advice."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {path}; give a run directory or checkpoint made by rnnlab train"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    header = _read_header(blob, path)
    info = header.get("__metadata__")
    info = info if isinstance(info, dict) else {}
    raw = info.get("rnnlab")
    if info.get("format") != FORMAT or not isinstance(raw, str):
        raise CheckpointError(
            f"{path} is a safetensors file but not an rnnlab checkpoint (no rnnlab description); "
            "give a checkpoint made by rnnlab train"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CorruptCheckpoint(path, "is corrupt (its description is not JSON)") from None
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(path, "is corrupt (its description is not a JSON object)")
    version = meta.get("version", 0)
    if not isinstance(version, int):
        raise CorruptCheckpoint(path, f"is corrupt (format version {version!r})")
    if version > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer rnnlab (format {version}); upgrade rnnlab"
        )
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types for corrupt payloads
        raise CorruptCheckpoint(path, f"is corrupt or truncated ({type(e).__name__})") from None
    aliases = meta.get("aliases", {})
    if not isinstance(aliases, dict):
        raise CorruptCheckpoint(path, "is corrupt (its tied-tensor table is malformed)")
    for alias, target in aliases.items():
        if target not in tensors:
            raise CorruptCheckpoint(path, f"is corrupt: tied tensor {target} is missing")
        tensors[alias] = tensors[target]
    return Checkpoint(meta=meta, tensors=tensors)


def other_checkpoint(path: Path) -> Path | None:
    """The run's other checkpoint beside ``path`` (``last`` for ``best`` and the reverse), or
    None when ``path`` is neither."""
    return {BEST: path.with_name(LAST), LAST: path.with_name(BEST)}.get(path.name)


def readable_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path`` if it exists and reads whole, else None (for advice)."""
    try:
        return _read_checkpoint(path) if path.is_file() else None
    except CheckpointError:
        return None


def checkpoint_step(ckpt: Checkpoint) -> int | None:
    """The training step a checkpoint was saved at (None if it does not record one)."""
    progress = ckpt.meta.get("progress")
    step = progress.get("step") if isinstance(progress, dict) else None
    return step if isinstance(step, int) else None


def start_over_advice(run_dir: Path) -> str:
    """What is left when no checkpoint of ``run_dir`` can be read: the same settings again, in
    a new run directory (``run.json`` is a config file)."""
    config = run_dir / RUN_CONFIG
    if config.is_file():
        return (
            "start the run over with its settings in a new directory: "
            f"rnnlab train --config {shlex.quote(str(config))}"
        )
    return "retrain"


def _load_advice(path: Path) -> str:
    """What to load instead of the damaged checkpoint ``path`` (eval, sample, score, poem)."""
    other = other_checkpoint(path)
    if other is None:
        return "use another checkpoint or retrain"
    if readable_checkpoint(other) is not None:
        kind = other.name.split(".")[0]
        return f"the run's {kind} checkpoint reads whole: give {shlex.quote(str(other))} instead"
    state = "is damaged too" if other.exists() else "does not exist"
    return f"the run's other checkpoint {other.name} {state}; {start_over_advice(path.parent)}"


def _read_header(blob: bytes, path: Path) -> dict[str, Any]:
    """Parse the safetensors header by hand first, so foreign files get a clear message.

    Layout: 8 bytes little-endian header length ``n``, then ``n`` bytes of JSON, then the data.
    """
    foreign = (
        f"{path} is not an rnnlab checkpoint (not a safetensors file; pickled .pt files are "
        "refused, never loaded); give a checkpoint made by rnnlab train"
    )
    if len(blob) == 0:
        raise CorruptCheckpoint(path, "is empty, not an rnnlab checkpoint")
    if len(blob) < 8:
        raise CorruptCheckpoint(path, f"is truncated ({len(blob)} bytes), not an rnnlab checkpoint")
    n = int.from_bytes(blob[:8], "little")
    looks_like_header = blob[8:9] == b"{"
    if not any(blob[:4096]):  # what a crash can leave of a file whose blocks were not written
        raise CorruptCheckpoint(
            path, f"is corrupt (it starts with {min(len(blob), 4096)} zero bytes)"
        )
    if n <= 0 or 8 + n > len(blob):
        if looks_like_header and 0 < n < 1 << 32:
            raise CorruptCheckpoint(
                path, f"is truncated ({len(blob)} bytes, its header alone needs {8 + n})"
            )
        raise CheckpointError(foreign)
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(foreign) from None
    if not isinstance(header, dict):
        raise CheckpointError(foreign)
    return header


def checkpoint_in(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory: ``best`` (falling back to ``last``) or ``last``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(
            f"{run_dir} does not exist; give a run directory made by rnnlab train"
        )
    if not run_dir.is_dir():
        return run_dir
    order = [BEST, LAST] if which == "best" else [LAST]
    for name in order:
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(
        f"{run_dir} holds no rnnlab checkpoint ({' or '.join(order)}); train one with rnnlab train"
    )


def resume_point(path: str | Path) -> tuple[Path, str]:
    """What ``rnnlab train --resume PATH`` continues: ``(run directory, checkpoint name)``.

    A run directory continues from its last checkpoint; ``RUN/best.safetensors`` (or
    ``RUN/last.safetensors``) from that checkpoint, in ``RUN``. Another file is refused.
    """
    path = Path(path)
    if path.name in (BEST, LAST) and not path.is_dir():
        return path.parent, path.name
    if path.is_file():
        raise CheckpointError(
            f"{path} is a file and holds no rnnlab run; --resume takes a run directory (or its "
            f"{BEST} or {LAST})"
        )
    return path, LAST


def load_resume_checkpoint(run_dir: str | Path, name: str = LAST) -> Checkpoint | None:
    """The checkpoint a resumed run continues from: ``run_dir/name``.

    Without a last checkpoint the run continues from its best one if it has one (a crash
    between the two files of its first save), else None: it died before its first checkpoint
    and starts over from ``run.json``. Best is for when last is damaged: asked for while last
    reads whole and is further on, it is refused (that would discard the later steps).

    Raises:
        CheckpointError: the checkpoint is damaged (or a best one asked for is missing); the
            message gives the command to type: resume from the run's other checkpoint when
            that one reads whole, else start the run over.
    """
    run_dir = Path(run_dir)
    path = run_dir / name
    if not path.is_file():
        if name == BEST:
            raise CheckpointError(
                f"{path} does not exist; resume from the run's last checkpoint: "
                f"rnnlab train --resume {shlex.quote(str(run_dir))}"
            )
        if not (run_dir / BEST).is_file():
            return None
        path = run_dir / BEST
    try:
        ckpt = _read_checkpoint(path)
    except CorruptCheckpoint as e:
        raise CheckpointError(f"{path} {e.problem}; {_resume_advice(path)}") from None
    if name == BEST:
        _refuse_rolling_back(run_dir, ckpt)
    return ckpt


def _refuse_rolling_back(run_dir: Path, best: Checkpoint) -> None:
    """Resuming from best while the last checkpoint reads whole and is further on would throw
    its later steps away: refused, naming the command that continues from last."""
    last = readable_checkpoint(run_dir / LAST)
    if last is None or checkpoint_step(last) == checkpoint_step(best):
        return
    raise CheckpointError(
        f"{run_dir / LAST} reads whole (step {checkpoint_step(last)}); resuming from the best "
        f"checkpoint (step {checkpoint_step(best)}) would throw the steps after it away; "
        f"continue from last with rnnlab train --resume {shlex.quote(str(run_dir))}"
    )


def _resume_advice(path: Path) -> str:
    """The command that resumes the run of the damaged checkpoint ``path`` from its other one,
    or, when that one is damaged or missing too, how to start over."""
    other = other_checkpoint(path)
    ckpt = readable_checkpoint(other) if other is not None else None
    if other is None or ckpt is None:
        state = "does not exist" if other is None or not other.exists() else "is damaged too"
        name = other.name if other is not None else "other checkpoint"
        return (
            f"the run's {name} {state}, so nothing can be resumed; {start_over_advice(path.parent)}"
        )
    if other.name == LAST:
        return (
            "resume from the run's last checkpoint instead: "
            f"rnnlab train --resume {shlex.quote(str(path.parent))}"
        )
    step = checkpoint_step(ckpt)
    at = f" (step {step:,})" if step is not None else ""
    return (
        f"resume from the run's best checkpoint{at} instead (its metrics rows after that step "
        "are dropped and the steps trained again): "
        f"rnnlab train --resume {shlex.quote(str(other))}"
    )


def optimizer_to_checkpoint(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Split an optimizer ``state_dict`` into JSON and flat tensors (``optim.<param>.<key>``)."""
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                plain.setdefault(str(pid), {})[key] = value
    return {"param_groups": state["param_groups"], "plain": plain}, tensors


def optimizer_from_checkpoint(ckpt: Checkpoint) -> dict[str, Any]:
    """Rebuild an optimizer ``state_dict`` saved by :func:`optimizer_to_checkpoint`."""
    info = ckpt.meta.get("optimizer")
    if info is None:
        raise CheckpointError("the checkpoint holds no optimizer state; it cannot be resumed")
    state: dict[int, dict[str, Any]] = {}
    for name, t in ckpt.group("optim").items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, entries in info["plain"].items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": info["param_groups"]}


def rng_to_checkpoint() -> dict[str, Tensor]:
    """The torch RNG states (CPU, and CUDA where present) as tensors."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda{i}"] = s
    return out


def rng_from_checkpoint(ckpt: Checkpoint) -> None:
    """Restore the RNG states saved by :func:`rng_to_checkpoint` (CUDA ones where possible)."""
    rng = ckpt.group("rng")
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write a small JSON file atomically (the run config, results)."""
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as e:
        raise CheckpointError(
            f"could not write {path}: {e.strerror or e}; free disk space or fix permissions"
        ) from None
