"""A trained run's language model as an ONNX file of one decoding step (``rnnlab export --onnx``).

The graph is :class:`StepGraph`: the embedding of one token per row, every layer's cell step
(the static ``step`` of :mod:`rnnlab.nn.cells`, the equations training runs) and the head's full
log-probabilities, for the layout :mod:`rnnlab.onnx_sampler` documents and reads::

    tokens (B,) int64, state (N, B, H)  ──>  log_probs (B, V), new_state (N, B, H)

Every cell of :mod:`rnnlab.nn.registry` exports (RNN tanh/relu, GRU with the reset after or
before U h, LSTM), with the full softmax (tied or not) and with the adaptive and tied adaptive
heads, whose full distribution (``log_prob``) is exported. Piano-roll runs have no tokens and
are refused. The file's metadata holds what a sampler needs: the vocabulary (JSON), the
tokenizer level and its special tokens, the context token read before a prime, the cell, the
sizes, the state layout and the rnnlab version.

Export uses torch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript) with a
dynamic batch dimension. Before the file replaces anything, it is loaded in onnxruntime and one
step on a probe batch is compared with the PyTorch model; the bytes go through
:func:`rnnlab.atomic.write_atomic`, so a failed export leaves no file and an old one untouched.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.atomic import write_atomic
from rnnlab.data.vocab import EOS, UNK, Vocab, boundary_token
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.registry import get_cell
from rnnlab.onnx_sampler import (
    EXTRA_HINT,
    FORMAT,
    INPUT_NAMES,
    OUTPUT_NAMES,
    STATE_LAYOUT,
    OnnxLanguageModel,
)
from rnnlab.runs.load import load_text_model

OPSET = 18
"""The ONNX opset written (onnxruntime 1.16 and later run it)."""
PROTO_LIMIT = 2**31 - 1
"""protobuf's limit on one serialized ONNX file: larger models are refused."""
TOLERANCE = 1e-4
"""Largest difference between onnxruntime and PyTorch on the probe step a file may show."""


class StepGraph(nn.Module):
    """One decoding step of a text model, in the flat state layout of :mod:`rnnlab.onnx_sampler`.

    ``forward(tokens (B,), state (N, B, H)) -> (log_probs (B, V), new_state (N, B, H))``, with
    N = layers x states per layer, rows ``h_0[, c_0], h_1[, c_1], ...``. Dropout plays no part.
    A layer narrower than H (``last_hidden_size``) reads and writes the first columns of its
    rows; the rest stay zero, as in the model's own state.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        config: LanguageModelConfig = model.config
        spec = get_cell(config.cell)
        self.model = model
        self.family = spec.family
        self.nonlinearity = spec.nonlinearity
        self.reset = spec.reset
        self.states = spec.states
        self.num_layers = config.num_layers
        self.width = config.state_size()
        self.head = config.head

    def forward(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        x = self.model.embedding(tokens)  # (B, D)
        new_state: list[Tensor] = []
        s = self.states
        for k, (rnn, j) in enumerate(self.model.recurrent_layers()):
            w_ih, w_hh, b_ih, b_hh = rnn.layer_weights(j)
            own = state[:, :, : rnn.hidden_size]  # (N, B, H_k): this layer's columns
            gi = nn.functional.linear(x, w_ih, b_ih)  # (B, G*H_k)
            if self.family == "lstm":
                h, c = LSTMCell.step(gi, (own[s * k], own[s * k + 1]), w_hh, b_hh)
                new_state += (h, c)
            elif self.family == "gru":
                h = GRUCell.step(gi, own[k], w_hh, b_hh, self.reset)
                new_state.append(h)
            else:
                h = RNNCell.step(gi, own[k], w_hh, b_hh, self.nonlinearity)
                new_state.append(h)
            x = h  # (B, H_k)
        scores = self.model.readout(x)  # (B, V): logits, or the adaptive head's log-probs
        log_probs = torch.log_softmax(scores, dim=-1) if self.head == "softmax" else scores
        padded = [nn.functional.pad(t, (0, self.width - t.size(-1))) for t in new_state]
        return log_probs, torch.stack(padded)  # (B, V), (N, B, H)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote: the file, its size and the model's facts."""

    path: Path
    bytes: int
    cell: str
    head: str
    stack: str
    vocab_size: int
    level: str
    max_difference: float

    def summary(self) -> str:
        """One line for the command line."""
        return (
            f"wrote {self.path} ({_size(self.bytes)}): {self.cell} {self.stack}, {self.head} "
            f"head, {self.level} vocabulary of {self.vocab_size}; "
            f"onnxruntime matches PyTorch to {self.max_difference:.1e}. Sample without PyTorch: "
            f"python -m rnnlab.onnx_sampler {self.path} --prime TEXT --length N"
        )


