"""Fine-tuning: a new run that starts from a trained run's weights and vocabulary
(``rnnlab train --init-from RUN``).

What the new run takes from its source, and what it does not:

* **the weights** of the source's checkpoint (``best.safetensors``, else ``last``, or the file
  named), copied into a model of the same architecture;
* **the architecture** (cell, layers, sizes, tying, head, cutoffs, init range): the new run
  config's ``[model]`` is the source's. Given in flags or a config file, a different value is
  refused in one line; a preset's is replaced. ``dropout`` and ``impl`` may change;
* **the vocabulary and its level**; tokens of the new training text that it lacks are refused
  by default, mapped to ``<unk>`` (``new_tokens = "unk"``, ``--unk``) or appended
  (``"grow"``, ``--grow-vocab``: :func:`fine_tuning_vocab`, :func:`load_source_weights`);
* **the optimizer and loop settings, and dropout, as defaults** (:func:`resolve_fine_tuning`,
  the command line's resolution): the source run's ``[optim]``, ``[train]`` (but device and
  threads) and dropout are the base that a preset, a config file and the flags override;
* **not** its optimizer state, learning-rate schedule, step count, RNG or hidden state: those
  start afresh, as in any new run.

The run config records where the run started, in ``train.init_from``: the source directory,
the checkpoint file, its step and the SHA-256 of its bytes. A run set up again from that record
(``--config RUN/run.json``, or ``--resume`` before the first checkpoint) refuses a checkpoint
whose bytes have changed. ``--resume`` of a fine-tuned run continues from its own checkpoint and
never reads the source again. Piano-roll runs fine-tune on piano rolls (no vocabulary); a run
of the other kind is refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnlab.config.config_file import read_config_file
from rnnlab.config.resolve import resolve_config
from rnnlab.config.run import RunConfig, check_init_from
from rnnlab.data.dataset import LMData
from rnnlab.data.fetch import sha256_file
from rnnlab.data.registry import is_pianoroll
from rnnlab.data.rolls import RollData
from rnnlab.data.vocab import UNK, Vocab
from rnnlab.errors import CheckpointError, ConfigError, DataError
from rnnlab.models.build import SequenceModel
from rnnlab.models.config import LanguageModelConfig
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model

log = logging.getLogger(__name__)

# [model] fields a fine-tuned run takes from its source, with the flag that sets each
ARCHITECTURE = {
    "cell": "--cell",
    "num_layers": "--layers",
    "hidden_size": "--hidden",
    "last_hidden_size": "--last-hidden",
    "embed_size": "--embed",
    "tie_weights": "--tie",
    "head": "--head",
    "cutoffs": "--cutoffs",
    "div_value": "--div-value",
    "init_range": "--init-range",
}
ADJUSTABLE = ("dropout", "impl")  # [model] fields a fine-tuned run may change
MACHINE = {"device", "threads"}  # [train] fields not inherited from the source: the machine's
NEW_BIAS_QUANTILE = 0.1  # a grown token's output bias: this quantile of the source's biases
SHOWN_MISSING = 10  # missing tokens named in the refusal, the most frequent first
PIANOROLL = RollData.level


@dataclass
class Source:
    """The checkpoint a fine-tuned run starts from.

    ``path`` is the checkpoint file inside ``run_dir``; ``sha256`` the digest of its bytes and
    ``step`` the training step it was saved at. ``model`` is the architecture as built (its
    vocabulary size and cutoffs resolved), ``vocab`` the vocabulary (None for piano rolls),
    ``level`` ``char``, ``word`` or ``pianoroll``, ``weights`` the model's tensors and
    ``settings`` the source's run config (as its checkpoint records it).
    """

    run_dir: Path
    path: Path
    sha256: str
    step: int
    level: str
    model: LanguageModelConfig
    vocab: Vocab | None
    weights: dict[str, Tensor]
    settings: RunConfig

    def record(self, new_tokens: str) -> dict[str, Any]:
        """The ``train.init_from`` table of a run that starts here."""
        return {
            "run": str(self.run_dir),
            "checkpoint": self.path.name,
            "step": self.step,
            "sha256": self.sha256,
            "new_tokens": new_tokens,
        }


def find_checkpoint(where: str | Path, checkpoint: str | None = None) -> Path:
    """The checkpoint file ``where`` names: a run directory's ``checkpoint`` (None: best, else
    last), or a ``.safetensors`` file itself. One-line errors for a missing path, a directory
    that is not a run and a file that is not a checkpoint."""
    path = Path(where)
    hint = "give a run directory made by rnnlab train or one of its .safetensors files"
    if not path.exists():
        raise CheckpointError(f"--init-from {path}: no such run directory or file; {hint}")
    if path.is_dir():
        names = [checkpoint] if checkpoint else [ck.BEST, ck.LAST]
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"--init-from {path}: not a run directory (it holds no {' or '.join(names)}); {hint}"
        )
    if checkpoint is not None and checkpoint != path.name:
        raise ConfigError(
            f"--init-from {path} is a checkpoint file, but the config names checkpoint "
            f"{checkpoint!r}; give the run directory instead"
        )
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"--init-from {path}: not a run directory or a checkpoint (.safetensors) file; {hint}"
        )
    return path


def load_source(where: str | Path, checkpoint: str | None = None) -> Source:
    """Read and check the checkpoint to start from (see :func:`find_checkpoint`); a corrupt,
    truncated or foreign file is a one-line :class:`CheckpointError`."""
    path = find_checkpoint(where, checkpoint)
    try:
        digest = sha256_file(path)
        model, vocab, ckpt = load_model(path)
    except CheckpointError as e:
        raise CheckpointError(f"--init-from: {e}") from None
    except OSError as e:
        raise CheckpointError(f"--init-from {path}: cannot read it ({e.strerror or e})") from None
    progress = ckpt.meta.get("progress")
    step = progress.get("step", 0) if isinstance(progress, dict) else 0
    run = ckpt.meta.get("run")
    if not isinstance(run, dict):
        raise CheckpointError(f"--init-from {path}: it does not record its run config; retrain")
    try:
        settings = RunConfig.from_dict(run, where=f"{path}'s run config")
    except ConfigError as e:
        raise CheckpointError(f"--init-from: {e}") from None
    return Source(
        run_dir=path.parent.absolute(),
        path=path.absolute(),
        sha256=digest,
        step=step if isinstance(step, int) else 0,
        level=ckpt.meta["level"],
        model=model.config,
        vocab=vocab,
        weights={k: v.detach() for k, v in model.state_dict().items()},
        settings=settings,
    )


def resolve_fine_tuning(
    preset: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    file: str | Path | None = None,
) -> RunConfig:
    """``rnnlab train`` / ``rnnlab config``'s resolution when the settings ask for
    ``init_from``: the source run's ``[optim]`` and ``[train]`` (but its device and threads,
    which belong to the machine) and its dropout and impl are the base that the preset, the
    config ``file`` and the ``overrides`` (the flags) are laid over; then :func:`apply_source`
    sets the architecture, the level and the record. Without ``init_from`` it is
    :func:`rnnlab.config.resolve.resolve_config` itself."""
    config = resolve_config(preset, overrides, file=file)
    init = config.train.init_from
    if init is None:
        return config
    source = load_source(init["run"], init["checkpoint"])
    base = _source_settings(source)
    config = resolve_config(preset, overrides, base=base, file=file, default_preset=None)
    given: dict[str, dict[str, Any]] = {}
    layers = [read_config_file(file) if file is not None else {}, overrides or {}]
    for layer in layers:
        for section in ("data", "model"):
            values = layer.get(section)
            if isinstance(values, Mapping):
                given.setdefault(section, {}).update(values)
    return apply_source(config, source, given)[0]


def _source_settings(source: Source) -> dict[str, Any]:
    """The base layer of a fine-tuned run's config: the source run's optimizer and loop
    settings (not its own ``init_from``, nor the machine's device and threads) and its dropout
    and impl. (Its architecture is laid over the result by :func:`apply_source`: a preset's is
    replaced, not merged.)"""
    saved = source.settings.to_dict()
    train = {k: v for k, v in saved["train"].items() if k not in MACHINE | {"init_from"}}
    model = source.model.to_dict()
    return {
        "optim": saved["optim"],
        "train": train,
        "model": {key: model[key] for key in ADJUSTABLE},
    }


def _run_model(source: Source) -> dict[str, Any]:
    """The source's architecture as a run config's ``[model]`` (vocabulary size 0: the data's)."""
    return dict(source.model.to_dict(), vocab_size=0)


def apply_source(
    config: RunConfig,
    source: Source | None = None,
    given: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[RunConfig, Source]:
    """``config`` (which asks for ``train.init_from``) made to fit its source: the source's
    architecture (``dropout`` and ``impl`` stay the config's), its vocabulary level, and the
    completed ``train.init_from`` record. Idempotent.

    Args:
        config: the resolved run config.
        source: the source already read (None: read the one ``config`` names).
        given: the ``data`` and ``model`` settings given explicitly (flags, config file): one
            that disagrees with the source is refused instead of replaced.

    Raises:
        ConfigError: an architecture or level given that disagrees with the source; a recorded
            SHA-256 that no longer matches the checkpoint; a source of the other kind (piano
            rolls into text or back); ``--unk``/``--grow-vocab`` for piano rolls; no text.
    """
    if config.train.init_from is None:
        raise ConfigError("this run config does not ask for init_from")
    init = check_init_from(config.train.init_from)  # (a field set after construction too)
    if source is None:
        source = load_source(init["run"], init["checkpoint"])
    if init["sha256"] is not None and init["sha256"] != source.sha256:
        raise ConfigError(
            f"--init-from {source.path} has changed since this config was written (its sha256 "
            f"is {source.sha256[:12]}..., the config records {init['sha256'][:12]}...); drop "
            "init_from's sha256 and step to start from it as it is now"
        )
    given = given or {}
    data = _fit_data(config, source, given.get("data") or {})
    model = _fit_model(config.model, source, given.get("model") or {})
    policy = init["new_tokens"]
    if source.vocab is None and policy != "refuse":
        flag = "--unk" if policy == "unk" else "--grow-vocab"
        raise ConfigError(
            f"{flag} chooses what happens to tokens missing from a vocabulary; piano-roll runs "
            f"have none: drop {flag}"
        )
    train = replace(config.train, init_from=source.record(policy))
    return replace(config, data=data, model=model, train=train), source


def _fit_data(config: RunConfig, source: Source, given: Mapping[str, Any]) -> Any:
    """The data config at the source's level, refusing another kind of data."""
    data = config.data
    rolls = data.corpus is not None and is_pianoroll(data.corpus)
    where = f"--init-from {source.run_dir}"
    if source.level == PIANOROLL and not rolls:
        raise ConfigError(
            f"{where} is a piano-roll run and {data.describe()} is text; fine-tune it on a "
            "piano-roll corpus (--corpus jsb, nottingham, musedata or pianomidi)"
        )
    if source.level != PIANOROLL and rolls:
        raise ConfigError(
            f"{where} is a text model and {data.corpus} holds piano rolls; fine-tune it on "
            "text (--text FILE or a text --corpus)"
        )
    if rolls:
        return data
    if data.corpus is None and data.text is None:
        raise ConfigError(
            f"{where} needs the text to fine-tune on: give --text FILE or --corpus NAME"
        )
    level = given.get("level")
    if level is not None and level != source.level:
        raise ConfigError(
            f"{where} models {source.level}-level tokens; a fine-tuned run keeps its source's "
            f"vocabulary and level: drop --level {level}"
        )
    return replace(data, level=source.level)


def _fit_model(
    model: LanguageModelConfig, source: Source, given: Mapping[str, Any]
) -> LanguageModelConfig:
    """The source's architecture with this config's dropout and impl; a different architecture
    given explicitly is refused, naming each flag."""
    arch = _run_model(source)
    conflicts = []
    for key, flag in ARCHITECTURE.items():
        value = given.get(key)
        if value is None or (key == "cutoffs" and not value):  # no cutoffs: the default rule
            continue
        if key == "cutoffs":
            value = list(value)
        if value != arch[key]:
            shown = arch[key] if key != "cutoffs" else ",".join(map(str, arch[key])) or "none"
            conflicts.append(f"{flag} {_flag_value(value)} (the source's is {_flag_value(shown)})")
    if conflicts:
        raise ConfigError(
            f"--init-from {source.run_dir}: a fine-tuned run keeps its source's architecture; "
            f"drop {', '.join(conflicts)}"
        )
    return LanguageModelConfig.from_dict(arch | {k: getattr(model, k) for k in ADJUSTABLE})


def _flag_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


# --------------------------------------------------------------------------- the vocabulary
def fine_tuning_vocab(
    source: Vocab, train_tokens: list[str], policy: str, *, min_count: int = 1
) -> Vocab:
    """The vocabulary of a run fine-tuned from ``source`` on ``train_tokens``.

    Tokens of the training text that ``source`` lacks (those seen at least ``min_count`` times:
    rarer ones are ``<unk>`` as in any run):

    * ``refuse``: a one-line :class:`DataError` listing them, the most frequent first with
      their counts, and naming ``--unk`` and ``--grow-vocab``;
    * ``unk``: the source vocabulary as it is, so they encode to ``<unk>`` (a warning says how
      many);
    * ``grow``: the source vocabulary with them appended, by count (ties: first occurrence).

    Valid and test tokens the vocabulary lacks are ``<unk>``, as in any run.
    """
    counts = Counter(t for t in train_tokens if t not in source.stoi)  # first occurrence order
    ranked = [(t, c) for t, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_count]
    if not ranked:
        return source
    if policy == "grow":
        log.info("%d new tokens appended to the source vocabulary", len(ranked))
        return Vocab(
            source.itos + [t for t, _ in ranked], level=source.level, specials=source.specials
        )
    if policy == "unk":
        log.warning(
            "%d training tokens (%d distinct) are not in the source vocabulary; they become %s",
            sum(c for _, c in ranked),
            len(ranked),
            UNK,
        )
        return source
    shown = ", ".join(f"{t!r} ({c:,})" for t, c in ranked[:SHOWN_MISSING])
    more = f" and {len(ranked) - SHOWN_MISSING:,} more" if len(ranked) > SHOWN_MISSING else ""
    raise DataError(
        f"the training text has {len(ranked):,} token{'s' * (len(ranked) > 1)} the source "
        f"vocabulary lacks: {shown}{more}; map them to {UNK} with --unk or add them to the "
        "vocabulary with --grow-vocab"
    )


def vocab_policy(source: Source, config: RunConfig) -> Callable[[list[str]], Vocab]:
    """What :func:`rnnlab.data.dataset.load_data` calls with the training tokens to get the
    fine-tuned run's vocabulary (:func:`fine_tuning_vocab` under ``config``'s policy)."""
    assert source.vocab is not None
    vocab, policy = source.vocab, config.train.init_from["new_tokens"]  # type: ignore[index]

    def make(tokens: list[str]) -> Vocab:
        return fine_tuning_vocab(vocab, tokens, policy, min_count=config.data.min_count)

    return make


def check_data(source: Source, data: LMData | RollData) -> None:
    """Refuse data already loaded (tests, the comparison grid) that does not fit ``source``:
    the other kind, or a vocabulary that does not start with the source's."""
    if (source.vocab is None) != isinstance(data, RollData):
        kind = "piano-roll" if source.vocab is None else "text"
        raise ConfigError(f"--init-from {source.run_dir} is a {kind} run; the data given is not")
    if source.vocab is not None:
        assert isinstance(data, LMData)
        if data.vocab.itos[: len(source.vocab)] != source.vocab.itos:
            raise ConfigError(
                f"the data's vocabulary is not --init-from {source.run_dir}'s; load the data "
                "with the source's vocabulary"
            )


# --------------------------------------------------------------------------- the weights
def load_source_weights(model: SequenceModel, source: Source) -> int:
    """Copy the source's weights into ``model`` (built with the source's architecture) and
    return the number of rows grown.

    A tensor the vocabulary has grown (more rows than the source's, same width) keeps the
    source's rows, and each new row starts as: a weight matrix's mean row (the embedding,
    the softmax decoder, an adaptive tail cluster; a tied decoder stays tied), a bias vector's
    :data:`NEW_BIAS_QUANTILE` quantile, so a new token starts out rare.
    """
    target = model.state_dict()
    weights = {}
    grown = 0
    for name, t in target.items():
        w = source.weights.get(name)
        if w is None:
            raise CheckpointError(f"--init-from {source.path}: it lacks the weights {name}")
        if w.shape == t.shape:
            weights[name] = w
            continue
        extra = t.shape[0] - w.shape[0] if t.dim() and w.dim() == t.dim() else -1
        if extra <= 0 or t.shape[1:] != w.shape[1:]:
            raise CheckpointError(
                f"--init-from {source.path}: its tensor {name} has shape {tuple(w.shape)}, this "
                f"model's {tuple(t.shape)}; the source does not fit"
            )
        weights[name] = _grow(w, extra)
        grown = max(grown, extra)
    model.load_state_dict(weights)
    return grown


def _grow(w: Tensor, extra: int) -> Tensor:
    """``w`` with ``extra`` new rows: the mean row of a matrix, a low quantile of a vector."""
    if w.dim() == 1:
        fill = torch.quantile(w.float(), NEW_BIAS_QUANTILE).to(w.dtype).expand(extra)
    else:
        fill = w.mean(dim=0, keepdim=True).expand(extra, *w.shape[1:])
    return torch.cat((w, fill))
