"""Loading a trained run for inference: its config, its checkpoint's weights (checked against
the model they claim), the device. Inference (eval, sample, poem, score, gradflow) comes here,
never to the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnlab.config.run import RunConfig
from rnnlab.data.rolls import N_PITCHES, RollData
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.models.build import SequenceModel, build_model
from rnnlab.models.config import LanguageModelConfig
from rnnlab.runs import checkpoint as ck


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    return device


def set_threads(threads: int | None) -> None:
    """``--threads N`` of an inference command: torch's intra-op threads (None: its choice);
    a count below 1 is a one-line error."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {threads}")
    torch.set_num_threads(threads)


def load_model_weights(model: SequenceModel, ckpt: ck.Checkpoint) -> None:
    """Copy a checkpoint's weights into ``model``, refusing shapes that disagree."""
    expected = model.state_dict()
    check_weights(expected, ckpt)
    weights = ckpt.group("model")
    model.load_state_dict({k: weights[k] for k in expected})


def check_weights(expected: dict[str, Tensor], ckpt: ck.Checkpoint) -> None:
    """Refuse a checkpoint whose weights lack a tensor of ``expected`` or disagree in shape."""
    weights = ckpt.group("model")
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ck.CheckpointError(
            f"checkpoint lacks weights {', '.join(missing[:3])}; it does not fit this model"
        )
    for name, t in expected.items():
        if tuple(weights[name].shape) != tuple(t.shape):
            raise ck.CheckpointError(
                f"checkpoint tensor {name} has shape {tuple(weights[name].shape)} but its config "
                f"implies {tuple(t.shape)}; the checkpoint is inconsistent"
            )


def load_model(path: str | Path, device: str = "cpu") -> tuple[Any, Any, ck.Checkpoint]:
    """The model and vocabulary of a checkpoint (a run directory or a file), ready for inference.

    A text run gives ``(LanguageModel or AdaptiveLanguageModel, Vocab, checkpoint)``; a
    piano-roll run gives ``(PianoRollModel, None, checkpoint)`` (no vocabulary; its
    ``meta["level"]`` is ``"pianoroll"``). The weights are checked against a skeleton of the model on the ``meta``
    device (no memory) before the model is built, so a crafted description cannot make it
    allocate without bound.
    """
    ckpt = ck.load_checkpoint(path)
    try:
        config = LanguageModelConfig.from_dict(ckpt.meta["model"])
        level = ckpt.meta["level"]
        rolls = level == RollData.level
        if level not in ("char", "word") and not rolls:
            raise TypeError(f"level {level!r}")
        if rolls != (config.head == "sigmoid"):
            raise TypeError(f"a {config.head} head for level {level!r}")
        vocab = None if rolls else Vocab.from_dict(ckpt.meta["vocab"])
    except (KeyError, TypeError, RnnlabError) as e:
        raise ck.CheckpointError(f"checkpoint {path} has an invalid description ({e})") from None
    size = N_PITCHES if vocab is None else len(vocab)
    if size != config.vocab_size:
        what = "88 piano keys" if vocab is None else f"vocabulary of {len(vocab)}"
        raise ck.CheckpointError(
            f"checkpoint {path} is inconsistent: {what} but model of {config.vocab_size}"
        )
    with torch.device("meta"):
        check_weights(build_model(config).state_dict(), ckpt)
    model = build_model(config)
    load_model_weights(model, ckpt)
    model.to(pick_device(device)).eval()
    return model, vocab, ckpt


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The config of an existing run (from ``run.json``), for ``--resume``."""
    path = Path(run_dir) / ck.RUN_CONFIG
    if not path.is_file():
        raise RnnlabError(f"{run_dir} holds no rnnlab run (no {ck.RUN_CONFIG}); check the path")
    try:
        return RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
        raise RnnlabError(f"{path} is corrupt ({type(e).__name__}); start a new run") from None


def load_text_model(
    path: str | Path, device: str = "cpu", command: str = "sample"
) -> tuple[Any, Vocab, ck.Checkpoint]:
    """:func:`load_model` for what needs text (a vocabulary): a piano-roll run is refused with a
    one-line error naming ``command``."""
    model, vocab, ckpt = load_model(path, device=device)
    if vocab is None:
        raise ConfigError(
            f"{path} is a piano-roll model; rnnlab {command} works on text models "
            "(score piano rolls with rnnlab eval)"
        )
    return model, vocab, ckpt
