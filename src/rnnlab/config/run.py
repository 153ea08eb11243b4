"""The run config: optimizer, loop and the sections of the other layers composed into one
:class:`RunConfig`, saved as ``run.json`` and inside every checkpoint; and the strict reading of
a dict of sections (a run.json, a preset, a config file) that refuses unknown keys and values of
the wrong type with one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rnnlab.data.dataset import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.strict import checked_fields, field_names

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


SCHEDULES = ("constant", "decay", "plateau", "cosine")


ASGD_MODES = ("off", "nt", "finetune")  # averaged SGD (AWD-LSTM's NT-ASGD and its fine-tuning)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Schedules: ``constant``; ``decay`` multiplies the rate by ``decay_factor`` after every epoch
    from epoch ``decay_start`` on (Zaremba et al. 2014); ``plateau`` multiplies it by
    ``plateau_factor`` whenever the validation loss does not improve (the PyTorch
    word-language-model example divides by 4); ``cosine`` anneals the rate over the run's
    budget, ``lr * (1 + cos(pi * f)) / 2`` where ``f`` is the fraction of the budget spent: the
    largest of steps / ``max_steps``, minutes / ``max_minutes`` and epochs / ``epochs`` (a fixed
    budget is spent best when the rate reaches zero at its end; with ``max_minutes`` the rate
    follows the clock, so a resumed run is not bit-identical).

    ``rmsprop`` divides each gradient by the root of its running mean square (decay 0.9,
    Tieleman & Hinton 2012), as Chung et al. (2014) trained. ``weight_noise`` is the standard
    deviation of the Gaussian noise added to every weight for each training step (0: off; see
    :mod:`rnnlab.training.weight_noise`).

    AWD-LSTM (Merity et al. 2018): ``ar`` and ``tar`` are the coefficients alpha and beta of
    activation and temporal activation regularisation (0: off; see
    :mod:`rnnlab.training.activation_reg`). ``asgd`` averages the weights
    (:mod:`rnnlab.training.asgd`): ``nt`` is NT-ASGD, plain SGD until an epoch-end validation
    loss is worse than the best of those before the last ``nonmono`` ones, then SGD whose
    iterates are averaged, validation and checkpoints using the average; ``finetune`` averages
    from the first step (AWD-LSTM's fine-tuning of a run started with ``--init-from``) and ends
    the run when the same test fires. Both need ``optimizer`` sgd.
    """

    optimizer: str = "sgd"
    lr: float = 20.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 0.25
    schedule: str = "plateau"
    decay_start: int = 4
    decay_factor: float = 0.5
    plateau_factor: float = 0.25
    weight_noise: float = 0.0
    ar: float = 0.0
    tar: float = 0.0
    asgd: str = "off"
    nonmono: int = 5

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if not self.clip >= 0:  # NaN too
            raise ConfigError(f"clip must be >= 0 (0 turns clipping off), got {self.clip}")
        if self.asgd not in ASGD_MODES:
            raise ConfigError(f"unknown asgd mode {self.asgd!r}; choose {', '.join(ASGD_MODES)}")
        if self.asgd != "off" and self.optimizer != "sgd":
            raise ConfigError(
                f"--asgd {self.asgd} averages SGD's iterates; use --optimizer sgd "
                f"(got {self.optimizer}) or --asgd off"
            )
        if isinstance(self.nonmono, bool) or not isinstance(self.nonmono, int) or self.nonmono < 1:
            raise ConfigError(f"nonmono must be a positive integer, got {self.nonmono!r}")
        for name in ("momentum", "weight_decay", "weight_noise", "ar", "tar"):
            if not getattr(self, name) >= 0:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}"
                )
        for name in ("decay_factor", "plateau_factor"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
                )


NEW_TOKENS = ("refuse", "unk", "grow")  # what fine-tuning does with tokens its source lacks

# the keys of TrainConfig.init_from and the type of each (None allowed for all but run)
INIT_FROM_KEYS: dict[str, type] = {
    "run": str,
    "checkpoint": str,
    "step": int,
    "sha256": str,
    "new_tokens": str,
}


