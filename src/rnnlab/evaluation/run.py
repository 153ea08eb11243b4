"""Evaluating a trained run: which text or pieces to score it on, and the exact result.

``rnnlab eval`` and ``rnnlab score`` call these; they load the run through
:mod:`rnnlab.runs.load` (never the trainer) and return results for the CLI to print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab.data.dataset import DataConfig, load_data
from rnnlab.data.encodings import AUTO
from rnnlab.data.registry import is_pianoroll
from rnnlab.data.rolls import RollData
from rnnlab.data.text_files import decode_bytes
from rnnlab.data.vocab import boundary_token, make_tokenizer
from rnnlab.errors import CheckpointError, ConfigError, DataError
from rnnlab.evaluation.rolls import evaluate_rolls
from rnnlab.evaluation.text import EvalResult, TokenScore, evaluate, score_tokens
from rnnlab.runs.load import load_model, load_text_model

# more unknown tokens than this means the text is not what the model was trained on
UNK_LIMIT = 0.10


@dataclass
class RunEvaluation:
    """The exact result of a run on one split of a corpus."""

    result: EvalResult
    split: str
    corpus: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.result.to_dict(), split=self.split, corpus=self.corpus)


def _recorded_data(run_dir: str | Path, ckpt: Any, what: str) -> DataConfig:
    """The data config the run was trained on, from its checkpoint."""
    recorded = (ckpt.meta.get("run") or {}).get("data")
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{run_dir} does not record its training data; pass {what}")
    return DataConfig.from_dict(recorded)


def recorded_encoding(ckpt: Any) -> str:
    """The encoding the run's text was read with (``"auto"`` for a named corpus, and for a run
    recorded before runs kept it: ``"utf-8"``, the only encoding then read by default)."""
    data = (ckpt.meta.get("run") or {}).get("data") or {}
    encoding = data.get("encoding")
    return encoding if isinstance(encoding, str) else AUTO


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    corpus: str | None = None,
    text: str | None = None,
    encoding: str | None = None,
    batch_size: int = 10,
    bptt: int = 100,
    device: str = "cpu",
    allow_unk: bool = False,
    progress: bool = False,
) -> RunEvaluation:
    """Exact perplexity (text) or NLL per time step (piano rolls) of the run in ``run_dir`` on
    ``split`` of its own data, or of ``corpus`` / the ``text`` file.

    A text run refuses piano rolls and text with more than :data:`UNK_LIMIT` unknown tokens
    (unless ``allow_unk``); a piano-roll run refuses text. ``encoding`` (of ``text``) is honoured
    exactly; None reads the file as UTF-8, else in the encoding the run recorded, else as
    detected (see :mod:`rnnlab.data.encodings`).
    With ``progress``, a long pass shows a bar on stderr.
    """
    model, vocab, ckpt = load_model(run_dir, device=device)
    if vocab is None:
        return _evaluate_rolls_run(run_dir, model, ckpt, split, corpus, text, batch_size, progress)
    if corpus and is_pianoroll(corpus):
        raise ConfigError(
            f"{run_dir} is a text model and {corpus} holds piano rolls; evaluate it on "
            "text (--text FILE or a text --corpus)"
        )
    level = ckpt.meta["level"]
    if corpus or text:
        given = encoding is not None
        read_as = encoding if given else recorded_encoding(ckpt)
        data = load_data(
            DataConfig(corpus=corpus, text=text, encoding=read_as, level=level),
            vocab=vocab,
            policy="given" if given else "hint",
        )
    else:
        try:
            data = load_data(
                _recorded_data(run_dir, ckpt, "--text FILE or --corpus NAME"),
                vocab=vocab,
                policy="recorded",
            )
        except DataError as e:
            raise DataError(
                f"{e} (the run's own data); or evaluate other text with --text FILE "
                "or --corpus NAME"
            ) from None
    if isinstance(data, RollData):
        raise ConfigError(
            f"{run_dir} is a text model and {data.name} holds piano rolls; evaluate it on "
            "text (--text FILE or a text --corpus)"
        )
    ids = data.split(split)
    unk = float((ids == vocab.unk_id).float().mean()) if len(ids) else 0.0
    if unk > UNK_LIMIT and not allow_unk:
        raise DataError(
            f"{unk:.0%} of the {split} tokens are outside the model's vocabulary "
            "(it was trained on "
            f"{ckpt.meta.get('corpus')}); evaluate on matching text or pass --allow-unk"
        )
    result = evaluate(
        model,
        ids,
        batch_size=batch_size,
        bptt=bptt,
        level=level,
        progress=progress,
        label=split,
        unscored=data.unscored.get(split),
    )
    return RunEvaluation(result, split, data.name)


def _evaluate_rolls_run(
    run_dir: str | Path,
    model: Any,
    ckpt: Any,
    split: str,
    corpus: str | None,
    text: str | None,
    batch_size: int,
    progress: bool,
) -> RunEvaluation:
    """:func:`evaluate_run` of a piano-roll model: exact NLL per time step of a split."""
    if text or (corpus and not is_pianoroll(corpus)):
        raise ConfigError(
            f"{run_dir} is a piano-roll model; evaluate it on a piano-roll --corpus "
            "(jsb, nottingham, musedata, pianomidi), not on text"
        )
    data_cfg = (
        DataConfig(corpus=corpus) if corpus else _recorded_data(run_dir, ckpt, "--corpus NAME")
    )
    data = load_data(data_cfg)
    result = evaluate_rolls(
        model, data.split(split), batch_size=batch_size, progress=progress, label=split
    )
    return RunEvaluation(result, split, data.name)


@dataclass
class TextScore:
    """Per-token log-probabilities of a text: ``tokens`` as the text cut them, ``scores`` as
    the model saw them (``<unk>`` for unknown ones)."""

    tokens: list[str]
    scores: list[TokenScore]

    @property
    def total(self) -> float:
        return sum(s.logprob for s in self.scores)

    @property
    def perplexity(self) -> float:
        return math.exp(-self.total / len(self.scores))

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": [
                {"token": t, "id_token": s.token, "logprob": s.logprob}
                for t, s in zip(self.tokens, self.scores, strict=True)
            ],
            "total_logprob": self.total,
            "count": len(self.scores),
            "perplexity": self.perplexity,
        }


def score_run(
    run_dir: str | Path,
    text: str | bytes,
    *,
    device: str = "cpu",
    encoding: str | None = None,
    source: str = "the text",
) -> TextScore:
    """Log-probability of every token of ``text`` under the text model in ``run_dir``, each given
    all before it (the first after the boundary symbol of training lines).

    ``text`` may be the bytes of a file (named ``source`` in messages): they are read in
    ``encoding``, exactly, or with None as UTF-8, else in the encoding the run recorded, else as
    detected (see :mod:`rnnlab.data.encodings`).
    """
    model, vocab, ckpt = load_text_model(run_dir, device, "score")
    if isinstance(text, bytes):
        given = encoding is not None
        read_as = encoding if given else recorded_encoding(ckpt)
        policy = "given" if given else "hint"
        text = decode_bytes(text, source, encoding=read_as, policy=policy).text if text else ""
    level = ckpt.meta["level"]
    tokens = make_tokenizer(level).tokenize(text)
    scores = score_tokens(model, boundary_token(vocab, level), vocab.encode(tokens), vocab.itos)
    return TextScore(tokens, scores)
