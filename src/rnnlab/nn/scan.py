"""One direction of one recurrent layer over a window, padded or packed, around a cell's step.

The cells' ``step`` functions (:mod:`rnnlab.nn.cells`) know nothing of sequences, padding or
direction. This module holds what goes around them. A *window* is a list of per-step inputs in
time order; step ``t`` holds ``n_t`` rows:

* padded input (T, B, F): every step holds all B rows (``x.unbind(0)``);
* packed input (a ``PackedSequence``'s data, (N, F), sequences sorted by decreasing length):
  step ``t`` holds the first ``n_t = batch_sizes[t]`` rows (``x.split(batch_sizes)``), so
  ``n_t`` never grows with ``t``.

:func:`scan_direction` steps only the active rows: at step ``t`` rows ``0 .. n_t - 1`` advance
and the others keep their state. Forward in time, a sequence that has ended keeps the state of
its own last step; backward in time (``reverse=True``), a sequence starts from its initial
state at its own last step. That is how torch's packed kernels define the final states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# step(state, *inputs_t) -> new state; state is a tuple of (n, H) tensors, h first
Step = Callable[..., tuple[Tensor, ...]]


def split_window(x: Tensor, batch_sizes: Sequence[int] | None) -> list[Tensor]:
    """A window's per-step tensors: ``x`` (T, B, F) when ``batch_sizes`` is None, else packed
    data (N, F) split into steps of ``batch_sizes[t]`` rows."""
    if batch_sizes is None:
        return list(x.unbind(0))  # T tensors (B, F); never x[t] (quadratic backward)
    return list(x.split(list(batch_sizes)))


def join_window(steps: Sequence[Tensor], packed: bool) -> Tensor:
    """Inverse of :func:`split_window`: (T, B, F) from padded steps, (N, F) from packed ones."""
    return torch.cat(list(steps)) if packed else torch.stack(list(steps))


def scan_direction(
    step: Step,
    inputs: Sequence[tuple[Tensor, ...]],
    state: tuple[Tensor, ...],
    reverse: bool = False,
    prev_h: list[Tensor] | None = None,
) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    """Run ``step`` over a window in one direction; only the active rows of each step advance.

    inputs: per time step (in time order), the tuple of tensors ``step`` takes after the state,
    each with the step's ``n_t`` active rows first. state: the initial state, (B, H) tensors.
    Returns the per-step outputs ``h_t`` (``n_t`` rows each, in time order) and the final state
    (B, H) of every row: its state after its last active step in this direction.
    If ``prev_h`` is a list, it receives, in time order, the detached ``h`` each step started
    from (its ``n_t`` rows): the factor of the recurrent weight's gradient.
    """
    batch = state[0].size(0)
    outputs: list[Tensor] = [state[0]] * len(inputs)  # placeholders, each overwritten below
    before: list[Tensor] = [state[0]] * len(inputs)
    order = range(len(inputs) - 1, -1, -1) if reverse else range(len(inputs))
    for t in order:
        rows = inputs[t][0].size(0)
        active = state if rows == batch else tuple(s[:rows] for s in state)
        if prev_h is not None:
            before[t] = active[0].detach()
        advanced = step(active, *inputs[t])
        outputs[t] = advanced[0]
        if rows == batch:
            state = advanced
        else:  # the rows past n_t have ended (forward) or not begun (reverse): unchanged
            state = tuple(
                torch.cat((new, old[rows:])) for new, old in zip(advanced, state, strict=True)
            )
    if prev_h is not None:
        prev_h.extend(before)
    return outputs, state
