"""Decoding a language model: temperature, top-k, top-p, greedy, beam search; priming and stops.

Generation runs one step at a time with the hidden state carried, so the context is read once
(:mod:`rnnlab.generation.fast_step` makes each step a few fused ops)::

    "\\n" + prime ──> start ──> logits ──> pick w1 ──> step(w1) ──> logits ──> pick w2 ──> ... wN

**Sampling.** Each pick draws from :math:`\\mathrm{softmax}(z / T)` over the logits :math:`z`,
restricted to the k most likely tokens (top-k, Fan et al. 2018) and/or to the smallest set whose
probability reaches p (top-p or nucleus sampling, Holtzman et al. 2020). ``temperature=0`` is
greedy decoding (the argmax). ``count`` samples run at once as the rows of one batch, and a
``torch.Generator`` seeded with ``seed`` makes the output reproducible. The draw itself
(:func:`draw_categorical`) inverts the cumulative distribution with one uniform number per row.

**Beam search** keeps the ``beam`` most probable partial sequences, extends each by every token
and keeps the best ``beam`` again. A sequence ends when a stop condition holds or at the length
limit. Finished sequences of different lengths are compared by the length-normalised score

.. math::  s(y) = \\frac{\\log p(y \\mid \\text{context})}{|y|^{\\alpha}}

(``length_penalty`` :math:`\\alpha`; 0 compares raw log-probabilities, which favours short
sequences; 1 compares the mean log-probability per token).

**Repetition penalty.** ``repetition_penalty`` :math:`P > 1` lowers the logit of every token
already in the text (prime included; only the last ``repetition_window`` tokens with a window)
before the pick, in sampling, greedy decoding and beam search alike: the CTRL penalty of
:mod:`rnnlab.generation.repetition`, which also says why greedy and beam output of a weak model
collapses into whitespace. :math:`P = 1` (the default) skips it: the output is exactly as before.

**Stops.** ``stop`` strings end a sample as soon as its text contains one; the returned text is
cut before the stop string. ``length`` is the maximum number of generated tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnlab.data.vocab import Tokenizer, Vocab, boundary_token, make_tokenizer
from rnnlab.errors import ConfigError
from rnnlab.generation.fast_step import Stepper, make_stepper
from rnnlab.generation.repetition import (
    Degeneration,
    SeenTokens,
    find_degeneration,
    penalize_repeats,
)

StopFn = Callable[[Sequence[int]], bool]


@dataclass
class SamplingConfig:
    """How the next token is picked: ``temperature`` 0 is greedy.

    ``repetition_penalty`` (>= 1; 1 is off) and ``repetition_window`` (None: the whole text)
    set the CTRL penalty on tokens already in the text (see the module docstring); beam search
    uses these two fields and ignores the others.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    repetition_window: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p}")
        penalty = self.repetition_penalty
        if not (isinstance(penalty, int | float) and math.isfinite(penalty) and penalty >= 1):
            raise ConfigError(
                f"repetition penalty must be a finite number >= 1 (1 is off), got {penalty}"
            )
        if self.repetition_window is not None and self.repetition_window < 1:
            raise ConfigError(
                f"repetition window must be at least 1 token, got {self.repetition_window}"
            )

    @property
    def penalized(self) -> bool:
        """Whether the repetition penalty is on (``repetition_penalty`` > 1)."""
        return self.repetition_penalty != 1.0

    def seen_tokens(
        self, history: Sequence[int], rows: int, vocab_size: int, device: torch.device
    ) -> SeenTokens | None:
        """The tracker of tokens the penalty counts, ``history`` already in; None when off."""
        if not self.penalized:
            return None
        return SeenTokens(history, rows, vocab_size, window=self.repetition_window, device=device)


@dataclass
class Hypothesis:
    """One beam-search result: generated ids (context excluded, stop token included).

    ``logprob`` is :math:`\\sum_t \\log p(y_t \\mid y_{<t}, \\text{context})`; ``score`` is the
    length-normalised ``logprob / len(tokens) ** length_penalty``; ``finished`` is True when a
    stop condition ended it, False when it was cut at the length limit.
    """

    tokens: list[int]
    logprob: float
    score: float
    finished: bool