def export_onnx(run_dir: str | Path, path: str | Path) -> ExportResult:
    """Write the language model of ``run_dir`` (a run directory or checkpoint) to ``path`` as
    one ONNX step with the metadata of :mod:`rnnlab.onnx_sampler`; see the module docstring.

    Raises RnnlabError (one line) for a path that cannot be written, a missing ``onnx`` extra,
    anything ``rnnlab sample`` refuses (not a run, a corrupt checkpoint, a piano-roll model),
    and a model whose export fails or disagrees with PyTorch.
    """
    path = Path(path)
    _check_target(path)
    onnx = _require_exporter()
    model, vocab, ckpt = load_text_model(run_dir, "cpu", command="export")
    model = model.float().eval()
    config: LanguageModelConfig = model.config
    graph = StepGraph(model).eval()
    proto = _export(graph, config)
    meta = metadata_for(config, vocab, ckpt.meta["level"])
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = (
        f"rnnlab language model, one decoding step ({FORMAT}); {STATE_LAYOUT}; sample it with "
        "python -m rnnlab.onnx_sampler"
    )
    if proto.ByteSize() > PROTO_LIMIT:
        raise ConfigError(
            f"the model is {proto.ByteSize() / 2**30:.1f} GiB, over ONNX's 2 GiB single-file "
            "limit; rnnlab export writes single files only"
        )
    data = proto.SerializeToString()
    checked: list[float] = []

    def verify(tmp: Path) -> None:
        checked.append(_compare(graph, config, tmp))

    try:
        write_atomic(path, data, check=verify)
    except OSError as e:
        raise RnnlabError(
            f"cannot write {path}: {e.strerror or e}; choose a writable file path",
            exit_code=1,
        ) from None
    return ExportResult(
        path=path,
        bytes=len(data),
        cell=config.cell,
        head=("tied " if config.tie_weights else "") + config.head,
        stack=config.stack_text(),
        vocab_size=len(vocab),
        level=ckpt.meta["level"],
        max_difference=checked[0],
    )


def metadata_for(config: LanguageModelConfig, vocab: Vocab, level: str) -> dict[str, str]:
    """The metadata strings an exported file carries (:data:`rnnlab.onnx_sampler.REQUIRED_KEYS`)."""
    spec = get_cell(config.cell)
    names = [f"{kind}_{k}" for k in range(config.num_layers) for kind in ("h", "c")[: spec.states]]
    return {
        "format": FORMAT,
        "rnnlab_version": _version(),
        "vocab": json.dumps(vocab.itos, ensure_ascii=False),
        "level": level,
        "unk_token": UNK,
        "eos_token": EOS,
        "specials": json.dumps(list(vocab.specials), ensure_ascii=False),
        "boundary_id": str(boundary_token(vocab, level)),
        "cell": config.cell,
        "family": spec.family,
        "head": config.head,
        "tie_weights": json.dumps(config.tie_weights),
        "cutoffs": json.dumps(list(config.cutoffs)),
        "num_layers": str(config.num_layers),
        "embed_size": str(config.embed_size),
        "hidden_size": str(config.state_size()),
        "layer_sizes": json.dumps(config.layer_sizes()),
        "vocab_size": str(config.vocab_size),
        "states_per_layer": str(spec.states),
        "state_names": json.dumps(names),
        "state_layout": STATE_LAYOUT,
    }


def _export(graph: StepGraph, config: LanguageModelConfig) -> Any:
    """The ONNX ModelProto of ``graph`` with a dynamic batch, the exporter's chatter silenced."""
    n = graph.num_layers * graph.states
    tokens = torch.zeros(2, dtype=torch.long)  # batch 2: a batch of 1 would be specialised
    state = torch.zeros(n, 2, config.state_size())
    batch = torch.export.Dim("batch")
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                (tokens, state),
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"tokens": {0: batch}, "state": {1: batch}},
                opset_version=OPSET,
                verbose=False,
            )
            return program.model_proto
    except Exception as e:  # the exporter's many error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RnnlabError(
            f"ONNX export of the {config.cell} model with the {config.head} head failed "
            f"({type(e).__name__}: {first[:200]}); this is a bug in rnnlab, please report it"
        ) from None


def _compare(graph: StepGraph, config: LanguageModelConfig, file: Path) -> float:
    """Largest difference between onnxruntime on ``file`` and PyTorch on one probe step (batch
    3, random state); refuses the file above :data:`TOLERANCE`."""
    lm = OnnxLanguageModel(file, threads=1)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(config.vocab_size, (3,), generator=gen)
    state = torch.randn(graph.num_layers * graph.states, 3, config.state_size(), generator=gen)
    with torch.no_grad():
        want = [t.numpy() for t in graph(tokens, state)]
    got = lm.step(tokens.numpy(), state.numpy())
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, want, strict=True))
    if not diff <= TOLERANCE:
        raise RnnlabError(
            f"the exported graph disagrees with the PyTorch model by {diff:.2e} (over "
            f"{TOLERANCE:.0e}); nothing was written; this is a bug in rnnlab, please report it"
        )
    return diff


def _check_target(path: Path) -> None:
    """Refuse a target that cannot be a file before the (slow) export."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the .onnx file to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RnnlabError(
            f"cannot write {path}: {parent} is not a writable directory; choose a writable path",
            exit_code=1,
        )


def _require_exporter() -> Any:
    """The ``onnx`` module, after checking that onnxscript and onnxruntime import too."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"rnnlab export --onnx needs {', '.join(missing)} (not installed); {EXTRA_HINT}"
        )
    import onnx

    return onnx


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress prints, warnings and log lines kept off the terminal."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _size(n: int) -> str:
    """A byte count for people: kB below a megabyte, else MB."""
    return f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB"


def _version() -> str:
    """The installed rnnlab version (``unknown`` when run from a source tree alone)."""
    try:
        return metadata.version("rnnlab")
    except metadata.PackageNotFoundError:
        return "unknown"
