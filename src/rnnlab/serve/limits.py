"""What one server will do at once and per request: the safety limits of ``rnnlab serve``.

Every limit answers at once when it is reached: a request over a size limit gets 413 or 422,
a model call that finds every slot taken gets 503 (with ``Retry-After``), and more API requests
in flight than :attr:`Limits.max_requests` get 429. Nothing waits in a queue.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The limits of one server (the ``rnnlab serve`` flags set the first few)."""

    max_generations: int = 2  # model calls (generate, poem) running at once
    max_scores: int = 2  # scoring calls running at once
    max_requests: int = 64  # API requests in flight at once, all kinds
    max_body_bytes: int = 64 * 1024  # a request body
    max_length: int = 1000  # tokens one generation may draw
    max_count: int = 4  # samples or poems per request
    max_candidates: int = 16  # poems drawn per poem asked for
    max_prime_chars: int = 2000  # the prime of a generation
    max_score_tokens: int = 5000  # tokens of a text to score
    max_top: int = 10  # alternatives shown per scored token
    threads: int = 1  # torch threads each model call uses

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {name} must be a positive integer, got {value!r}")


def default_threads(max_calls: int) -> int:
    """torch threads per model call so that ``max_calls`` calls at once use the CPU's cores
    (at least one each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, max_calls))


class Slots:
    """A counter of ``size`` slots taken without waiting: :meth:`try_take` is True and takes
    one when one is free, else False at once. Thread-safe: a worker thread gives its slot back
    when its model call really ends."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def try_take(self) -> bool:
        with self._lock:
            if self._used >= self.size:
                return False
            self._used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            if self._used < 1:
                raise RuntimeError("a slot given back twice")
            self._used -= 1