@dataclass
class TrainConfig:
    """The loop: window, batch, length of training, seed, saving and logging; and where a
    fine-tuned run starts (``init_from``).

    ``init_from`` (None: a fresh model) is a table: ``run``, the source run directory or one of
    its ``.safetensors`` files; ``checkpoint``, the file in it (None: best, else last);
    ``step`` and ``sha256``, that checkpoint's step and the SHA-256 of its file (filled in when
    the run is set up, checked when given); ``new_tokens``, what to do with tokens of the new
    training text that the source vocabulary lacks: ``refuse`` (the default), ``unk`` or
    ``grow`` (see :mod:`rnnlab.training.init_from`).
    """

    bptt: int = 35
    variable_bptt: bool = False
    batch_size: int = 20
    eval_batch_size: int = 10
    epochs: int = 6
    max_steps: int | None = None
    max_minutes: float | None = None
    patience: int | None = None
    seed: int = 1
    save_every: int | None = None
    eval_every: int | None = None  # also validate every N steps (log-only: learning curves)
    log_every: int = 200
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    init_from: dict[str, Any] | None = None  # fine-tuning: the source checkpoint (see above)

    def __post_init__(self) -> None:
        if self.init_from is not None:
            self.init_from = check_init_from(self.init_from)
        for name in ("bptt", "batch_size", "eval_batch_size", "epochs", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be a positive integer, got {value!r}"
                )
        for name in ("max_steps", "save_every", "eval_every", "patience", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"{name.replace('_', '-')} must be a positive integer, got {value!r}"
                )
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max-minutes must be positive, got {self.max_minutes}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")


def check_init_from(table: Mapping[str, Any]) -> dict[str, Any]:
    """``train.init_from`` checked and completed: every key of :data:`INIT_FROM_KEYS`, in that
    order (a missing one None, ``new_tokens`` ``refuse``); an unknown key, a value of the wrong
    type or a missing ``run`` is a one-line :class:`ConfigError`."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"train.init_from must be a table (run = DIR, ...), got {table!r}")
    unknown = [k for k in table if k not in INIT_FROM_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in train.init_from; known: {', '.join(INIT_FROM_KEYS)}"
        )
    out = {key: table.get(key) for key in INIT_FROM_KEYS}
    if out["new_tokens"] is None:
        out["new_tokens"] = "refuse"
    for key, kind in INIT_FROM_KEYS.items():
        value = out[key]
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ConfigError(f"train.init_from {key} must be a {kind.__name__}, got {value!r}")
    if not out["run"]:
        raise ConfigError(
            "train.init_from needs run, the run directory (or checkpoint file) to start from: "
            "give --init-from RUN (--unk and --grow-vocab only apply to it)"
        )
    if out["new_tokens"] not in NEW_TOKENS:
        raise ConfigError(
            f"train.init_from new_tokens must be refuse, unk (--unk) or grow (--grow-vocab), got "
            f"{out['new_tokens']!r}"
        )
    if out["step"] is not None and out["step"] < 0:
        raise ConfigError(f"train.init_from step must be >= 0, got {out['step']}")
    return out


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``run.json`` and inside every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), model=self.model.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "") -> RunConfig:
        """The config that ``d`` (as :meth:`to_dict` gives, sections may be partial) describes.

        Missing keys take their defaults (a run.json written before a field existed still
        loads); an unknown section or key, or a value of the wrong type, is a one-line
        :class:`ConfigError` naming it (``where``, e.g. a file name, prefixes the message).
        """
        values = check_sections(d, where=where)
        preset = values.get("preset")
        if preset is not None and not isinstance(preset, str):
            raise ConfigError(f"{_prefix(where)}preset must be a name, got {preset!r}")
        return cls(
            data=DataConfig(**values.get("data", {})),
            model=LanguageModelConfig(**values.get("model", {})),
            optim=OptimConfig(**values.get("optim", {})),
            train=TrainConfig(**values.get("train", {})),
            preset=preset,
        )


# section name -> its class; with ``preset`` these are the top-level keys of a RunConfig dict
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": LanguageModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}
TOP_LEVEL = (*SECTIONS, "preset")


def section_keys(section: str) -> tuple[str, ...]:
    """The keys section ``section`` (data, model, optim, train) accepts, in field order."""
    return field_names(SECTIONS[section])


def check_sections(d: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """``d`` checked against the config classes (:func:`rnnlab.strict.checked_fields` for each
    section): known sections, known keys, values of the declared types. Returns a new dict of
    new section dicts.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{_prefix(where)}a config is a table of sections, got {d!r}")
    unknown = [k for k in d if k not in TOP_LEVEL]
    if unknown:
        raise ConfigError(
            f"{_prefix(where)}unknown section {unknown[0]!r}; known: {', '.join(TOP_LEVEL)}"
        )
    out: dict[str, Any] = {k: v for k, v in d.items() if k not in SECTIONS}
    for section, values in d.items():
        if section in SECTIONS:
            out[section] = check_section(section, values, where=where)
    return out


def check_section(section: str, values: Any, *, where: str = "") -> dict[str, Any]:
    """One section's keys and value types checked (see :func:`check_sections`)."""
    return checked_fields(SECTIONS[section], values, section=section, where=where)


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""
