"""The trainer: truncated BPTT with clipping, schedules, early stopping, checkpoints and resume.

One loop serves ``train``, ``--resume``, fine-tuning and the comparison grid. Per step::

    state <- detach_state(state)              # the window boundary: cut the graph, keep the values
    logits, state <- model(inputs, state)     # (L, B, V)
    loss <- cross_entropy(logits, targets)    # mean over the L*B tokens
    backward; clip ||g|| to ``clip``; optimizer step (lr scaled by L/bptt for variable windows)

The trainer knows nothing of which cell it trains. Everything that decides the next step (weights,
optimizer, learning rate, best score, the carried hidden state, RNG states, the epoch and the window
within it) goes into the checkpoint, so a resumed run continues bit for bit.
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab import checkpoint as ck
from rnnlab import distributed
from rnnlab.batching import batchify, check_enough, column_slice, iter_windows, window_lengths
from rnnlab.dataset import DataConfig, LMData, load_data
from rnnlab.errors import ConfigError, DataError, RnnlabError, TrainingDiverged
from rnnlab.evaluate import EvalResult, evaluate
from rnnlab.model import LanguageModel, LanguageModelConfig, State, detach_state, perplexity
from rnnlab.vocab import Vocab

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "decay", "plateau")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Schedules: ``constant``; ``decay`` multiplies the rate by ``decay_factor`` after every epoch
    from epoch ``decay_start`` on (Zaremba et al. 2014); ``plateau`` multiplies it by
    ``plateau_factor`` whenever the validation loss does not improve (the PyTorch
    word-language-model example divides by 4).
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

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if not self.clip >= 0:  # NaN too
            raise ConfigError(f"clip must be >= 0 (0 turns clipping off), got {self.clip}")
        for name in ("momentum", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("decay_factor", "plateau_factor"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    """The loop: window, batch, length of training, seed, saving and logging."""

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

    def __post_init__(self) -> None:
        for name in ("bptt", "batch_size", "eval_batch_size", "epochs", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("max_steps", "save_every", "eval_every", "patience", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max-minutes must be positive, got {self.max_minutes}")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``run.json`` and inside every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        def build(kind: type, values: dict[str, Any]) -> Any:
            known = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in values.items() if k in known})

        return cls(
            data=build(DataConfig, d.get("data", {})),
            model=build(LanguageModelConfig, d.get("model", {})),
            optim=build(OptimConfig, d.get("optim", {})),
            train=build(TrainConfig, d.get("train", {})),
            preset=d.get("preset"),
        )


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
    done: bool = False


@dataclass
class TrainResult:
    run_dir: Path
    progress: Progress
    valid: EvalResult | None
    test: EvalResult | None
    history: list[dict[str, Any]]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def explosion_threshold(vocab_size: int) -> float:
    """A loss this far above a uniform guess (ln V nats) means the run has blown up."""
    return 3.0 * math.log(vocab_size) + 10.0


class Trainer:
    """Trains a :class:`LanguageModel` as ``config`` says and keeps ``run_dir`` up to date.

    Args:
        config: the run config.
        run_dir: where ``run.json``, ``last.safetensors``, ``best.safetensors``,
            ``metrics.jsonl`` and ``results.json`` go.
        resume: continue from ``run_dir/last.safetensors`` (or start over from ``run.json`` if
            the run died before its first checkpoint).
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
        progress: bool = False,
        data: LMData | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.show_progress = progress
        self.on_log = on_log
        self.device = pick_device(config.train.device)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        self._stop_requested = False
        self.history: list[dict[str, Any]] = []

        resume_ckpt = None
        if resume and (self.run_dir / ck.LAST).is_file():
            resume_ckpt = ck.load_checkpoint(self.run_dir / ck.LAST)
        vocab = Vocab.from_dict(resume_ckpt.meta["vocab"]) if resume_ckpt else None
        self.data = data if data is not None else load_data(config.data, vocab=vocab)
        if resume_ckpt and len(self.data.vocab) != resume_ckpt.meta["model"]["vocab_size"]:
            raise RnnlabError("the resumed run's vocabulary does not match its data")

        torch.manual_seed(config.train.seed)
        self.model_config = LanguageModelConfig.from_dict(
            dict(config.model.to_dict(), vocab_size=len(self.data.vocab))
        )
        self.model = LanguageModel(self.model_config).to(self.device)
        self.optimizer = make_optimizer(self.model.parameters(), config.optim)
        check_enough(len(self.data.train), config.train.batch_size, config.train.bptt)
        self.train_data = batchify(self.data.train, config.train.batch_size).to(self.device)
        self.progress = Progress(lr=config.optim.lr)
        self.state: State | None = None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        else:
            ck.write_json_atomic(self.run_dir / ck.RUN_CONFIG, config.to_dict())

    # ----------------------------------------------------------------------------- checkpoints
    def _checkpoint(self) -> ck.Checkpoint:
        optim_meta, optim_tensors = ck.optimizer_to_checkpoint(self.optimizer.state_dict())
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(optim_tensors)
        tensors.update(ck.rng_to_checkpoint())
        if self.state is not None:
            parts = self.state if isinstance(self.state, tuple) else (self.state,)
            tensors.update({f"state.{i}": s for i, s in enumerate(parts)})
        meta = {
            "run": self.config.to_dict(),
            "model": self.model_config.to_dict(),
            "vocab": self.data.vocab.to_dict(),
            "level": self.data.level,
            "corpus": self.data.name,
            "optimizer": optim_meta,
            "progress": asdict(self.progress),
            "saved_at": time.time(),
        }
        return ck.Checkpoint(meta=meta, tensors=tensors)

    def save(self, best: bool = False) -> None:
        ckpt = self._checkpoint()
        ck.save_checkpoint(self.run_dir / ck.LAST, ckpt)
        if best:
            ck.save_checkpoint(self.run_dir / ck.BEST, ckpt)

    def _restore(self, ckpt: ck.Checkpoint) -> None:
        load_model_weights(self.model, ckpt)
        self.optimizer.load_state_dict(ck.optimizer_from_checkpoint(ckpt))
        self.progress = Progress(**ckpt.meta["progress"])
        ck.rng_from_checkpoint(ckpt)
        parts = [v.to(self.device) for _, v in sorted(ckpt.group("state").items())]
        if parts:
            self.state = tuple(parts) if len(parts) > 1 else parts[0]
        log.info("resumed at epoch %d, window %d", self.progress.epoch + 1, self.progress.window)

    # ----------------------------------------------------------------------------- the loop
    def _log(self, row: dict[str, Any]) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.history.append(row)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.on_log is not None:
            self.on_log(row)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True

    def _out_of_budget(self, started: float, elapsed0: float) -> bool:
        t = self.config.train
        if t.max_steps is not None and self.progress.step >= t.max_steps:
            return True
        minutes = (elapsed0 + time.perf_counter() - started) / 60
        return t.max_minutes is not None and minutes >= t.max_minutes

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

    def _train_loop(self) -> None:
        cfg, p = self.config, self.progress
        n_rows = self.train_data.size(0)
        vocab_size = len(self.data.vocab)
        started, elapsed0 = time.perf_counter(), p.elapsed
        bar = None
        while p.epoch < cfg.train.epochs and not self._out_of_budget(started, elapsed0):
            lengths = window_lengths(
                n_rows, cfg.train.bptt, variable=cfg.train.variable_bptt, seed=cfg.train.seed, epoch=p.epoch
            )
            if p.window == 0:
                self.state = None
            bar = self._progress_bar(len(lengths), p.window)
            self.model.train()
            window_tokens, window_loss, window_count, last_norm = 0, 0.0, 0, 0.0
            mark = time.perf_counter()
            for w in iter_windows(self.train_data, lengths, start=p.window):
                loss, norm = self._step(w.inputs, w.targets, w.length)
                loss_value = loss
                if not math.isfinite(loss_value) or loss_value > explosion_threshold(vocab_size):
                    self._diverged(loss_value)
                p.window = w.index + 1
                p.step += 1
                p.tokens += w.inputs.numel()
                window_tokens += w.inputs.numel()
                window_loss += loss_value
                window_count += 1
                last_norm = norm
                if bar is not None:
                    bar.update(1)
                if p.step % cfg.train.log_every == 0 or self._stop_requested:
                    now = time.perf_counter()
                    p.elapsed = elapsed0 + now - started
                    mean = window_loss / max(window_count, 1)
                    row = {
                        "kind": "train",
                        "step": p.step,
                        "epoch": p.epoch + 1,
                        "train_loss": mean,
                        "train_ppl": perplexity(mean),
                        "tokens_per_s": window_tokens / max(now - mark, 1e-9),
                        "grad_norm": last_norm,
                        "lr": p.lr,
                        "tokens": p.tokens,
                        "wall_time": p.elapsed,
                    }
                    self._log(row)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{mean:.3f}", ppl=f"{row['train_ppl']:.1f}", tok_s=f"{row['tokens_per_s']:.0f}"
                        )
                    window_tokens, window_loss, window_count, mark = 0, 0.0, 0, now
                every = cfg.train.eval_every
                if every and p.step % every == 0 and p.window < len(lengths):
                    # Log-only validation for learning curves (the epoch end validates anyway):
                    # the schedule's memory (best_valid, bad_epochs) is untouched; the best
                    # checkpoint may improve.
                    tick = time.perf_counter()
                    p.elapsed = elapsed0 + tick - started
                    if self._validate_if_needed(schedule=False):
                        self.save(best=True)
                    mark += time.perf_counter() - tick  # tokens/s counts training time only
                if cfg.train.save_every and p.step % cfg.train.save_every == 0:
                    p.elapsed = elapsed0 + time.perf_counter() - started
                    self.save()
                if self._stop_requested:
                    p.elapsed = elapsed0 + time.perf_counter() - started
                    self.save()
                    if bar is not None:
                        bar.close()
                    raise RnnlabError(
                        f"interrupted; checkpoint saved in {self.run_dir}, continue with "
                        f"rnnlab train --resume {self.run_dir}",
                        exit_code=130,
                    )
                if self._out_of_budget(started, elapsed0):
                    break
            if bar is not None:
                bar.close()
                bar = None
            p.elapsed = elapsed0 + time.perf_counter() - started
            epoch_done = p.window >= len(lengths)
            if not epoch_done:  # a step or time budget ended the run inside an epoch
                break
            if self._end_of_epoch():
                break
        p.elapsed = elapsed0 + time.perf_counter() - started
        p.done = p.done or p.epoch >= cfg.train.epochs
        # A budget that ends the run inside an epoch: validate for the record and the best
        # checkpoint, without touching the schedule's memory (a resumed run must match).
        improved = self._validate_if_needed(schedule=False)
        self.save(best=improved)

    def _step(self, inputs: Tensor, targets: Tensor, length: int) -> tuple[float, float]:
        cfg = self.config
        self.state = detach_state(self.state)
        logits, self.state = self.model(inputs, self.state)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = 0.0
        if cfg.optim.clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip))
        scale = length / cfg.train.bptt if cfg.train.variable_bptt else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.progress.lr * scale
        self.optimizer.step()
        return loss.item(), norm

    def _diverged(self, loss: float) -> None:
        where = self.run_dir / ck.LAST
        kept = f"the last good checkpoint is kept in {where}" if where.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"training diverged at step {self.progress.step + 1} (loss {loss}); {kept}; "
            "lower --lr or set --clip"
        )

    def _validate(self) -> EvalResult:
        t = self.config.train
        return evaluate(
            self.model, self.data.valid, batch_size=t.eval_batch_size, bptt=max(t.bptt, 50), level=self.data.level
        )

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
        if stop:
            p.done = True
        self.save(best=improved)
        return stop

    def _validate_if_needed(self, schedule: bool = True) -> bool:
        """Validate unless this position was already validated; True if the best checkpoint improves.

        With ``schedule`` the result also feeds the schedule and early stopping (epoch ends only).
        """
        p = self.progress
        if self.history and self.history[-1].get("kind") == "valid" and self.history[-1]["step"] == p.step:
            return False
        result = self._validate()
        if schedule:
            if result.loss < p.best_valid:
                p.best_valid = result.loss
                p.bad_epochs = 0
            else:
                p.bad_epochs += 1
        improved = result.loss < p.best_saved
        if improved:
            p.best_saved = result.loss
        row = {
            "kind": "valid",
            "step": p.step,
            "epoch": p.epoch + 1,
            "valid_loss": result.loss,
            "valid_ppl": result.perplexity,
            "lr": p.lr,
            "tokens": p.tokens,
            "wall_time": p.elapsed,
        }
        if result.bpc is not None:
            row["valid_bpc"] = result.bpc
        self._log(row)
        log.info("epoch %d: valid loss %.4f, perplexity %.2f", p.epoch + 1, result.loss, result.perplexity)
        return improved

    def _final_evaluation(self) -> TrainResult:
        """Evaluate the best checkpoint on valid and test; write ``results.json``."""
        best = self.run_dir / ck.BEST
        if best.is_file():
            load_model_weights(self.model, ck.load_checkpoint(best))
        t = self.config.train
        kwargs = {"batch_size": t.eval_batch_size, "bptt": max(t.bptt, 50), "level": self.data.level}
        valid = evaluate(self.model, self.data.valid, **kwargs)
        test = evaluate(self.model, self.data.test, **kwargs)
        results = {
            "valid": valid.to_dict(),
            "test": test.to_dict(),
            "steps": self.progress.step,
            "epochs": self.progress.epoch,
            "tokens": self.progress.tokens,
            "wall_time": self.progress.elapsed,
            "parameters": self.model.num_parameters(),
        }
        ck.write_json_atomic(self.run_dir / "results.json", results)
        return TrainResult(self.run_dir, self.progress, valid, test, self.history)

    def _progress_bar(self, total: int, initial: int) -> Any:
        if not self.show_progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {self.progress.epoch + 1}/{self.config.train.epochs}",
            unit="win",
            dynamic_ncols=True,
            leave=False,
        )


