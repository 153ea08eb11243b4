"""Training tasks: the parts of training that depend on the kind of data.

:class:`rnnlab.training.trainer.Trainer` has one loop (forward, loss, backward, clip, update, validate,
checkpoint, resume) for every kind of data; a task supplies what differs, chosen by
:func:`make_task` from the data it is given:

==============  ==========================================  =============================================
                :class:`TextTask` (token streams)           :class:`RollTask` (piano rolls)
==============  ==========================================  =============================================
model head      softmax (full or adaptive) over V symbols   88 independent sigmoid units
one window      TBPTT window of tau x B token ids           tau steps of B padded pieces, with a mask
hidden state    carried across all windows of an epoch      zero at each batch of pieces; carried only
                                                            across the windows of one batch (one piece)
training loss   mean NLL per token (the model scores the    NLL per step (sum of 88 BCE), mean over the
                targets itself: forward(..., targets=y))    unmasked steps of the window
evaluation      exact perplexity of the stream              exact NLL per time step over the pieces
a "token"       a token                                     a predicted time step (frame)
==============  ==========================================  =============================================

An epoch is a list of windows numbered 0, 1, ...; ``windows(epoch, start)`` rebuilds the same
list from the seed (so a resumed run continues at window ``start`` with the saved state), and a
window with ``reset`` starts from the zero state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.data.batching import batchify, check_enough, column_slice, iter_windows, window_lengths
from rnnlab.data.dataset import LMData
from rnnlab.data.rolls import (
    N_PITCHES,
    RollData,
    epoch_batches,
    nll_sum,
    pad_pieces,
    steps_in_window,
)
from rnnlab.errors import ConfigError, DataError
from rnnlab.evaluation.rolls import evaluate_rolls, uniform_nll
from rnnlab.evaluation.text import EvalResult, evaluate
from rnnlab.models.base import State, perplexity
from rnnlab.models.build import SequenceModel
from rnnlab.models.config import LanguageModelConfig
from rnnlab.training import distributed
from rnnlab.training.activation_reg import penalties


class Batch(NamedTuple):
    """One training window, whatever the data."""

    index: int  # position within the epoch (what a resume restarts from)
    inputs: Tensor  # (L, B) token ids, or (L, B, 88) frames
    targets: Tensor  # (L, B), or (L, B, 88)
    mask: Tensor | None  # (L, B) True on predicted steps (piano rolls), else None
    length: int  # L
    count: int  # predicted units (tokens or time steps) in the window
    reset: bool  # start from the zero state


class Task:
    """What the trainer asks of a kind of data (see the module docstring for the two kinds)."""

    metric = "ppl"  # the name of the reported figure: "ppl" (perplexity) or "nll" (per step)

    def model_config(self, model: LanguageModelConfig) -> LanguageModelConfig:
        """``model`` with the output size and head this data needs."""
        raise NotImplementedError

    def num_windows(self, epoch: int) -> int:
        raise NotImplementedError

    def windows(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The windows of ``epoch`` from index ``start`` on."""
        raise NotImplementedError

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """The mean loss of a window (what is minimised) from the model's outputs."""
        raise NotImplementedError

    def forward_loss(
        self, net: nn.Module, batch: Batch, state: State | None
    ) -> tuple[Tensor, State]:
        """Run ``net`` (the model or its DDP wrapper) on a window: ``(mean loss, state)``.

        Everything that needs a gradient goes through ``net``'s ``forward``, the only call
        through which DDP averages gradients.
        """
        outputs, state = net(batch.inputs, state)
        return self.loss(outputs, batch), state

    def forward_objective(
        self, net: nn.Module, batch: Batch, state: State | None
    ) -> tuple[Tensor, Tensor, State]:
        """``(objective, loss, state)``: what training minimises (the loss plus any activation
        penalties) and the plain mean loss (what is logged and checked for divergence)."""
        loss, state = self.forward_loss(net, batch, state)
        return loss, loss, state

    def lr_scale(self, batch: Batch) -> float:
        return 1.0

    def evaluate(
        self, model: SequenceModel, split: str, *, sync: bool = True, progress: bool = False
    ) -> EvalResult:
        """Exact evaluation of ``model`` on a split (``sync``: every DDP rank calls it and
        takes rank 0's figure; False when rank 0 evaluates alone; ``progress``: a bar on
        stderr when the pass is long)."""
        raise NotImplementedError

    def explosion_threshold(self) -> float:
        """A training loss above this means the run has blown up."""
        raise NotImplementedError

    def train_metrics(self, loss: float) -> dict[str, float]:
        """Extra fields of a training row for the mean loss ``loss``."""
        return {}

    def eval_metrics(self, prefix: str, result: EvalResult) -> dict[str, float]:
        """The fields of a validation row: ``<prefix>_loss`` and the task's figure."""
        raise NotImplementedError

    def describe_eval(self, result: EvalResult) -> str:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """What a checkpoint records about the data: vocabulary, level, corpus name."""
        raise NotImplementedError

    def check_resume(self, meta: dict[str, Any]) -> None:
        """Refuse a checkpoint whose data does not match this task's."""


