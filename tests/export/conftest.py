"""Runs to export: tiny random models of every cell and head, saved as rnnlab run directories.

``save_run(directory, cell, head, level=...)`` writes ``best.safetensors`` the way training
does (config, level, vocabulary, weights) for a model drawn with a wide ``init_range``, so its
next-token distributions are far from uniform and sampling choices matter. Every test here
needs the ``onnx`` extra; without it the whole folder skips, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rnnlab.data.rolls import RollData
from rnnlab.data.vocab import build_vocab, make_tokenizer
from rnnlab.models.build import build_model
from rnnlab.models.config import LanguageModelConfig
from rnnlab.runs import checkpoint as ck

for _module in ("onnxruntime", "onnx", "onnxscript"):
    pytest.importorskip(_module, reason=f"{_module} is not installed (pip install -e '.[onnx]')")

HEADS = {
    "full": {"head": "softmax"},
    "adaptive": {"head": "adaptive", "cutoffs": [8, 16], "div_value": 2.0},
    "tied-adaptive": {"head": "adaptive", "cutoffs": [8, 16], "tie_weights": True},
}
"""The three heads the export supports, as config fields (tied adaptive: embed = hidden)."""


def _save_run(
    directory: Path,
    cell: str = "lstm",
    head: str = "full",
    *,
    level: str = "char",
    text: str = "",
    layers: int = 2,
    seed: int = 0,
    model: dict | None = None,
) -> Path:
    tokens = make_tokenizer(level).tokenize(text)
    vocab = build_vocab(tokens, level=level, specials=("<unk>",))
    config = LanguageModelConfig.from_dict(
        {
            "cell": cell,
            "vocab_size": len(vocab),
            "embed_size": 16,
            "hidden_size": 16,
            "num_layers": layers,
            "init_range": 0.4,
            **HEADS[head],
            **(model or {}),
        }
    )
    torch.manual_seed(seed)
    model = build_model(config)
    meta = {"model": config.to_dict(), "level": level, "vocab": vocab.to_dict()}
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)
    ck.save_checkpoint(directory / ck.BEST, ck.Checkpoint(meta=meta, tensors=tensors))
    return directory


@pytest.fixture(scope="session")
def save_run(fox_text: Callable[..., str]) -> Callable[..., Path]:
    """``save_run(directory, cell, head, level="char", layers=2, seed=0, model=None)``: a random
    model over the fox text's vocabulary (``model``: config fields to override) saved as a run
    directory; returns the directory."""

    def save(directory: Path, cell: str = "lstm", head: str = "full", **kw: object) -> Path:
        return _save_run(directory, cell, head, text=fox_text(), **kw)  # type: ignore[arg-type]

    return save


@pytest.fixture(scope="session")
def save_roll_run() -> Callable[[Path], Path]:
    """``save_roll_run(directory)``: a piano-roll model (sigmoid head) saved as a run."""

    def save(directory: Path) -> Path:
        config = LanguageModelConfig.from_dict(
            {"cell": "gru", "vocab_size": 88, "embed_size": 0, "hidden_size": 8, "num_layers": 1}
            | {"head": "sigmoid"}
        )
        model = build_model(config)
        meta = {"model": config.to_dict(), "level": RollData.level}
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        directory.mkdir(parents=True, exist_ok=True)
        ck.save_checkpoint(directory / ck.BEST, ck.Checkpoint(meta=meta, tensors=tensors))
        return directory

    return save
