"""The model's log-probability of given poems: real ones, generated ones, anyone's.

A poem is scored as the ``tang`` corpus holds it, on one line with its punctuation
(``床前明月光，疑是地上霜。举头望明月，低头思故乡。``; a poem given one line per row is joined):
the model reads a newline, then, if it was trained with titles, the title and the separator
(``title:``), and then every character and punctuation mark of the poem is scored. A poem's score
is the mean natural-log probability per scored token, the number :attr:`Poem.score
<rnnlab.generation.poetry.Poem.score>` reports for a generated poem; ``exp(-score)`` is its
perplexity per character. Characters the vocabulary lacks are read and scored as ``<unk>``, as
evaluation does; :func:`count_unknown` says how many there were.

Scoring is exact teacher forcing: the poems of a batch are padded side by side and go through the
model in one forward pass each (``model(inputs, state, targets=...)``), so an adaptive softmax
scores only the clusters the targets fall in. Context and padding are not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.config import IGNORE

LINE_ENDS = "，。？！；"  # the marks that end a line of a poem written on one line


def poem_text(text: str) -> str:
    """``text`` on one line as the corpus writes it: newlines and other whitespace removed."""
    return "".join(text.split())


def poem_lines(text: str) -> str:
    """A one-line poem broken after each line-ending mark (``，。？！；``), one line per row, as
    :class:`~rnnlab.generation.poetry.Poem.text` is written (for the checkers)."""
    rows, current = [], []
    for ch in poem_text(text):
        current.append(ch)
        if ch in LINE_ENDS:
            rows.append("".join(current))
            current = []
    if current:
        rows.append("".join(current))
    return "\n".join(rows)


def _titles_for(
    texts: Sequence[str], titles: Sequence[str | None] | None, title_sep: str | None
) -> list[str | None]:
    """One title (or None) per poem, checked against what the model was trained on."""
    if titles is None:
        if title_sep is not None:
            raise ConfigError(
                "this model was trained with titles and reads a poem after its title; "
                "give a title for each poem"
            )
        return [None] * len(texts)
    if title_sep is None:
        raise ConfigError(
            "this model was trained without titles; score the poems without titles "
            "or use a model trained with them (--preset tang-hour)"
        )
    if len(titles) != len(texts):
        raise ConfigError(f"{len(texts)} poems need {len(texts)} titles, got {len(titles)}")
    out: list[str | None] = []
    for i, title in enumerate(titles):
        if title is None or "\n" in title or title_sep in title:
            raise ConfigError(
                f"title {i + 1} must be one line without {title_sep!r}, got {title!r}"
            )
        out.append(title.strip())
    return out


def _sequences(
    vocab: Vocab, texts: Sequence[str], titles: list[str | None], title_sep: str | None
) -> list[tuple[list[int], int]]:
    """(ids, context length) per poem: newline, [title, separator], then the poem."""
    if vocab.level not in (None, "char"):
        raise ConfigError("poems are scored by a character-level model; this one reads words")
    newline = vocab.stoi.get("\n", vocab.unk_id)
    out = []
    for i, (text, title) in enumerate(zip(texts, titles, strict=True)):
        poem = poem_text(text)
        if not poem:
            raise DataError(f"poem {i + 1} is empty; nothing to score")
        if title_sep is not None and title_sep in poem:
            raise DataError(
                f"poem {i + 1} holds the title separator {title_sep!r}; give the poem without "
                "its title (titles go in separately)"
            )
        context = [newline]
        if title is not None:
            context += [vocab.stoi.get(ch, vocab.unk_id) for ch in title]
            context.append(vocab.stoi.get(str(title_sep), vocab.unk_id))
        ids = [vocab.stoi.get(ch, vocab.unk_id) for ch in poem]
        out.append((context + ids, len(context)))
    return out


@torch.no_grad()
def score_poems(
    model: torch.nn.Module,
    vocab: Vocab,
    texts: Sequence[str],
    titles: Sequence[str | None] | None = None,
    title_sep: str | None = None,
    *,
    batch_size: int = 256,
) -> list[float]:
    """The model's mean log-probability per token of each poem in ``texts`` (its characters and
    punctuation), given a newline and, for a model trained with titles (``title_sep``, see
    :func:`rnnlab.data.tang.run_title_sep`), the poem's title in ``titles`` and the separator.

    Poems go through the model ``batch_size`` at a time, longest first (less padding); the
    result is in the order of ``texts``. Raises :class:`ConfigError` for titles the model cannot
    use and :class:`DataError` for an empty poem, in one line.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    seqs = _sequences(vocab, texts, _titles_for(texts, titles, title_sep), title_sep)
    if not seqs:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    scores = [0.0] * len(seqs)
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        steps = max(len(seqs[i][0]) for i in rows) - 1
        inputs = torch.zeros(steps, len(rows), dtype=torch.long)
        targets = torch.full((steps, len(rows)), IGNORE, dtype=torch.long)
        for b, i in enumerate(rows):
            ids, context = seqs[i]
            seq = torch.tensor(ids, dtype=torch.long)
            inputs[: len(ids) - 1, b] = seq[:-1]
            targets[context - 1 : len(ids) - 1, b] = seq[context:]
        inputs, targets = inputs.to(device), targets.to(device)
        nll, _ = model(inputs, model.init_state(len(rows)), targets=targets)  # (T, B)
        totals = nll.double().sum(dim=0).cpu()
        counts = (targets != IGNORE).sum(dim=0).cpu()
        for b, i in enumerate(rows):
            scores[i] = -float(totals[b]) / int(counts[b])
    model.train(was_training)
    return scores


def count_unknown(
    vocab: Vocab, texts: Sequence[str], titles: Sequence[str | None] | None = None
) -> dict[str, int]:
    """How many characters of the poems (and of the titles) are outside ``vocab`` and read as
    ``<unk>``: ``{"poem_chars", "poem_unknown", "title_chars", "title_unknown"}``."""
    poems = [poem_text(t) for t in texts]
    heads = [t.strip() for t in titles or () if t is not None]
    return {
        "poem_chars": sum(len(p) for p in poems),
        "poem_unknown": sum(ch not in vocab.stoi for p in poems for ch in p),
        "title_chars": sum(len(t) for t in heads),
        "title_unknown": sum(ch not in vocab.stoi for t in heads for ch in t),
    }