# ------------------------------------------------------------------------------ one pick


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Scaled logits (..., V) with the tokens outside top-k / top-p set to -inf.

    Top-k keeps every token whose logit is at least the k-th largest (ties at the k-th value
    are all kept). Top-p keeps a token when the probability mass of the tokens ranked strictly
    before it is < p: the smallest set whose mass reaches p.
    """
    logits = logits.float()
    if cfg.temperature != 1.0:  # x / 1 == x: skip the pass at the default temperature
        logits = logits / max(cfg.temperature, 1e-8)
    if cfg.top_k is not None and cfg.top_k < logits.size(-1):
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass ranked strictly before each token
        drop_sorted = before >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick(
    logits: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
    allowed: Tensor | None = None,
    seen: Tensor | None = None,
) -> Tensor:
    """One token id per row of ``logits`` (B, V).

    ``allowed`` (B, V) or (V,) bool restricts the choice before temperature, top-k and top-p
    apply (constrained decoding); every row must allow at least one token. ``seen`` (B, V) bool
    marks the tokens the repetition penalty lowers (when ``cfg`` turns it on).
    """
    if seen is not None and cfg.penalized:
        logits = penalize_repeats(logits, seen, cfg.repetition_penalty)
    if allowed is not None:
        logits = torch.where(allowed, logits, float("-inf"))  # cheaper than masked_fill(~allowed)
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    return draw_categorical(filter_logits(logits, cfg), generator)


def draw_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""One exact draw per row from :math:`\mathrm{softmax}(z)` of ``logits`` (B, V) -> (B,).

    Inverse-CDF sampling with one uniform number per row, the sums in float64:

    .. math::
        p = \mathrm{softmax}(z), \quad C_j = \sum_{i \le j} p_i, \quad
        r = U\, C_{V-1},\ U \sim \mathcal{U}[0, 1), \quad
        y = \min\{\, j : C_j > r \,\}

    so :math:`P(y = j) = (C_j - C_{j-1}) / C_{V-1} = p_j`. A token with :math:`z_j = -\infty`
    has :math:`p_j = 0` exactly, so :math:`C_j = C_{j-1}` and it is never drawn; and
    :math:`0 \le r < C_{V-1}` holds after rounding too (``U <= 1 - 2^-53``, and a float64
    product ``U * C`` that is not exact lies more than half an ulp below ``C``), so the index
    never runs past the end. One random number per row instead of one per token
    (``torch.multinomial`` draws V exponentials per row and checks its input with a host sync);
    the same ``generator`` state gives the same draws. Every row needs a finite logit.
    """
    wide = torch.float32 if logits.device.type == "mps" else torch.float64  # MPS has no float64
    cdf = torch.softmax(logits, dim=-1).cumsum(-1, dtype=wide)  # (B, V)
    u = torch.rand(logits.shape[:-1] + (1,), generator=generator, dtype=wide, device=cdf.device)
    r = u.mul_(cdf[..., -1:])  # (B, 1): in [0, C_{V-1})
    return torch.searchsorted(cdf, r, right=True).squeeze(-1)  # first j with C_j > r


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private random stream: seeded when ``seed`` is given, else from OS entropy."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


# ------------------------------------------------------------------------------ context, stops


def prime_tokens(prime: str, level: str) -> list[str]:
    """The tokens of a prime: an unfinished line at word level (no closing ``<eos>``)."""
    tokens = make_tokenizer(level).tokenize(prime) if prime else []
    if level == "word" and tokens and tokens[-1] == "<eos>" and not prime.endswith("\n"):
        tokens = tokens[:-1]
    return tokens


class StopStrings:
    """``stop(tokens)`` is True once the text of ``tokens`` contains one of ``strings``.

    Only the tail that can hold a new match is decoded: every token is at least one character,
    so a stop string of n characters lies within the last n tokens.
    """

    def __init__(self, strings: Sequence[str], itos: Sequence[str], tokenizer: Tokenizer) -> None:
        self.strings = [s for s in strings if s]
        if len(self.strings) != len(strings):
            raise ConfigError("stop strings must not be empty")
        self.itos = itos
        self.tokenizer = tokenizer
        self.window = max((len(s) for s in self.strings), default=0)

    def __bool__(self) -> bool:
        return bool(self.strings)

    def __call__(self, tokens: Sequence[int]) -> bool:
        tail = self.tokenizer.detokenize([self.itos[i] for i in tokens[-self.window :]])
        return any(s in tail for s in self.strings)

    def cut(self, text: str) -> str:
        """``text`` up to (not including) the first stop string."""
        ends = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return text[: min(ends)] if ends else text


# ------------------------------------------------------------------------------ decoders


