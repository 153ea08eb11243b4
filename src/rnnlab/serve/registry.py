"""The models a server serves: each trained run loaded once, under a name the API addresses.

A request names a model by the name :func:`load_registry` gave it (the run directory's name,
made unique), never by a path: no request reaches the filesystem. The facts the model picker
shows (corpus, cell, size, test perplexity) are read from the run directory at start-up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlab.data.tang import run_title_sep
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.generation.poetry import is_hanzi
from rnnlab.runs.load import load_text_model

POEM_MIN_HANZI = 20  # a character model knowing fewer Chinese characters cannot write poems


@dataclass
class ServedModel:
    """One loaded run: the model, its vocabulary and level, and what the picker shows."""

    name: str
    model: Any
    vocab: Vocab
    level: str
    title_sep: str | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def poems(self) -> bool:
        """Whether the model can write Chinese poems (a character model of Chinese text)."""
        return bool(self.info.get("poems"))

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        """The distinct tokens of ``tokens`` outside the vocabulary, in order of appearance."""
        stoi = self.vocab.stoi
        return list(dict.fromkeys(t for t in tokens if t not in stoi))


def _test_perplexity(run_dir: Path) -> float | None:
    """The run's test perplexity from its ``results.json``, or None when it has none."""
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        value = float(results["test"]["perplexity"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _corpus_name(meta: dict[str, Any]) -> str:
    """What the run was trained on: the corpus name, or the text file's name."""
    data = (meta.get("run") or {}).get("data") or {}
    if data.get("corpus"):
        return str(data["corpus"])
    if data.get("text"):
        return Path(str(data["text"])).name
    return str(meta.get("corpus") or "unknown")


def load_served_model(run_dir: str | Path, name: str, device: str = "cpu") -> ServedModel:
    """The text model of ``run_dir`` under ``name`` (a piano-roll run is refused in one line)."""
    path = Path(run_dir)
    if not path.exists():
        raise ConfigError(f"{run_dir} does not exist; give a run directory")
    model, vocab, ckpt = load_text_model(path, device, "serve")
    config = model.config
    level = ckpt.meta["level"]
    hanzi = sum(is_hanzi(t) for t in vocab.itos)
    info = {
        "name": name,
        "corpus": _corpus_name(ckpt.meta),
        "level": level,
        "cell": config.cell,
        "layers": config.num_layers,
        "hidden": config.hidden_size,
        "last_hidden": config.output_size,  # the last layer's width (AWD-LSTM's is narrower)
        "head": config.head,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": len(vocab),
        "test_perplexity": _test_perplexity(path if path.is_dir() else path.parent),
        "poems": level == "char" and hanzi >= POEM_MIN_HANZI,
        "titled": run_title_sep(ckpt) is not None,
    }
    return ServedModel(name, model, vocab, level, run_title_sep(ckpt), info)


def load_registry(run_dirs: Sequence[str | Path], device: str = "cpu") -> dict[str, ServedModel]:
    """Every run of ``run_dirs`` loaded, by name: the directory's name, with ``-2``, ``-3`` ...
    added when two share one. A run that cannot be loaded stops the server before it starts,
    with the run named in the one-line error."""
    if not run_dirs:
        raise ConfigError("give at least one run directory to serve")
    served: dict[str, ServedModel] = {}
    for run_dir in run_dirs:
        base = Path(run_dir).resolve().name or "model"
        name, k = base, 1
        while name in served:
            k += 1
            name = f"{base}-{k}"
        try:
            served[name] = load_served_model(run_dir, name, device)
        except RnnlabError as e:
            raise type(e)(f"cannot serve {run_dir}: {e}") from None
    return served
