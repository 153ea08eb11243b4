"""Evaluating a trained run: which text or pieces to score it on, and the exact result.

``rnnlab eval`` and ``rnnlab score`` call these; they load the run through
:mod:`rnnlab.runs.load` (never the trainer) and return results for the CLI to print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab.data.dataset import DataConfig, LMData, load_data
from rnnlab.data.encodings import AUTO
from rnnlab.data.registry import is_pianoroll
from rnnlab.data.rolls import RollData
from rnnlab.data.text_files import decode_bytes
from rnnlab.data.vocab import boundary_token, make_tokenizer
from rnnlab.errors import CheckpointError, ConfigError, DataError
from rnnlab.evaluation.adapt import AdaptationRequest
from rnnlab.evaluation.rolls import evaluate_rolls
from rnnlab.evaluation.text import EvalResult, TokenScore, evaluate, score_tokens
from rnnlab.runs.load import load_model, load_text_model

# the window of an adapted score: the cache and the dynamic update act between windows
SCORE_BPTT = 100
# more unknown tokens than this means the text is not what the model was trained on
UNK_LIMIT = 0.10


@dataclass
class RunEvaluation:
    """The exact result of a run on one split of a corpus."""

    result: EvalResult
    split: str
    corpus: str
    adaptation: dict[str, Any] | None = None  # the cache / dynamic settings used, if any

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.result.to_dict(), split=self.split, corpus=self.corpus)
        if self.adaptation is not None:
            d["adaptation"] = self.adaptation
        return d


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
    adaptation: AdaptationRequest | None = None,
) -> RunEvaluation:
    """Exact perplexity (text) or NLL per time step (piano rolls) of the run in ``run_dir`` on
    ``split`` of its own data, or of ``corpus`` / the ``text`` file.

    A text run refuses piano rolls and text with more than :data:`UNK_LIMIT` unknown tokens
    (unless ``allow_unk``); a piano-roll run refuses text. ``encoding`` (of ``text``) is honoured
    exactly; None reads the file as UTF-8, else in the encoding the run recorded, else as
    detected (see :mod:`rnnlab.data.encodings`).
    With ``progress``, a long pass shows a bar on stderr. ``adaptation`` asks for the neural
    cache and/or dynamic evaluation (:mod:`rnnlab.evaluation.adapt`), its settings resolved by
    :func:`rnnlab.evaluation.tuning.resolve_adaptation`; the result then names them.
    """
    model, vocab, ckpt = load_model(run_dir, device=device)
    if vocab is None:
        if adaptation is not None and adaptation.active:
            raise ConfigError(
                f"{run_dir} is a piano-roll model; --cache and --dynamic work on text models"
            )
        return _evaluate_rolls_run(run_dir, model, ckpt, split, corpus, text, batch_size, progress)
    data = run_text_data(run_dir, ckpt, vocab, corpus=corpus, text=text, encoding=encoding)
    ids = data.split(split)
    level = ckpt.meta["level"]
    unk = float((ids == vocab.unk_id).float().mean()) if len(ids) else 0.0
    if unk > UNK_LIMIT and not allow_unk:
        raise DataError(
            f"{unk:.0%} of the {split} tokens are outside the model's vocabulary "
            "(it was trained on "
            f"{ckpt.meta.get('corpus')}); evaluate on matching text or pass --allow-unk"
        )
    if adaptation is not None and adaptation.active:
        from rnnlab.evaluation.tuning import adapted_evaluation

        result, settings = adapted_evaluation(
            run_dir,
            model,
            ckpt,
            ids,
            adaptation,
            train_ids=data.train if not (corpus or text) else None,
            vocab=vocab,
            batch_size=batch_size,
            bptt=bptt,
            level=level,
            progress=progress,
            label=split,
            unscored=data.unscored.get(split),
        )
        return RunEvaluation(result.result, split, data.name, settings)
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


def run_text_data(
    run_dir: str | Path,
    ckpt: Any,
    vocab: Any,
    *,
    corpus: str | None = None,
    text: str | None = None,
    encoding: str | None = None,
) -> LMData:
    """The text a text run is evaluated on: ``corpus`` or the ``text`` file (read as
    :func:`evaluate_run` says) in the run's vocabulary, else the run's own recorded data."""
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
        data = recorded_text_data(run_dir, ckpt, vocab)
    if isinstance(data, RollData):
        raise ConfigError(
            f"{run_dir} is a text model and {data.name} holds piano rolls; evaluate it on "
            "text (--text FILE or a text --corpus)"
        )
    return data


def recorded_text_data(
    run_dir: str | Path,
    ckpt: Any,
    vocab: Any,
    advice: str = "or evaluate other text with --text FILE or --corpus NAME",
) -> Any:
    """The run's own recorded data in its vocabulary (one-line errors when it cannot be read,
    ending with ``advice``)."""
    try:
        return load_data(
            _recorded_data(run_dir, ckpt, "--text FILE or --corpus NAME"),
            vocab=vocab,
            policy="recorded",
        )
    except DataError as e:
        raise DataError(f"{e} (the run's own data); {advice}") from None


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
    adaptation: dict[str, Any] | None = None  # the cache / dynamic settings used, if any

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
            **({"adaptation": self.adaptation} if self.adaptation is not None else {}),
        }


def score_run(
    run_dir: str | Path,
    text: str | bytes,
    *,
    device: str = "cpu",
    encoding: str | None = None,
    source: str = "the text",
    adaptation: AdaptationRequest | None = None,
) -> TextScore:
    """Log-probability of every token of ``text`` under the text model in ``run_dir``, each given
    all before it (the first after the boundary symbol of training lines).

    ``text`` may be the bytes of a file (named ``source`` in messages): they are read in
    ``encoding``, exactly, or with None as UTF-8, else in the encoding the run recorded, else as
    detected (see :mod:`rnnlab.data.encodings`).

    With ``adaptation`` (the neural cache and/or dynamic evaluation), the text is read as one
    stream in windows of :data:`SCORE_BPTT` tokens, each token scored before the model adapts
    to it; the result names the settings used.
    """
    model, vocab, ckpt = load_text_model(run_dir, device, "score")
    if isinstance(text, bytes):
        given = encoding is not None
        read_as = encoding if given else recorded_encoding(ckpt)
        policy = "given" if given else "hint"
        text = decode_bytes(text, source, encoding=read_as, policy=policy).text if text else ""
    level = ckpt.meta["level"]
    tokens = make_tokenizer(level).tokenize(text)
    ids = vocab.encode(tokens)
    context = boundary_token(vocab, level)
    if adaptation is None or not adaptation.active:
        return TextScore(tokens, score_tokens(model, context, ids, vocab.itos))
    if not ids:
        raise DataError("the text to score has no tokens")
    from rnnlab.evaluation.tuning import adapted_evaluation

    result, settings = adapted_evaluation(
        run_dir,
        model,
        ckpt,
        torch.tensor([context, *ids], dtype=torch.long),
        adaptation,
        train_ids=None,
        vocab=vocab,
        batch_size=1,
        bptt=SCORE_BPTT,
        level=level,
        keep_scores=True,
    )
    assert result.logprobs is not None
    logprobs = result.logprobs.tolist()
    scores = [TokenScore(vocab.itos[i], lp) for i, lp in zip(ids, logprobs, strict=True)]
    return TextScore(tokens, scores, settings)
