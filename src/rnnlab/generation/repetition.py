"""Repetition: the CTRL repetition penalty, and recognising output that collapsed into a loop.

**Why decoding collapses.** Greedy decoding and beam search follow the most likely next token.
A weakly trained character model has learned little more than the unigram distribution, whose
mode is the space (or the newline); its argmax path is then a space after a space after a space,
or a short loop such as ``"te te te "``, and it never leaves it.

**The penalty** (Keskar et al. 2019, CTRL, section 4.1). Every token already present in the text,
the prime included (the boundary token the model reads first is not text and does not count),
has its logit :math:`z` changed before temperature, top-k and top-p apply:

.. math::  z' = z / P \\quad (z > 0), \\qquad z' = z \\cdot P \\quad (z \\le 0)

with :math:`P \\ge 1` (1 leaves every logit as it is, and the decoders then skip the penalty
entirely, so their output is bit for bit what it was without it). A token counts once however
often it occurred. With ``window`` N only the last N tokens of the text count, which suits
character models: over a long text nearly every character has occurred, and a penalty on all of
them no longer singles out the loop. CTRL (and Hugging Face's ``repetition_penalty``) count the
whole text; that is the default here too.

**Degenerate output.** :func:`find_degeneration` recognises a generated text that is nothing but
whitespace, or whose tail is one short unit repeated to the end (``"the the the"``,
``"\\n\\n\\n"``); the CLI says so on stderr and what to try.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def penalize_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """``logits`` (B, V) with the ``seen`` (B, V) bool tokens' logits moved away from them.

    A seen token's positive logit is divided by ``penalty``, a negative one multiplied by it
    (both lower it for ``penalty`` > 1); unseen tokens and ``-inf`` logits stay as they are.
    """
    lowered = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, lowered, logits)


class SeenTokens:
    """Which tokens each of ``rows`` texts holds: its ``history`` and what was pushed since.

    ``window`` N keeps only the last N tokens (None: all of them). :meth:`select` keeps or
    reorders rows along with the decoder's state (beam search).
    """

    def __init__(
        self,
        history: Sequence[int],
        rows: int,
        vocab_size: int,
        *,
        window: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.window = window
        self.vocab_size = vocab_size
        kept = list(history)[-window:] if window is not None else list(history)
        ids = torch.tensor(kept, dtype=torch.long, device=device).view(1, -1).expand(rows, -1)
        # the whole text: one persistent mask; a window: the last N ids, the mask rebuilt from them
        self.recent = ids.clone() if window is not None else ids[:, :0]  # (rows, <= window)
        self._seen = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        self._seen.scatter_(1, ids, True)

    @property
    def seen(self) -> Tensor:
        """(rows, V) bool: True where the token occurs in the counted text."""
        return self._seen

    def push(self, tokens: Tensor) -> None:
        """Append one token (rows,) to every row."""
        tokens = tokens.view(-1, 1)
        if self.window is None:
            self._seen.scatter_(1, tokens, True)
            return
        self.recent = torch.cat([self.recent, tokens], dim=1)[:, -self.window :]
        self._seen = torch.zeros_like(self._seen).scatter_(1, self.recent, True)

    def select(self, index: Tensor) -> None:
        """Keep the rows ``index`` (K,), in that order (rows may repeat)."""
        self._seen = self._seen[index]
        self.recent = self.recent[index]


# ------------------------------------------------------------------------------ degenerate output


@dataclass(frozen=True)
class Degeneration:
    """How a generated text collapsed.

    ``kind`` is ``"whitespace"`` (the text is nothing but whitespace) or ``"loop"`` (its tail,
    from character ``start`` on, repeats ``unit`` ``repeats`` whole times, possibly ending in
    part of it).
    """

    kind: str
    unit: str
    repeats: int
    start: int

    def describe(self) -> str:
        """A phrase for a note: ``"only whitespace (40 spaces)"`` or ``"a loop: ..."``."""
        if self.kind == "whitespace":
            if set(self.unit) == {" "}:
                return f"only whitespace ({len(self.unit)} spaces)"
            if set(self.unit) == {"\n"}:
                return f"only whitespace ({len(self.unit)} newlines)"
            return f"only whitespace ({len(self.unit)} characters)"
        shown = json.dumps(self.unit, ensure_ascii=False)
        return f"a loop: {shown} repeated {self.repeats} times to the end"


def find_degeneration(
    text: str,
    *,
    min_chars: int = 8,
    min_repeats: int = 3,
    max_unit: int = 32,
    min_share: float = 0.25,
) -> Degeneration | None:
    """How ``text`` (a generated continuation, without its prime) collapsed, or None.

    Degenerate is:

    - **whitespace**: at least ``min_chars`` characters, all whitespace;
    - **a loop**: a tail in which one unit of at most ``max_unit`` characters repeats to the end,
      at least ``min_repeats`` whole times, over at least ``min_chars`` characters and at least
      ``min_share`` of the text (a line of code that happens to end in its indentation, or a
      text that ends ``"..."``, is not a loop).

    Of the units that qualify the one with the longest tail is reported, the shortest on ties
    (``"te "`` rather than ``"te te "``), shown from the first word start in the loop.
    """
    if len(text) >= min_chars and not text.strip():
        return Degeneration("whitespace", text, 1, 0)
    n = len(text)
    best: tuple[int, int] | None = None  # (tail length, unit length)
    for p in range(1, min(max_unit, n // min_repeats) + 1):
        i = n - p - 1  # extend the tail backwards while text[i] == text[i + p]
        while i >= 0 and text[i] == text[i + p]:
            i -= 1
        tail = n - (i + 1)
        if tail >= max(min_repeats * p, min_chars, min_share * n) and (
            best is None or tail > best[0]
        ):
            best = (tail, p)
    if best is None:
        return None
    tail, p = best
    start = n - tail
    # shown from a word's start when the loop has one: "te " rather than "e t"
    word = (i for i in range(start + 1, start + p) if text[i - 1].isspace() > text[i].isspace())
    first = next(word, start)
    return Degeneration("loop", text[first : first + p], tail // p, start)
