"""The trainer: truncated BPTT with clipping, schedules, early stopping, checkpoints and resume.

One loop serves ``train``, ``--resume``, fine-tuning and the comparison grid, for text and for
piano rolls alike. Per step::

    state <- None if the window starts afresh, else detach_state(state)   # the window boundary
    [weights += N(0, noise^2)]                # weight noise (optional, rnnlab.training.weight_noise)
    loss, state <- task.forward_loss(model, window, state)
                                              # text: model(inputs, state, targets) gives the
                                              # nll (L, B) (full or adaptive softmax), loss its
                                              # mean; rolls: logits (L, B, 88), then the mean
                                              # NLL per unmasked time step
    backward; [restore the clean weights]; clip ||g|| to ``clip``; optimizer step
                                              # (lr scaled by L/bptt for variable text windows)

What depends on the kind of data (windows, loss, evaluation, what a checkpoint records about the
data) is a :class:`rnnlab.training.strategies.Task`, chosen from the data; the loop itself is the same. The
trainer knows nothing of which cell it trains. Everything that decides the next step (weights,
optimizer, learning rate, best score, the carried hidden state, RNG states, the epoch and the window
within it) goes into the checkpoint, so a resumed run continues bit for bit.

**Crash safety.** Checkpoints are written atomically (:mod:`rnnlab.runs.checkpoint`), ``best`` before
``last``, and never with weights that are no longer finite; a resumed run drops the metrics rows
logged after its checkpoint and the temporary files of killed writers. So a run killed at any
moment (SIGKILL included) and resumed ends with exactly the weights of an uninterrupted run on the
CPU; killed before its first checkpoint, ``--resume`` starts it over from ``run.json``.

**Data parallelism.** Under ``torchrun`` each process trains its own block of the batch columns
inside DistributedDataParallel; see :mod:`rnnlab.training.distributed`. Sizes that cannot fit in memory are
refused before the model is built (:func:`check_memory`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnlab.config.run import OptimConfig, RunConfig
from rnnlab.data.dataset import LMData, load_data
from rnnlab.data.rolls import RollData
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, RnnlabError, TrainingDiverged
from rnnlab.evaluation.text import EvalResult
from rnnlab.models.base import State, detach_state
from rnnlab.models.build import build_model
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.files import METRICS, remove_stale_temp_files, trim_metrics
from rnnlab.runs.load import load_model_weights, pick_device
from rnnlab.training import distributed, init_from
from rnnlab.training.asgd import Averager, nonmono_trigger
from rnnlab.training.memory_estimate import check_memory
from rnnlab.training.strategies import Batch, Task, make_task
from rnnlab.training.weight_noise import WeightNoise

log = logging.getLogger(__name__)

RMSPROP_ALPHA = 0.9  # decay of the mean square (Tieleman & Hinton 2012, lecture 6e)


@dataclass
class Progress:
    """Where the run is: the position in the data and the schedule's memory."""

    epoch: int = 0
    window: int = 0  # next window of the epoch
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training, summed over sessions
    lr: float = 0.0
    best_valid: float = math.inf  # best epoch-end validation loss: the schedule's memory
    best_saved: float = math.inf  # validation loss of best.safetensors
    bad_epochs: int = 0
    validated_step: int = -1  # the step last validated (not again after a resume)
    done: bool = False
    asgd_step: int | None = None  # NT-ASGD: the step averaging started at (None: not yet)
    valid_losses: list[float] = field(default_factory=list)  # epoch-end checks, for NT-ASGD


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: where the run is, how far it got, the final scores of
    its best checkpoint (None on the ranks other than 0) and the metrics rows of this session."""

    run_dir: Path
    progress: Progress
    valid: EvalResult | None
    test: EvalResult | None
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """The end-of-run summary that ``rnnlab train --json`` prints: ``run_dir``, ``valid``
        and ``test`` (as :meth:`EvalResult.to_dict`, or None), ``steps``, ``epochs`` and
        ``wall_time`` (seconds of training, rounded to 0.01)."""
        return {
            "run_dir": str(self.run_dir),
            "valid": self.valid.to_dict() if self.valid else None,
            "test": self.test.to_dict() if self.test else None,
            "steps": self.progress.step,
            "epochs": self.progress.epoch,
            "wall_time": round(self.progress.elapsed, 2),
        }


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=RMSPROP_ALPHA,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class _Meter:
    """The training since the last log row: tokens, summed loss, steps, the last gradient
    norm, and when it started (``time.perf_counter()``)."""

    mark: float
    tokens: int = 0
    loss: float = 0.0
    count: int = 0
    norm: float = 0.0

    def add(self, tokens: int, loss: float, norm: float) -> None:
        self.tokens += tokens
        self.loss += loss
        self.count += 1
        self.norm = norm

    def reset(self, mark: float) -> None:
        self.tokens, self.loss, self.count, self.mark = 0, 0.0, 0, mark


def _recording_encoding(config: RunConfig, data: LMData | RollData) -> RunConfig:
    """``config`` with the codec its text file was read with as ``data.encoding`` (what
    ``run.json`` and the checkpoints record, and ``eval``, ``score`` and ``--resume`` reuse)."""
    used = getattr(data, "encoding", None)
    if used is None or used == config.data.encoding:
        return config
    return replace(config, data=replace(config.data, encoding=used))


class Trainer:
    """Trains a :class:`LanguageModel` or :class:`AdaptiveLanguageModel` (text) or a
    :class:`PianoRollModel` (piano rolls) as ``config`` says and keeps ``run_dir`` up to date.
    The data picks the task (:func:`rnnlab.training.strategies.make_task`) and the model's head.

    With ``config.train.init_from`` (fine-tuning, :mod:`rnnlab.training.init_from`) a new run
    starts from that checkpoint's weights and vocabulary, with the source's architecture; a
    resumed one continues from its own checkpoint and never reads the source.

    Under ``torchrun`` (see :mod:`rnnlab.training.distributed`) every process builds a Trainer with the
    same arguments: each trains on its own block of the batch columns inside
    DistributedDataParallel, and only rank 0 writes to ``run_dir``, logs and shows progress.

    Args:
        config: the run config.
        run_dir: where ``run.json``, ``last.safetensors``, ``best.safetensors``,
            ``metrics.jsonl`` and ``results.json`` go.
        resume: continue from ``run_dir/last.safetensors`` (from ``best.safetensors`` if last is
            missing: killed between the two files of a save; or start over from ``run.json`` if
            the run died before its first checkpoint).
        resume_from: the checkpoint a resume continues from: ``last.safetensors`` (default) or
            ``best.safetensors`` (when last is damaged: the metrics rows after best's step are
            dropped, and last is overwritten at the next save).
        progress: show a progress bar (the CLI decides).
        data: already-loaded data (tests, the comparison grid); loaded from the config otherwise.
        on_log: called with every metrics row (the comparison grid collects curves this way).
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        resume_from: str = ck.LAST,
        progress: bool = False,
        data: LMData | RollData | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"{self.run_dir} is a file, not a run directory; pick another --out")
        cpus = os.cpu_count() or 1
        if config.train.threads is not None and config.train.threads > MAX_THREADS_PER_CPU * cpus:
            raise ConfigError(
                f"{config.train.threads} threads is far more than this machine's {cpus} CPUs; "
                f"use at most --threads {MAX_THREADS_PER_CPU * cpus}"
            )
        self.on_log = on_log
        self.dist = distributed.setup(config.train.device)
        self.is_main = self.dist is None or self.dist.is_main
        self._clock = (time.perf_counter(), 0.0)
        self._shared_seconds: float | None = None  # DDP: the ranks' agreed clock (_agree)
        self.world_size = 1 if self.dist is None else self.dist.world_size
        self.show_progress = progress and self.is_main
        self.device = self.dist.device if self.dist else pick_device(config.train.device)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        self._stop_requested = False
        self._stop_time = 0.0
        self._last_lr: float | None = None  # the rate of the last step (applied_lr)
        self._finetune_done = False  # asgd finetune: the non-monotone test fired at this epoch end
        self.history: list[dict[str, Any]] = []
        # (step, result) of the last validation, and of the one the best checkpoint was saved
        # after: the final evaluation does not score the same weights on valid again
        self._last_validation: tuple[int, EvalResult] | None = None
        self._best_validation: tuple[int, EvalResult] | None = None

        resume_ckpt = ck.load_resume_checkpoint(self.run_dir, resume_from) if resume else None
        saved_vocab = resume_ckpt.meta.get("vocab") if resume_ckpt else None
        vocab = Vocab.from_dict(saved_vocab) if saved_vocab else None
        source = None
        if config.train.init_from is not None and resume_ckpt is None:
            config, source = init_from.apply_source(config)
            self.config = config
        if data is None:  # a resumed run reads its own files in the encoding it recorded
            policy = "recorded" if resume else "given"
            if source is not None and source.vocab is not None:
                vocab_for = init_from.vocab_policy(source, config)
                data = load_data(config.data, vocab_for=vocab_for, policy=policy)
            else:
                data = load_data(config.data, vocab=vocab, policy=policy)
            config = self.config = _recording_encoding(config, data)
        elif source is not None:
            init_from.check_data(source, data)
        self.data = data
        self.task: Task = make_task(self.data, config, self.device, self.dist)
        if resume_ckpt:
            self.task.check_resume(resume_ckpt.meta)

        torch.manual_seed(config.train.seed)
        self.model_config = self.task.model_config(config.model)
        processes = self.dist.local_world_size if self.dist and self.device.type == "cpu" else 1
        check_memory(
            self.model_config, config, self.device, processes=processes, ddp=self.dist is not None
        )
        self.model = build_model(self.model_config)
        if source is not None:
            init_from.load_source_weights(self.model, source)
            source = None  # its weights are copied: free them
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model.parameters(), config.optim)
        self.weight_noise = WeightNoise(self.model, config.optim.weight_noise)
        self.averager = Averager(self.model)
        if self.dist is not None and self.dist.rank > 0:
            # Each rank draws its own dropout masks; rank 0 keeps the single-process stream.
            torch.manual_seed(_rank_seed(config.train.seed, self.dist.rank))
        self.progress = Progress(lr=config.optim.lr)
        self.state: State | None = None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        else:
            if config.optim.asgd == "finetune":  # averaging from the first step
                self.progress.asgd_step = 0
                self.averager.start()
            if self.is_main:
                ck.write_json_atomic(self.run_dir / ck.RUN_CONFIG, config.to_dict())
        if self.dist is not None:
            where = f"checkpoint of {self.run_dir} (use a directory all machines share)"
            distributed.check_same(self.dist, self.progress.step, where)
        if self.is_main and self.run_dir.is_dir():
            remove_stale_temp_files(self.run_dir)
            if resume:  # rows logged after the checkpoint will be logged again
                trim_metrics(self.run_dir / METRICS, self.progress.step)
        # what the training step calls: the model itself, or its DDP wrapper
        self.net = self.model if self.dist is None else distributed.wrap(self.model, self.dist)

    # ----------------------------------------------------------------------------- checkpoints
    def _checkpoint(self) -> ck.Checkpoint:
        """The checkpoint of this moment; every rank takes part (states are gathered)."""
        optim_meta, optim_tensors = ck.optimizer_to_checkpoint(self.optimizer.state_dict())
        tensors = self._model_tensors()
        tensors.update(optim_tensors)
        tensors.update(ck.rng_to_checkpoint())
        tensors.update(self._rank_rng_states())
        if self.state is not None:
            parts = self.state if isinstance(self.state, tuple) else (self.state,)
            if self.dist is not None:  # (layers, B / W, H) per rank -> (layers, B, H)
                parts = tuple(distributed.gather_columns(self.dist, s) for s in parts)
            tensors.update({f"state.{i}": s for i, s in enumerate(parts)})
        meta = {
            "run": self.config.to_dict(),
            "model": self.model_config.to_dict(),
            **self.task.meta(),  # vocab, level, corpus
            "optimizer": optim_meta,
            "progress": asdict(self.progress),
            "world_size": self.world_size,
            "saved_at": time.time(),
        }
        return ck.Checkpoint(meta=meta, tensors=tensors)

    def _model_tensors(self) -> dict[str, Tensor]:
        """``model.*``: the weights, or while NT-ASGD averages, the averaged weights (what
        evaluation and inference use) and the iterates training continues from (``asgd.raw.*``)."""
        if not self.averager.active:
            return {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors = {f"asgd.raw.{k}": v for k, v in self.averager.raw_weights().items()}
        copies: dict[int, Tensor] = {}  # tied weights stay one tensor
        with self.averager.averaged():
            for k, v in self.model.state_dict().items():
                tensors[f"model.{k}"] = copies.setdefault(v.data_ptr(), v.detach().clone())
        return tensors

    def _rank_rng_states(self) -> dict[str, Tensor]:
        """RNG states of ranks 1.. (``rng.rank<r>.cpu`` / ``.cuda``); rank 0's are ``rng.cpu``."""
        if self.dist is None:
            return {}
        out = {}
        for r, s in enumerate(distributed.gather_tensors(self.dist, torch.get_rng_state())):
            out[f"rng.rank{r}.cpu"] = s
        if self.device.type == "cuda":
            states = distributed.gather_tensors(self.dist, torch.cuda.get_rng_state(self.device))
            for r, s in enumerate(states):
                out[f"rng.rank{r}.cuda"] = s
        return {k: v for k, v in out.items() if not k.startswith("rng.rank0.")}

    def save(self, best: bool = False) -> None:
        """Write ``last`` (and ``best``) checkpoints; every rank takes part, rank 0 writes.

        ``best`` is written first: a crash between the two files leaves a ``last`` older than
        ``best``, and resuming from it rewrites the same ``best``. Weights that are no longer
        finite are never saved: the run stops as diverged and the last good checkpoint stays.
        """
        params = list(self.model.parameters())
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            self._diverged("the weights are no longer finite", self.progress.step)
        ckpt = self._checkpoint()
        if not self.is_main:
            return
        if best:
            ck.save_checkpoint(self.run_dir / ck.BEST, ckpt)
            last = self._last_validation
            self._best_validation = last if last and last[0] == self.progress.step else None
        ck.save_checkpoint(self.run_dir / ck.LAST, ckpt)

    def _restore(self, ckpt: ck.Checkpoint) -> None:
        load_model_weights(self.model, ckpt)
        self.optimizer.load_state_dict(ck.optimizer_from_checkpoint(ckpt))
        self.progress = Progress(**ckpt.meta["progress"])
        if self.progress.asgd_step is not None:  # model.* is the average: the iterates beside it
            raw = ckpt.group("asgd.raw")
            self.averager.restore(self.progress.step - self.progress.asgd_step, raw)
        ck.rng_from_checkpoint(ckpt)
        if self.dist is not None and self.dist.rank > 0:
            rng = ckpt.group("rng")
            own = f"rank{self.dist.rank}"
            if f"{own}.cpu" in rng:  # saved by a run with at least as many ranks
                torch.set_rng_state(rng[f"{own}.cpu"])
                if self.device.type == "cuda" and f"{own}.cuda" in rng:
                    torch.cuda.set_rng_state(rng[f"{own}.cuda"], self.device)
            else:  # another world size: fresh masks for this rank, the same on every rerun
                seed = _rank_seed(self.config.train.seed, self.dist.rank) + self.progress.step
                torch.manual_seed(seed)
        parts = [v for _, v in sorted(ckpt.group("state").items())]  # each (layers, B, H)
        if self.dist is not None:
            parts = [distributed.own_columns(s, self.dist.rank, self.world_size) for s in parts]
        parts = [s.to(self.device) for s in parts]
        if parts:
            self.state = tuple(parts) if len(parts) > 1 else parts[0]
        log.info("resumed at epoch %d, window %d", self.progress.epoch + 1, self.progress.window)

    # ----------------------------------------------------------------------------- the loop
    def _log(self, row: dict[str, Any]) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.history.append(row)
        if not self.is_main:
            return
        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.on_log is not None:
            self.on_log(row)

    def request_stop(self) -> None:
        """Stop at the end of the current step, save and evaluate, as the first Ctrl-C does (a
        second request before the run ends stops at once, with KeyboardInterrupt)."""
        self._request_stop(signal.SIGINT, None)

    def _request_stop(self, signum: int, frame: Any) -> None:
        """The SIGINT handler while :meth:`fit` runs (see :meth:`request_stop`)."""
        now = time.monotonic()
        # torchrun passes the terminal's Ctrl-C on to processes that already got it: under
        # torchrun a repeat within SIGNAL_ECHO_S seconds is that echo, not a second Ctrl-C.
        echo = self.dist is not None and now - self._stop_time < SIGNAL_ECHO_S
        if self._stop_requested and not echo:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        if not self._stop_requested:
            self._stop_time = now
        self._stop_requested = True

    def _steps_done(self) -> bool:
        t = self.config.train
        return t.max_steps is not None and self.progress.step >= t.max_steps

    def _seconds_spent(self, now: float | None = None) -> float:
        """Seconds of training so far, summed over sessions, on this rank's clock (at ``now``,
        a ``time.perf_counter()`` reading, or at the present)."""
        started, elapsed0 = self._clock
        return elapsed0 + (time.perf_counter() if now is None else now) - started

    def _time_up(self) -> bool:
        """Whether ``--max-minutes`` is spent (this rank's clock)."""
        minutes = self._seconds_spent() / 60
        return (
            self.config.train.max_minutes is not None and minutes >= self.config.train.max_minutes
        )

    def _out_of_budget(self) -> bool:
        if self._steps_done():
            return True
        time_up = self._time_up()
        if self.dist is not None:
            time_up = distributed.agree(self.dist, (), (time_up,))[1][0]
        return time_up

    def _agree(self, loss: float) -> tuple[float, bool, bool]:
        """The combined batch's loss, and whether to stop now (Ctrl-C) or for time, as every
        rank sees them: one all-reduce per step under DDP."""
        time_up = self._time_up()
        if self.dist is None:
            return loss, self._stop_requested, time_up
        (loss, self._shared_seconds), (stop, time_up) = distributed.agree(
            self.dist, (loss, self._seconds_spent()), (self._stop_requested, time_up)
        )
        self._stop_requested = self._stop_requested or stop
        return loss, stop, time_up

    def fit(self) -> TrainResult:
        """Train until the epochs, steps or minutes run out (or early stopping); then evaluate."""
        old_handler = None
        if hasattr(signal, "SIGINT") and _in_main_thread():
            old_handler = signal.signal(signal.SIGINT, self._request_stop)
        try:
            if not self.progress.done:
                self._train_loop()
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        return self._final_evaluation()

    def close(self) -> None:
        """End a distributed run: release the DDP wrapper and leave the process group (if this
        trainer joined it). The model stays usable; a single-process trainer does nothing."""
        if self.dist is None:
            return
        self.net = self.model
        if self.dist.owns_group:
            distributed.shutdown()

    def _train_loop(self) -> None:
        """Epochs until the epochs or a budget run out, or early stopping; then the record."""
        cfg, p = self.config, self.progress
        threshold = self.task.explosion_threshold()
        self._clock = (time.perf_counter(), p.elapsed)
        while p.epoch < cfg.train.epochs and not self._out_of_budget():
            n_windows = self.task.num_windows(p.epoch)
            self._train_epoch(n_windows, threshold)
            p.elapsed = self._seconds_spent()
            epoch_done = p.window >= n_windows
            if not epoch_done:  # a step or time budget ended the run inside an epoch
                break
            if self._end_of_epoch():
                break
        p.elapsed = self._seconds_spent()
        p.done = p.done or p.epoch >= cfg.train.epochs
        # A budget that ends the run inside an epoch: validate for the record and the best
        # checkpoint, without touching the schedule's memory (a resumed run must match).
        improved = self._validate_if_needed(schedule=False)
        self.save(best=improved)

    def _train_epoch(self, n_windows: int, threshold: float) -> None:
        """The current epoch's windows from ``progress.window`` on, until the epoch ends, a
        step or time budget is spent, or Ctrl-C (save, then exit 130); a loss above
        ``threshold`` (or not finite) stops the run as diverged."""
        cfg, p = self.config, self.progress
        bar = self._progress_bar(n_windows, p.window)
        self.net.train()
        meter = _Meter(mark=time.perf_counter())
        for w in self.task.windows(p.epoch, start=p.window):
            loss, norm = self._step(w)
            loss_value, stop, time_up = self._agree(loss)
            if not math.isfinite(loss_value) or loss_value > threshold:
                self._diverged(f"loss {loss_value}", p.step + 1)
            tokens = w.count * self.world_size  # the combined batch's
            p.window = w.index + 1
            p.step += 1
            p.tokens += tokens
            meter.add(tokens, loss_value, norm)
            if bar is not None:
                bar.update(1)
            if p.step % cfg.train.log_every == 0 or stop:
                self._log_training(meter, bar)
            every = cfg.train.eval_every
            if every and p.step % every == 0 and p.window < n_windows:
                meter.mark += self._validate_for_the_curve()  # tokens/s counts training only
            if cfg.train.save_every and p.step % cfg.train.save_every == 0:
                p.elapsed = self._seconds_spent()
                self.save()
            if stop:
                p.elapsed = self._seconds_spent()
                self.save()
                if bar is not None:
                    bar.close()
                raise RnnlabError(
                    f"interrupted; checkpoint saved in {self.run_dir}, continue with "
                    f"rnnlab train --resume {self.run_dir}",
                    exit_code=130,
                )
            if self._steps_done() or time_up:
                break
        if bar is not None:
            bar.close()

    def _log_training(self, meter: _Meter, bar: Any) -> None:
        """Log the training since the last row (one ``kind: train`` row of metrics.jsonl, the
        progress bar's figures) and start the next."""
        p = self.progress
        now = time.perf_counter()
        p.elapsed = self._seconds_spent(now)
        mean = meter.loss / max(meter.count, 1)
        row = {
            "kind": "train",
            "step": p.step,
            "epoch": p.epoch + 1,
            "train_loss": mean,
            **self.task.train_metrics(mean),
            "tokens_per_s": meter.tokens / max(now - meter.mark, 1e-9),
            "grad_norm": meter.norm,
            "lr": self.applied_lr(),
            "tokens": p.tokens,
            "wall_time": p.elapsed,
        }
        self._log(row)
        if bar is not None:
            shown = {"ppl": f"{row['train_ppl']:.1f}"} if "train_ppl" in row else {}
            bar.set_postfix(loss=f"{mean:.3f}", **shown, tok_s=f"{row['tokens_per_s']:.0f}")
        meter.reset(now)

    def _validate_for_the_curve(self) -> float:
        """A log-only validation inside an epoch (``eval_every``, for learning curves): the
        schedule's memory (best_valid, bad_epochs) is untouched, the best checkpoint may
        improve. Returns the seconds it took."""
        tick = time.perf_counter()
        self.progress.elapsed = self._seconds_spent(tick)
        if self._validate_if_needed(schedule=False):
            self.save(best=True)
        return time.perf_counter() - tick

    def _step(self, w: Batch) -> tuple[float, float]:
        """One window: forward, backward (DDP averages the gradients), clip, update.

        Returns this rank's loss (the mean over its tokens or time steps) and the global
        gradient norm. With weight noise the gradient is taken at the noisy weights and applied
        to the clean ones.
        """
        cfg = self.config
        self.state = None if w.reset else detach_state(self.state)
        self.weight_noise.add()
        objective, loss, self.state = self.task.forward_objective(self.net, w, self.state)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.weight_noise.remove()
        norm = 0.0
        if cfg.optim.clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip))
        factor = self._schedule_factor()
        self._last_lr = self.progress.lr * factor
        scale = self.task.lr_scale(w) * factor
        for group in self.optimizer.param_groups:
            group["lr"] = self.progress.lr * scale
        self.optimizer.step()
        self.averager.update()
        return loss.item(), norm

    def applied_lr(self) -> float:
        """The learning rate of the last optimizer step, what metrics rows log: the base rate
        (after decay and plateau cuts) times the cosine schedule's factor at that step (a
        variable-length window further scales its own step by its length / bptt). Before the
        first step of a session, the rate the next step would get."""
        if self._last_lr is not None:
            return self._last_lr
        return self.progress.lr * self._schedule_factor()

    def _schedule_factor(self) -> float:
        """The cosine schedule's factor at the fraction of the budget spent (else 1)."""
        cfg, p = self.config, self.progress
        if cfg.optim.schedule != "cosine":
            return 1.0
        t = cfg.train
        n_windows = max(self.task.num_windows(p.epoch), 1)
        spent = [(p.epoch + p.window / n_windows) / t.epochs]
        if t.max_steps:
            spent.append(p.step / t.max_steps)
        if t.max_minutes:
            # under DDP every rank reads the clock the ranks agreed on at the last step, so
            # their rates stay equal (each rank's own clock drifts from the others')
            seconds = self._seconds_spent() if self.dist is None else self._shared_seconds
            if seconds is None:
                seconds = self.progress.elapsed
            spent.append(seconds / (60 * t.max_minutes))
        return 0.5 * (1.0 + math.cos(math.pi * min(max(spent), 1.0)))

    def _diverged(self, why: str, step: int) -> None:
        where = self.run_dir / ck.LAST
        kept = (
            f"the last good checkpoint is kept in {where}"
            if where.exists()
            else "no checkpoint was written yet"
        )
        raise TrainingDiverged(
            f"training diverged at step {step} ({why}); {kept}; lower --lr or set --clip"
        )

    def _validate(self) -> EvalResult:
        """Exact validation loss; under DDP every rank evaluates and rank 0's figure counts."""
        with self.averager.averaged():  # NT-ASGD: the averaged weights are the model
            result = self.task.evaluate(self.model, "valid", progress=self.show_progress)
        self._last_validation = (self.progress.step, result)
        return result

    def _end_of_epoch(self) -> bool:
        """Validate, schedule, checkpoint; True when early stopping ends the run."""
        cfg, p = self.config, self.progress
        bad_before = p.bad_epochs
        improved = self._validate_if_needed()
        epoch_just_done = p.epoch + 1
        if cfg.optim.schedule == "decay" and epoch_just_done >= cfg.optim.decay_start:
            p.lr *= cfg.optim.decay_factor
        elif cfg.optim.schedule == "plateau" and p.bad_epochs > bad_before:
            p.lr *= cfg.optim.plateau_factor
        p.epoch += 1
        p.window = 0
        self.state = None
        stop = cfg.train.patience is not None and p.bad_epochs >= cfg.train.patience
        stop = stop or self._finetune_done
        if stop:
            p.done = True
        self.save(best=improved)
        return stop

    def _validate_if_needed(self, schedule: bool = True) -> bool:
        """Validate unless this position was already validated; True if the best checkpoint
        improves.

        With ``schedule`` the result also feeds the schedule and early stopping (epoch ends only).
        """
        p = self.progress
        if p.validated_step == p.step:
            return False
        result = self._validate()
        p.validated_step = p.step
        if schedule:
            if result.loss < p.best_valid:
                p.best_valid = result.loss
                p.bad_epochs = 0
            else:
                p.bad_epochs += 1
            self._nt_asgd_check(result.loss)
        improved = result.loss < p.best_saved
        if improved:
            p.best_saved = result.loss
        n_windows = self.task.num_windows(p.epoch)
        row = {
            "kind": "valid",
            "step": p.step,
            "epoch": p.epoch + 1,
            "epochs": p.epoch + min(p.window, n_windows) / max(n_windows, 1),  # fractional
            **self.task.eval_metrics("valid", result),
            "lr": self.applied_lr(),
            "tokens": p.tokens,
            "wall_time": p.elapsed,
        }
        self._log(row)
        if self.is_main:
            log.info("epoch %d: valid %s", p.epoch + 1, self.task.describe_eval(result))
        return improved

    def _nt_asgd_check(self, loss: float) -> None:
        """At an epoch-end check: NT-ASGD's switch to averaging (``asgd`` nt), or the end of
        an averaged fine-tuning run (``asgd`` finetune), when :func:`nonmono_trigger` fires."""
        o, p = self.config.optim, self.progress
        if o.asgd == "off":
            return
        fired = nonmono_trigger(p.valid_losses, loss, o.nonmono)
        p.valid_losses.append(loss)
        if fired and o.asgd == "nt" and p.asgd_step is None:
            p.asgd_step = p.step
            self.averager.start()
            if self.is_main:
                log.info("NT-ASGD: averaging the weights from step %d on", p.step)
        elif fired and o.asgd == "finetune":
            self._finetune_done = True
            if self.is_main:
                log.info("fine-tuning done: no improvement over the last %d checks", o.nonmono)

    def _final_evaluation(self) -> TrainResult:
        """Evaluate the best checkpoint on valid and test; write ``results.json`` (rank 0)."""
        if not self.is_main:
            return TrainResult(self.run_dir, self.progress, None, None, self.history)
        best = self.run_dir / ck.BEST
        valid = None
        if best.is_file():
            ckpt = ck.load_checkpoint(best)
            load_model_weights(self.model, ckpt)
            seen = self._best_validation
            if seen is not None and seen[0] == ck.checkpoint_step(ckpt):
                valid = seen[1]  # these weights were validated in this session: same figure
        show = self.show_progress
        if valid is None:
            valid = self.task.evaluate(self.model, "valid", sync=False, progress=show)  # rank 0
        test = self.task.evaluate(self.model, "test", sync=False, progress=show)
        results = {
            "valid": valid.to_dict(),
            "test": test.to_dict(),
            "steps": self.progress.step,
            "epochs": self.progress.epoch,
            "tokens": self.progress.tokens,
            "wall_time": self.progress.elapsed,
            "parameters": self.model.num_parameters(),
            "world_size": self.world_size,
        }
        ck.write_json_atomic(self.run_dir / "results.json", results)
        return TrainResult(self.run_dir, self.progress, valid, test, self.history)

    def _progress_bar(self, total: int, initial: int) -> Any:
        if not self.show_progress:
            return None
        from tqdm.auto import tqdm

        t, epoch = self.config.train, self.progress.epoch + 1
        if t.max_minutes is not None:  # the budget that ends the run, not a far epoch cap
            desc = f"epoch {epoch} of a {t.max_minutes:g}-minute budget"
        elif t.max_steps is not None:
            desc = f"epoch {epoch} of a {t.max_steps:,}-step budget"
        else:
            desc = f"epoch {epoch}/{t.epochs}"
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="win",
            dynamic_ncols=True,
            leave=False,
        )


MAX_THREADS_PER_CPU = 4  # more intra-op threads than this per CPU is refused as absurd
SIGNAL_ECHO_S = 1.0  # under torchrun, a repeated SIGINT within this many seconds is an echo


def _rank_seed(seed: int, rank: int) -> int:
    """The dropout seed of rank ``rank`` > 0 (rank 0 uses ``seed`` itself)."""
    return (seed + 1_000_003 * rank) % 2**63


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