def sample_ids(
    stepper: Stepper,
    context: Sequence[int],
    *,
    length: int,
    count: int = 1,
    cfg: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    stop: StopFn | None = None,
    allowed: Tensor | None = None,
    workers: int = 1,
    history: Sequence[int] | None = None,
) -> list[list[int]]:
    """``count`` samples of up to ``length`` ids after ``context``, drawn as one batch.

    ``allowed`` (V,) bool, if given, is the set of ids that may be drawn at every step.
    ``history``: the ids the repetition penalty (``cfg``) counts as already in the text before
    the first pick (default: all of ``context``); every generated id joins them.

    A row stops after the step at which ``stop(row_ids)`` first holds (those ids included); the
    loop ends when every row has stopped or at ``length``.

    ``workers`` > 1 (CPU only) splits the rows into that many shards, each a batch of its own run
    by its own thread on its own core with one torch thread (torch releases the GIL inside its
    ops). At the batch sizes of generation the per-step gate arithmetic is too small for torch
    to spread over cores (it parallelises elementwise ops from 32,768 elements), so shards use
    the cores where one batch cannot. Shard k draws from a generator seeded by the k-th number
    drawn from ``generator``: the output is reproducible for a given seed and ``workers``, and
    differs from the one-shard output.
    """
    cfg = cfg or SamplingConfig()
    if length < 1 or count < 1:
        raise ConfigError(f"length and count must be positive, got {length} and {count}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    workers = min(workers, count)
    if workers > 1 and stepper.device.type == "cpu":
        sizes = [count // workers + (k < count % workers) for k in range(workers)]
        seeds = torch.randint(2**62, (workers,), generator=generator).tolist()

        def shard(k: int) -> list[list[int]]:
            gen = torch.Generator().manual_seed(seeds[k])
            kw = dict(length=length, count=sizes[k], cfg=cfg, stop=stop, allowed=allowed)
            kw.update(history=history)
            return sample_ids(stepper, context, generator=gen, **kw)

        with _one_torch_thread(), ThreadPoolExecutor(workers) as pool:
            return [row for rows in pool.map(shard, range(workers)) for row in rows]
    device = stepper.device
    with torch.inference_mode():
        logits, state = stepper.start(torch.tensor(list(context), device=device), count)
        out = torch.empty(length, count, dtype=torch.long, device=device)  # (length, count)
        rows: list[list[int]] = [[] for _ in range(count)]
        done = [False] * count
        steps = length
        seen = cfg.seen_tokens(
            context if history is None else history, count, logits.size(-1), device
        )
        for t in range(length):
            repeats = None if seen is None else seen.seen  # (count, V)
            nxt = pick(logits, cfg, generator, allowed, repeats)  # (count,)
            out[t] = nxt
            if seen is not None:
                seen.push(nxt)
            if stop is not None:
                for b, token in enumerate(nxt.tolist()):
                    if not done[b]:
                        rows[b].append(token)
                        done[b] = stop(rows[b])
                if all(done):
                    steps = t + 1
                    break
            if t + 1 < length:
                logits, state = stepper.step(nxt, state)
    if stop is not None:
        return rows
    return out[:steps].t().tolist()


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch's intra-op thread count set to 1 for the block (shards are the parallelism)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def beam_search(
    model: object,
    context: Sequence[int],
    *,
    beam: int = 4,
    length: int = 100,
    length_penalty: float = 1.0,
    stop: StopFn | None = None,
    stepper: Stepper | None = None,
    repetition_penalty: float = 1.0,
    repetition_window: int | None = None,
    history: Sequence[int] | None = None,
) -> list[Hypothesis]:
    """The ``beam`` best continuations of ``context`` found by beam search, best first.

    Args:
        model: a LanguageModel or any object with ``forward(tokens, state) -> (logits, state)``
            (ignored when ``stepper`` is given).
        context: the ids read before generation (at least one).
        beam: hypotheses kept at each step.
        length: maximum generated tokens; unfinished hypotheses are scored there.
        length_penalty: :math:`\\alpha` of ``score = logprob / len ** alpha``.
        stop: ``stop(ids) -> bool`` ends a hypothesis (e.g. it emitted a newline).
        repetition_penalty: :math:`P \\ge 1`: each hypothesis's next-token logits are lowered
            for the tokens already in its text (``history``, default all of ``context``, and
            its own tokens; the last ``repetition_window`` of them with a window) before the
            log-softmax, so ``logprob`` and ``score`` are those of the penalised distributions.
            1 (the default) is no penalty.

    Each step scores every (hypothesis, token) pair, keeps the ``2 * beam`` best candidates,
    moves those that ``stop`` to the finished pool and keeps up to ``beam`` live ones. The search
    ends when no hypothesis is live, or when ``beam`` finished ones exist and no live one can
    still beat them: a live hypothesis with log-probability ``lp <= 0`` can at best reach
    ``lp / length ** alpha``. With a beam as large as the number of sequences it is exhaustive.
    """
    if beam < 1 or length < 1:
        raise ConfigError(f"beam and length must be positive, got {beam} and {length}")
    if length_penalty < 0:
        raise ConfigError(f"length penalty must be >= 0, got {length_penalty}")
    penalty = SamplingConfig(
        repetition_penalty=repetition_penalty, repetition_window=repetition_window
    )  # checks them
    stepper = stepper or make_stepper(model)
    device = stepper.device

    def score(logprob: float, n: int) -> float:
        return logprob / n**length_penalty

    finished: list[Hypothesis] = []
    live: list[list[int]] = [[]]
    with torch.inference_mode():
        logits, state = stepper.start(torch.tensor(list(context), device=device), 1)
        live_lp = torch.zeros(1, dtype=torch.float64, device=device)  # (n_live,)
        seen = penalty.seen_tokens(
            context if history is None else history, 1, logits.size(-1), device
        )
        for t in range(length):
            if seen is not None:
                logits = penalize_repeats(logits, seen.seen, repetition_penalty)
            logp = torch.log_softmax(logits.double(), dim=-1)  # (n_live, V)
            vocab_size = logp.size(-1)
            cand = (live_lp.unsqueeze(1) + logp).view(-1)  # (n_live * V,)
            top_lp, top_idx = cand.topk(min(2 * beam, cand.numel()))
            keep_rows, keep_tokens, keep_lp, next_live = [], [], [], []
            for lp, idx in zip(top_lp.tolist(), top_idx.tolist(), strict=True):
                if lp == float("-inf"):
                    break
                row, token = divmod(idx, vocab_size)
                seq = live[row] + [token]
                if stop is not None and stop(seq):
                    finished.append(Hypothesis(seq, lp, score(lp, len(seq)), True))
                    continue
                keep_rows.append(row)
                keep_tokens.append(token)
                keep_lp.append(lp)
                next_live.append(seq)
                if len(next_live) == beam:
                    break
            live = next_live
            if not live or t + 1 == length:
                break
            live_lp = torch.tensor(keep_lp, dtype=torch.float64, device=device)
            if len(finished) >= beam:
                worst = sorted(h.score for h in finished)[-beam]
                if max(keep_lp) / length**length_penalty <= worst:
                    live, keep_lp = [], []
                    break
            index = torch.tensor(keep_rows, device=device)
            tokens = torch.tensor(keep_tokens, device=device)
            logits, state = stepper.step(tokens, stepper.select(state, index))
            if seen is not None:
                seen.select(index)
                seen.push(tokens)
        finished += [
            Hypothesis(seq, lp, score(lp, len(seq)), False)
            for seq, lp in zip(live, keep_lp, strict=True)
        ]
    finished.sort(key=lambda h: h.score, reverse=True)
    return finished[:beam]


# ------------------------------------------------------------------------------ text in, text out


def generate(
    model: object,
    vocab: Vocab,
    level: str,
    *,
    prime: str = "",
    length: int = 200,
    cfg: SamplingConfig | None = None,
    count: int = 1,
    seed: int | None = None,
    stop: Sequence[str] = (),
    beam: int | None = None,
    length_penalty: float = 1.0,
    dtype: torch.dtype | None = None,
    workers: int = 1,
) -> list[str]:
    """``count`` continuations of ``prime`` (each including the prime), decoded to text.

    Each has at most ``length`` generated tokens and ends before the first ``stop`` string.
    With ``beam``, the ``count`` best beam-search results (``count <= beam``; of ``cfg`` only the
    repetition penalty is used, and ``seed`` is not: beam search is deterministic); otherwise
    ``count`` samples. The repetition penalty counts the prime and the generated tokens, not the
    boundary token read before the prime.
    ``dtype=torch.bfloat16`` runs the fast stepper in reduced precision (faster, approximate;
    see :class:`rnnlab.generation.fast_step.FastStepper`). ``workers``: see :func:`sample_ids` (sampling
    only; beam search is one batch).
    """
    cfg = cfg or SamplingConfig()
    if length < 1 or count < 1:
        raise ConfigError(f"length and count must be positive, got {length} and {count}")
    if beam is not None and not 1 <= count <= beam:
        raise ConfigError(
            f"beam search returns at most --beam results: count {count} > beam {beam}"
        )
    if hasattr(model, "eval"):
        model.eval()
    tokenizer = make_tokenizer(level)
    start = prime_tokens(prime, level)
    context = [boundary_token(vocab, level)] + vocab.encode(start)
    stopper = StopStrings(list(stop), vocab.itos, tokenizer)
    stepper = make_stepper(model, dtype=dtype)
    if beam is not None:
        hyps = beam_search(
            model,
            context,
            beam=beam,
            length=length,
            length_penalty=length_penalty,
            stop=stopper or None,
            stepper=stepper,
            repetition_penalty=cfg.repetition_penalty,
            repetition_window=cfg.repetition_window,
            history=context[1:],
        )
        rows = [h.tokens for h in hyps[:count]]
    else:
        generator = make_generator(seed, stepper.device)
        allowed = None
        if level == "char" and len(vocab) > 1:
            # <unk> is not a character: a character model never writes it out
            allowed = torch.ones(len(vocab), dtype=torch.bool, device=stepper.device)
            allowed[vocab.unk_id] = False
        rows = sample_ids(
            stepper,
            context,
            length=length,
            count=count,
            cfg=cfg,
            generator=generator,
            stop=stopper or None,
            allowed=allowed,
            workers=workers,
            history=context[1:],
        )
    k = len(tokenizer.detokenize(start))  # the prime's text is a prefix of every result
    texts = []
    for row in rows:
        full = tokenizer.detokenize(start + vocab.decode(row))
        texts.append(full[:k] + stopper.cut(full[k:]))
    return texts


def stream_sample(
    model: object,
    vocab: Vocab,
    level: str,
    *,
    prime: str = "",
    length: int = 200,
    cfg: SamplingConfig | None = None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
) -> Iterator[str]:
    """One sample as :func:`generate` draws it, yielded piece by piece as it is drawn: first the
    prime's text, then the text each new token adds (a token may add nothing yet, e.g. a word
    level ``<eos>`` closing a line is its newline). ``"".join`` of the pieces is exactly
    ``generate(model, vocab, level, prime=prime, length=length, cfg=cfg, seed=seed,
    dtype=dtype)[0]``: the same steps, picks and random draws, one row.

    Nothing is computed before the first ``next``; a consumer that stops iterating (closes the
    generator) stops the decoding at the next token.
    """
    cfg = cfg or SamplingConfig()
    if length < 1:
        raise ConfigError(f"length must be positive, got {length}")
    if hasattr(model, "eval"):
        model.eval()
    tokenizer = make_tokenizer(level)
    start = prime_tokens(prime, level)
    context = [boundary_token(vocab, level)] + vocab.encode(start)
    stepper = make_stepper(model, dtype=dtype)
    device = stepper.device
    generator = make_generator(seed, device)
    allowed = None
    if level == "char" and len(vocab) > 1:  # as generate: a character model never writes <unk>
        allowed = torch.ones(len(vocab), dtype=torch.bool, device=device)
        allowed[vocab.unk_id] = False
    shown = tokenizer.detokenize(start)
    yield shown
    words = list(start)
    with torch.inference_mode():  # entered per step: never held across a yield
        logits, state = stepper.start(torch.tensor(context, device=device), 1)
        seen = cfg.seen_tokens(context[1:], 1, logits.size(-1), device)
    for t in range(length):
        with torch.inference_mode():
            repeats = None if seen is None else seen.seen
            nxt = pick(logits, cfg, generator, allowed, repeats)  # (1,)
            if seen is not None:
                seen.push(nxt)
        words.append(vocab.itos[int(nxt[0])])
        full = tokenizer.detokenize(words)
        piece, shown = full[len(shown) :], full
        yield piece
        if t + 1 < length:
            with torch.inference_mode():
                logits, state = stepper.step(nxt, state)


def find_degenerate_samples(
    texts: Sequence[str], prime: str, level: str
) -> list[Degeneration | None]:
    """For each text :func:`generate` returned for ``prime``: how its generated part (the text
    after the prime) collapsed into whitespace or a loop, or None (see
    :func:`rnnlab.generation.repetition.find_degeneration`)."""
    k = len(make_tokenizer(level).detokenize(prime_tokens(prime, level)))
    return [find_degeneration(text[k:]) for text in texts]


def sequence_logprob(model: object, context: Sequence[int], tokens: Sequence[int]) -> float:
    """:math:`\\log p(\\text{tokens} \\mid \\text{context})` under ``model``, step by step."""
    stepper = make_stepper(model)
    device = stepper.device
    total = 0.0
    with torch.inference_mode():
        logits, state = stepper.start(torch.tensor(list(context), device=device), 1)
        for token in tokens:
            total += float(torch.log_softmax(logits.double(), dim=-1)[0, token])
            logits, state = stepper.step(torch.tensor([token], device=device), state)
    return total
