"""Truncated back-propagation through time (TBPTT): the batch layout and its windows.

The token stream ``w_0 w_1 ... w_{N-1}`` is cut into ``B`` equal columns, each a contiguous
piece of the stream (the remainder ``N mod B`` is dropped), and stacked side by side into a
``(T, B)`` matrix with ``T = N // B``. An epoch walks down the rows in windows of ``tau`` rows.
Window ``k`` starting at row ``t`` feeds rows ``t .. t+tau-1`` as inputs and asks for rows
``t+1 .. t+tau`` as targets (the next token, one row down). Column ``b``'s hidden state at the
end of one window is the initial state of the next window, since the next window continues
the same piece of text; it is detached there so gradients stop at the boundary (the model /
trainer does that, in one named place, not this module)::

    stream  w0 w1 w2 w3 w4 w5 | w6 w7 w8 w9 w10 w11 | w12 w13 w14 w15 w16 w17 | w18 (dropped)
            '-- column 0 ----'   '---- column 1 -----'   '------- column 2 ------'

    batchify(stream, B=3) -> data of shape (T=6, B=3); windows with tau=2:

                b=0  b=1  b=2    window 0        window 1        window 2 (last, L=1)
       row 0    w0   w6   w12    input
       row 1    w1   w7   w13    input  target
       row 2    w2   w8   w14           target   input
       row 3    w3   w9   w15                    input  target
       row 4    w4   w10  w16                           target   input
       row 5    w5   w11  w17                                    target
                |    |    |
                v    v    v    hidden state h_b flows down its own column:
                               window 0 -> window 1 -> window 2 (detached at each boundary)

Every token of rows ``0 .. T-2`` is an input exactly once per epoch and every token of rows
``1 .. T-1`` a target exactly once; the last window is shorter when ``tau`` does not divide
``T - 1``.

**Variable-length windows** (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM
Language Models", AWD-LSTM): each window draws its base length ``tau`` with probability 0.95
(else ``tau / 2``), then its length ``L ~ Normal(base, sigma)`` with ``sigma = 5`` (shrunk to
``tau / 4`` when ``tau < 20``, so small windows are not swamped by noise), rounded and clipped
to ``[min_len, max_len]`` (see :func:`variable_bounds`). The window start points then shift from
epoch to epoch, so every token gets to see different amounts of left context. Because a
window of ``L`` steps sums ``L`` per-step losses, the trainer scales the learning rate by
``L / tau`` (:func:`lr_scale`) so that short windows do not take outsized steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from rnnlab.errors import ConfigError, DataError

VARIABLE_STD = 5.0  # standard deviation of the window length (AWD-LSTM), for bptt >= 20
VARIABLE_P_FULL = 0.95  # probability that the base length is tau rather than tau / 2


class Window(NamedTuple):
    """One TBPTT window: ``inputs`` rows ``offset .. offset+length-1``, ``targets`` one row
    further down. ``index`` counts windows within the epoch (what a resume restarts from)."""

    index: int
    offset: int
    length: int
    inputs: torch.Tensor  # (L, B)
    targets: torch.Tensor  # (L, B)


def check_enough(n_tokens: int, batch_size: int, bptt: int) -> None:
    """Raise :class:`DataError` unless ``n_tokens`` fill at least one full window of ``bptt``
    input rows (plus one target row) in every one of ``batch_size`` columns."""
    if batch_size < 1 or bptt < 1:
        raise ConfigError(f"batch size and bptt must be positive, got {batch_size} and {bptt}")
    needed = batch_size * (bptt + 1)
    if n_tokens < needed:
        raise DataError(
            f"the text is too short: {n_tokens:,} tokens cannot fill one batch of {batch_size} "
            f"columns x {bptt}+1 rows ({needed:,} tokens); use a smaller --batch-size or "
            "--bptt, or more text"
        )


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D id stream (N,) into ``batch_size`` contiguous columns: (N // B, B).

    Column ``b`` holds tokens ``b*T .. (b+1)*T - 1`` with ``T = N // B``; the last ``N mod B``
    tokens are dropped. At least two rows are required (one input row and its target row);
    use :func:`check_enough` to require a full training window.
    """
    if ids.dim() != 1:
        raise ConfigError(f"batchify expects a 1-D id stream, got shape {tuple(ids.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    n_rows = ids.numel() // batch_size
    if n_rows < 2:
        raise DataError(
            f"the text is too short: {ids.numel():,} tokens give fewer than 2 rows for "
            f"{batch_size} columns; use a smaller --batch-size or more text"
        )
    return ids[: n_rows * batch_size].view(batch_size, n_rows).t().contiguous()  # (T, B)


def column_slice(data: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s own contiguous block of columns of ``data`` (T, B): (T, B / world_size).

    For data-parallel training each process takes ``B / world_size`` neighbouring columns, so
    together the ranks cover every column exactly once.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    n_cols = data.shape[1]
    if n_cols % world_size:
        raise ConfigError(
            f"batch size {n_cols} is not divisible by the {world_size} processes; "
            f"use a --batch-size that is a multiple of {world_size}"
        )
    per_rank = n_cols // world_size
    return data[:, rank * per_rank : (rank + 1) * per_rank]  # (T, B / world)


def variable_bounds(bptt: int) -> tuple[int, int]:
    """``(min_len, max_len)`` of variable windows for ``bptt`` (see :func:`variable_std`).

    ``min_len = clip(bptt // 2, 1, 5)``: 5 as in AWD-LSTM, smaller for tiny ``bptt`` so that a
    short window is still possible; ``max_len = min(bptt + 20, 2 * bptt)``: four standard
    deviations above ``bptt`` for usual sizes (bounds memory), at most twice ``bptt`` for small
    ones.
    """
    if bptt < 1:
        raise ConfigError(f"bptt must be positive, got {bptt}")
    return max(1, min(5, bptt // 2)), max(1, min(bptt + 20, 2 * bptt))


def variable_std(bptt: int) -> float:
    """Standard deviation of variable window lengths: ``min(5, bptt / 4)``. AWD-LSTM's 5 for
    ``bptt >= 20``; proportionally less below, so that e.g. ``bptt = 1`` stays at 1."""
    return min(VARIABLE_STD, bptt / 4)


def window_lengths(
    n_rows: int, bptt: int, *, variable: bool = False, seed: int = 0, epoch: int = 0
) -> list[int]:
    """Window lengths of one epoch over a (n_rows, B) batch; they sum to ``n_rows - 1``.

    Fixed: ``bptt`` each, the last one shorter if ``bptt`` does not divide ``n_rows - 1``.
    Variable (AWD-LSTM): ``base = bptt`` w.p. 0.95 else ``bptt / 2``,
    ``L = round(Normal(base, variable_std(bptt)))`` clipped to :func:`variable_bounds`, the last
    one cut to what is left. Drawn from a private NumPy generator seeded by ``(seed, epoch)``,
    so the same arguments always give the same windows (a resumed run regenerates them
    exactly) and the global RNG is untouched.
    """
    if bptt < 1:
        raise ConfigError(f"bptt must be positive, got {bptt}")
    total = n_rows - 1  # input rows; the last row is only a target
    if total < 1:
        return []
    if not variable:
        lengths = [bptt] * (total // bptt)
        if total % bptt:
            lengths.append(total % bptt)
        return lengths
    rng = np.random.default_rng([seed, epoch])
    lo, hi = variable_bounds(bptt)
    std = variable_std(bptt)
    lengths = []
    done = 0
    while done < total:
        base = bptt if rng.random() < VARIABLE_P_FULL else bptt / 2
        length = int(np.clip(round(rng.normal(base, std)), lo, hi))
        length = min(length, total - done)
        lengths.append(length)
        done += length
    return lengths


def iter_windows(data: torch.Tensor, lengths: Sequence[int], start: int = 0) -> Iterator[Window]:
    """Yield the windows of ``data`` (T, B) with the given ``lengths``, in order.

    ``start`` is the index of the first window to yield: windows ``0 .. start-1`` are skipped
    (their offsets still count), which resumes an interrupted epoch exactly.
    """
    if sum(lengths) > data.shape[0] - 1:
        raise ConfigError(
            f"window lengths sum to {sum(lengths)} but the data has only {data.shape[0] - 1} "
            "input rows"
        )
    offset = 0
    for index, length in enumerate(lengths):
        if index >= start:
            yield Window(
                index,
                offset,
                length,
                data[offset : offset + length],  # (L, B)
                data[offset + 1 : offset + 1 + length],  # (L, B)
            )
        offset += length


def lr_scale(length: int, bptt: int) -> float:
    """Learning-rate factor for a window of ``length`` steps when the nominal one is ``bptt``:
    ``length / bptt`` (AWD-LSTM), 1 for fixed-length windows."""
    return length / bptt