def load_model_weights(model: LanguageModel, ckpt: ck.Checkpoint) -> None:
    """Copy a checkpoint's weights into ``model``, refusing shapes that disagree."""
    weights = ckpt.group("model")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ck.CheckpointError(f"checkpoint lacks weights {', '.join(missing[:3])}; it does not fit this model")
    for name, t in expected.items():
        if tuple(weights[name].shape) != tuple(t.shape):
            raise ck.CheckpointError(
                f"checkpoint tensor {name} has shape {tuple(weights[name].shape)} but its config "
                f"implies {tuple(t.shape)}; the checkpoint is inconsistent"
            )
    model.load_state_dict({k: weights[k] for k in expected})


def load_model(path: str | Path, device: str = "cpu") -> tuple[LanguageModel, Vocab, ck.Checkpoint]:
    """The model and vocabulary of a checkpoint (a run directory or a file), ready for inference."""
    ckpt = ck.load_checkpoint(path)
    try:
        config = LanguageModelConfig.from_dict(ckpt.meta["model"])
        vocab = Vocab.from_dict(ckpt.meta["vocab"])
        if ckpt.meta["level"] not in ("char", "word"):
            raise TypeError(f"level {ckpt.meta['level']!r}")
    except (KeyError, TypeError, RnnlabError) as e:
        raise ck.CheckpointError(f"checkpoint {path} has an invalid description ({e})") from None
    if len(vocab) != config.vocab_size:
        raise ck.CheckpointError(
            f"checkpoint {path} is inconsistent: vocabulary of {len(vocab)} but model of {config.vocab_size}"
        )
    model = LanguageModel(config)
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


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
