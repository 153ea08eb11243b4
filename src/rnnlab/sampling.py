"""Sampling from a language model: temperature, top-k, top-p (nucleus), greedy; priming text.

Generation runs one step at a time with the hidden state carried, so the prefix is read once:

    prime ──> model(prime, state0) ──> state, logits ──> pick w1 ──> model(w1, state) ──> ... wN

Each pick draws from softmax(logits / T), restricted to the k most likely tokens (top-k) and/or
to the smallest set whose probability reaches p (top-p, Holtzman et al. 2020). ``temperature=0``
is greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rnnlab.errors import ConfigError
from rnnlab.model import LanguageModel
from rnnlab.vocab import Vocab, make_tokenizer


@dataclass
class SamplingConfig:
    """How the next token is picked: ``temperature`` 0 is greedy."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Scaled logits (..., V) with the tokens outside top-k / top-p set to -inf."""
    logits = logits.float() / max(cfg.temperature, 1e-8)
    if cfg.top_k is not None and cfg.top_k < logits.size(-1):
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # keep a token when the mass strictly before it is < p: the smallest set reaching p
        before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = before >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> Tensor:
    """One token id per row of ``logits`` (B, V)."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits, cfg), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def boundary_token(vocab: Vocab, level: str) -> int:
    """The symbol that separates training lines: the context before any prime."""
    for token in ("<eos>", "\n") if level == "word" else ("\n", "<eos>"):
        if token in vocab.stoi:
            return vocab.stoi[token]
    return vocab.unk_id


@torch.no_grad()
def generate(
    model: LanguageModel,
    vocab: Vocab,
    level: str,
    *,
    prime: str = "",
    length: int = 200,
    cfg: SamplingConfig | None = None,
    count: int = 1,
    seed: int | None = None,
) -> list[str]:
    """``count`` continuations of ``prime``, each ``length`` tokens long, decoded to text."""
    cfg = cfg or SamplingConfig()
    if length < 1 or count < 1:
        raise ConfigError(f"length and count must be positive, got {length} and {count}")
    model.eval()
    device = next(model.parameters()).device
    tokenizer = make_tokenizer(level)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    prime_ids = [boundary_token(vocab, level)]
    prime_tokens = tokenizer.tokenize(prime) if prime else []
    if level == "word" and prime_tokens and prime_tokens[-1] == "<eos>" and not prime.endswith("\n"):
        prime_tokens = prime_tokens[:-1]  # a prime is an unfinished line
    prime_ids += vocab.encode(prime_tokens)
    x = torch.tensor(prime_ids, device=device).unsqueeze(1).expand(-1, count)  # (P, count)
    logits, state = model(x, model.init_state(count))
    last = logits[-1]  # (count, V)
    out = torch.empty(length, count, dtype=torch.long, device=device)
    for t in range(length):
        nxt = pick(last, cfg, generator)
        out[t] = nxt
        logits, state = model(nxt.unsqueeze(0), state)
        last = logits[0]
    texts = []
    for column in out.t().tolist():
        texts.append(tokenizer.detokenize(prime_tokens + vocab.decode(column)))
    return texts