# --------------------------------------------------------------------------- text
def check_trainable(data: LMData) -> None:
    """Refuse a training text of a single repeated symbol: there is nothing to learn."""
    train = data.train
    if train.numel() and not bool((train != train[0]).any()):
        symbol = data.vocab.itos[int(train[0])]
        raise DataError(
            f"the training text is one symbol ({symbol!r}) repeated; a language model needs at "
            "least two different symbols: give a longer or more varied text"
        )


def data_fingerprint(data: LMData) -> int:
    """A digest of the vocabulary and training ids, to check that all ranks see the same."""
    itos = json.dumps(data.vocab.itos, ensure_ascii=False).encode("utf-8")
    return distributed.fingerprint(itos, memoryview(data.train.cpu().contiguous().numpy()))


class TextTask(Task):
    """Token streams: TBPTT over ``B`` columns, softmax cross-entropy, perplexity.

    Under DDP each rank trains its own block of the batch columns.
    """

    metric = "ppl"

    def __init__(
        self,
        data: LMData,
        config: Any,
        device: torch.device,
        dist: distributed.DistContext | None = None,
    ) -> None:
        self.data = data
        self.config = config
        self.dist = dist
        t = config.train
        check_trainable(data)
        check_enough(len(data.train), t.batch_size, t.bptt)
        train_data = batchify(data.train, t.batch_size)  # (T, B)
        if dist is not None:
            distributed.check_same(dist, data_fingerprint(data), "training data")
            # this rank's own columns: (T, B / W)
            train_data = column_slice(train_data, dist.rank, dist.world_size).contiguous()
        self.train_data = train_data.to(device)
        self._lengths: tuple[int, list[int]] | None = None

    def model_config(self, model: LanguageModelConfig) -> LanguageModelConfig:
        """The full softmax over the vocabulary, or the adaptive one if the config asks."""
        head = "adaptive" if model.head == "adaptive" else "softmax"
        return LanguageModelConfig.from_dict(
            dict(model.to_dict(), vocab_size=len(self.data.vocab), head=head)
        )

    def _epoch_lengths(self, epoch: int) -> list[int]:
        if self._lengths is None or self._lengths[0] != epoch:
            t = self.config.train
            lengths = window_lengths(
                self.train_data.size(0),
                t.bptt,
                variable=t.variable_bptt,
                seed=t.seed,
                epoch=epoch,
            )
            self._lengths = (epoch, lengths)
        return self._lengths[1]

    def num_windows(self, epoch: int) -> int:
        return len(self._epoch_lengths(epoch))

    def windows(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for w in iter_windows(self.train_data, self._epoch_lengths(epoch), start=start):
            yield Batch(
                w.index, w.inputs, w.targets, None, w.length, w.inputs.numel(), w.index == 0
            )

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean cross-entropy of logits (T, B, V) (training uses :meth:`forward_loss`)."""
        return F.cross_entropy(outputs.view(-1, outputs.size(-1)), batch.targets.reshape(-1))

    def forward_loss(
        self, net: nn.Module, batch: Batch, state: State | None
    ) -> tuple[Tensor, State]:
        """Mean of the model's per-token nll: it is given the targets, so the adaptive softmax
        scores them without building the (T, B, V) distribution."""
        nll, state = net(batch.inputs, state, targets=batch.targets)  # (L, B)
        return nll.mean(), state

    def forward_objective(
        self, net: nn.Module, batch: Batch, state: State | None
    ) -> tuple[Tensor, Tensor, State]:
        """The mean nll plus AR and TAR (``optim.ar``, ``optim.tar``) on the last layer's
        outputs of the window, computed inside ``net``'s forward graph; without them, as
        :meth:`forward_loss`."""
        o = self.config.optim
        if not (o.ar or o.tar):
            return super().forward_objective(net, batch, state)
        nll, state, (hidden, dropped) = net(
            batch.inputs, state, targets=batch.targets, return_hidden=True
        )
        loss = nll.mean()
        return loss + penalties(hidden, dropped, o.ar, o.tar), loss, state

    def lr_scale(self, batch: Batch) -> float:
        t = self.config.train
        return batch.length / t.bptt if t.variable_bptt else 1.0

    def evaluate(
        self, model: SequenceModel, split: str, *, sync: bool = True, progress: bool = False
    ) -> EvalResult:
        """Exact loss; under DDP every rank evaluates and rank 0's figure counts."""
        t = self.config.train
        result = evaluate(
            model,  # type: ignore[arg-type]
            self.data.split(split),
            batch_size=t.eval_batch_size,
            bptt=max(t.bptt, 50),
            level=self.data.level,
            progress=progress,
            label=split,
            unscored=self.data.unscored.get(split),
        )
        if self.dist is not None and sync:
            loss = distributed.broadcast_float(self.dist, result.loss)
            bpc = None if result.bpc is None else loss / math.log(2)
            result = EvalResult(loss, perplexity(loss), result.tokens, bpc)
        return result

    def explosion_threshold(self) -> float:
        """A loss this far above a uniform guess (ln V nats) means the run has blown up."""
        return 3.0 * math.log(len(self.data.vocab)) + 10.0

    def train_metrics(self, loss: float) -> dict[str, float]:
        return {"train_ppl": perplexity(loss)}

    def eval_metrics(self, prefix: str, result: EvalResult) -> dict[str, float]:
        row = {f"{prefix}_loss": result.loss, f"{prefix}_ppl": result.perplexity}
        if result.bpc is not None:
            row[f"{prefix}_bpc"] = result.bpc
        return row  # type: ignore[return-value]

    def describe_eval(self, result: EvalResult) -> str:
        return f"loss {result.loss:.4f}, perplexity {result.perplexity:.2f}"

    def meta(self) -> dict[str, Any]:
        return {
            "vocab": self.data.vocab.to_dict(),
            "level": self.data.level,
            "corpus": self.data.name,
        }

    def check_resume(self, meta: dict[str, Any]) -> None:
        if len(self.data.vocab) != meta["model"]["vocab_size"]:
            raise DataError("the resumed run's vocabulary does not match its data")


# --------------------------------------------------------------------------- piano rolls
class _Planned(NamedTuple):
    batch: int  # index into the epoch's batches
    offset: int  # first input row of the window
    length: int
    count: int  # predicted steps inside


class RollTask(Task):
    """Piano rolls: padded, masked batches of whole pieces, 88 sigmoid units, NLL per step.

    Each epoch shuffles the pieces into batches of ``batch_size`` (:func:`rolls.epoch_batches`);
    a batch longer than ``bptt`` steps is trained in windows of ``bptt`` steps with the state
    carried between them (TBPTT within the pieces), and every batch starts from the zero state.
    Runs in one process (no DDP).
    """

    metric = "nll"

    def __init__(
        self,
        data: RollData,
        config: Any,
        device: torch.device,
        dist: distributed.DistContext | None = None,
    ) -> None:
        if dist is not None:
            raise ConfigError("piano-roll training runs in one process; start it without torchrun")
        t = config.train
        if t.variable_bptt:
            raise ConfigError("--variable-bptt is for text streams; drop it for piano rolls")
        if config.optim.ar or config.optim.tar:
            raise ConfigError("--ar and --tar are for text models; drop them for piano rolls")
        self.data = data
        self.config = config
        self.device = device
        self.pieces = [p.to(device) for p in data.train]
        self.lengths = [int(p.size(0)) for p in data.train]
        self._plan: tuple[int, list[list[int]], list[_Planned]] | None = None

    def model_config(self, model: LanguageModelConfig) -> LanguageModelConfig:
        if model.head == "adaptive":
            raise ConfigError(
                "the adaptive softmax is for text vocabularies; drop --head adaptive for piano rolls"
            )
        return LanguageModelConfig.from_dict(
            dict(model.to_dict(), vocab_size=N_PITCHES, head="sigmoid")
        )

    def _epoch_plan(self, epoch: int) -> tuple[list[list[int]], list[_Planned]]:
        if self._plan is None or self._plan[0] != epoch:
            t = self.config.train
            batches = epoch_batches(self.lengths, t.batch_size, seed=t.seed, epoch=epoch)
            plan = []
            for b, members in enumerate(batches):
                lengths = [self.lengths[i] for i in members]
                offset = 0
                for length in window_lengths(max(lengths), t.bptt):
                    plan.append(
                        _Planned(b, offset, length, steps_in_window(lengths, offset, length))
                    )
                    offset += length
            self._plan = (epoch, batches, plan)
        return self._plan[1], self._plan[2]

    def num_windows(self, epoch: int) -> int:
        return len(self._epoch_plan(epoch)[1])

    def windows(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        batches, plan = self._epoch_plan(epoch)
        padded, padded_index = None, -1
        for index in range(start, len(plan)):
            w = plan[index]
            if w.batch != padded_index:
                padded = pad_pieces([self.pieces[i] for i in batches[w.batch]])
                padded_index = w.batch
            assert padded is not None
            rows = slice(w.offset, w.offset + w.length)
            yield Batch(
                index,
                padded.inputs[rows],
                padded.targets[rows],
                padded.mask[rows],
                w.length,
                w.count,
                w.offset == 0,
            )

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        assert batch.mask is not None
        return nll_sum(outputs, batch.targets, batch.mask) / batch.count

    def evaluate(
        self, model: SequenceModel, split: str, *, sync: bool = True, progress: bool = False
    ) -> EvalResult:
        return evaluate_rolls(
            model,
            self.data.split(split),
            batch_size=self.config.train.eval_batch_size,
            progress=progress,
            label=split,
        )

    def explosion_threshold(self) -> float:
        """Three times the NLL of the all-1/2 guess (88 ln 2 nats per step), plus 10."""
        return 3.0 * uniform_nll() + 10.0

    def eval_metrics(self, prefix: str, result: EvalResult) -> dict[str, float]:
        return {f"{prefix}_loss": result.loss, f"{prefix}_nll": result.loss}

    def describe_eval(self, result: EvalResult) -> str:
        return f"NLL {result.loss:.4f} nats per time step"

    def meta(self) -> dict[str, Any]:
        return {"vocab": None, "level": self.data.level, "corpus": self.data.name}

    def check_resume(self, meta: dict[str, Any]) -> None:
        if meta.get("level") != self.data.level:
            raise DataError("the resumed run was not trained on piano rolls; check the run")


def make_task(
    data: LMData | RollData,
    config: Any,
    device: torch.device,
    dist: distributed.DistContext | None = None,
) -> Task:
    """The task for ``data``: :class:`RollTask` for piano rolls, else :class:`TextTask`."""
    if isinstance(data, RollData):
        return RollTask(data, config, device, dist)
    return TextTask(data, config, device, dist)


def steps_per_epoch(data: LMData | RollData, batch_size: int, bptt: int, seed: int = 1) -> int:
    """Training windows in one epoch (epoch 0's plan for piano rolls; the plan of other epochs
    differs only by how the shuffled pieces fall into batches)."""
    if isinstance(data, RollData):
        lengths = [int(p.size(0)) for p in data.train]
        batches = epoch_batches(lengths, batch_size, seed=seed, epoch=0)
        return sum(math.ceil((max(lengths[i] for i in b) - 1) / bptt) for b in batches)
    return max(1, math.ceil((len(data.train) // batch_size - 1) / bptt))
