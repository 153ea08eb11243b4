"""The TBPTT layout: columns, windows, coverage, variable lengths, resume, rank slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data.batching import (
    batchify,
    check_enough,
    column_slice,
    iter_windows,
    lr_scale,
    variable_bounds,
    window_lengths,
)
from rnnlab.errors import ConfigError, DataError


def test_batchify_columns_are_contiguous_pieces_of_the_stream() -> None:
    ids = torch.arange(19)
    data = batchify(ids, 3)
    assert data.shape == (6, 3) and data.is_contiguous()
    for b in range(3):
        assert torch.equal(data[:, b], ids[b * 6 : (b + 1) * 6])  # w18 is dropped


def test_batchify_refuses_too_short_streams() -> None:
    with pytest.raises(DataError, match="batch-size"):
        batchify(torch.arange(5), 3)  # one row only: no target
    with pytest.raises(ConfigError):
        batchify(torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(ConfigError):
        batchify(torch.arange(10), 0)


def test_check_enough_message_is_one_line_with_numbers() -> None:
    check_enough(32 * 36, 32, 35)
    with pytest.raises(DataError) as info:
        check_enough(1000, 32, 35)
    message = str(info.value)
    assert "\n" not in message
    assert "1,000" in message and "1,152" in message and "--bptt" in message


def test_fixed_window_lengths() -> None:
    assert window_lengths(11, 3) == [3, 3, 3, 1]
    assert window_lengths(10, 3) == [3, 3, 3]
    assert window_lengths(2, 35) == [1]
    assert window_lengths(1, 5) == []


def _epoch_pieces(data: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    windows = list(iter_windows(data, lengths))
    offset = 0
    for k, w in enumerate(windows):
        assert (w.index, w.offset, w.length) == (k, offset, lengths[k])
        assert w.inputs.shape == w.targets.shape == (w.length, data.shape[1])
        offset += w.length  # windows are back to back: each starts where the last one ended
    inputs = torch.cat([w.inputs for w in windows])
    targets = torch.cat([w.targets for w in windows])
    return inputs, targets


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 400),
    batch_size=st.integers(1, 8),
    bptt=st.integers(1, 40),
    variable=st.booleans(),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 50),
)
def test_every_token_once_per_epoch_and_targets_shifted(
    n: int, batch_size: int, bptt: int, variable: bool, seed: int, epoch: int
) -> None:
    if n // batch_size < 2:
        return
    ids = torch.arange(n)  # distinct ids: each token identifies its stream position
    data = batchify(ids, batch_size)
    lengths = window_lengths(data.shape[0], bptt, variable=variable, seed=seed, epoch=epoch)
    assert sum(lengths) == data.shape[0] - 1
    inputs, targets = _epoch_pieces(data, lengths)
    assert torch.equal(inputs, data[:-1]) and torch.equal(targets, data[1:])
    assert torch.equal(targets, inputs + 1)  # next token of the same column
    seen = torch.cat([inputs.reshape(-1), data[-1]])
    assert torch.equal(seen.sort().values, ids[: data.numel()])  # each kept token exactly once


def test_variable_windows_are_deterministic_per_seed_and_epoch() -> None:
    a = window_lengths(5000, 70, variable=True, seed=3, epoch=2)
    assert a == window_lengths(5000, 70, variable=True, seed=3, epoch=2)
    assert a != window_lengths(5000, 70, variable=True, seed=3, epoch=3)
    assert a != window_lengths(5000, 70, variable=True, seed=4, epoch=2)
    lo, hi = variable_bounds(70)
    assert all(lo <= length <= hi for length in a[:-1])
    assert 60 < np.mean(a) < 75  # about 0.95 * 70 + 0.05 * 35


def test_variable_windows_leave_global_rngs_alone() -> None:
    torch.manual_seed(0)
    expected_t = torch.rand(3)
    np.random.seed(0)
    expected_n = np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    window_lengths(1000, 35, variable=True, seed=1)
    assert torch.equal(torch.rand(3), expected_t)
    assert np.array_equal(np.random.rand(3), expected_n)


@pytest.mark.parametrize("bptt", [1, 2, 3, 5])
def test_variable_windows_with_small_bptt(bptt: int) -> None:
    lengths = window_lengths(500, bptt, variable=True, seed=0)
    lo, hi = variable_bounds(bptt)
    assert sum(lengths) == 499 and min(lengths) >= 1
    assert all(lo <= length <= hi for length in lengths[:-1])
    assert abs(np.mean(lengths) - bptt) < 0.25 * bptt + 0.2  # noise scaled down with bptt


def test_resume_from_a_window_index_skips_exactly_the_done_windows() -> None:
    data = batchify(torch.arange(1000), 4)
    lengths = window_lengths(data.shape[0], 7, variable=True, seed=9, epoch=1)
    full = list(iter_windows(data, lengths))
    resumed = list(iter_windows(data, lengths, start=5))
    assert [w.index for w in resumed] == [w.index for w in full[5:]]
    for a, b in zip(resumed, full[5:], strict=True):
        assert a.offset == b.offset and torch.equal(a.inputs, b.inputs)
    assert list(iter_windows(data, lengths, start=len(lengths))) == []


def test_iter_windows_refuses_lengths_longer_than_the_data() -> None:
    data = batchify(torch.arange(40), 4)  # 10 rows -> 9 input rows
    with pytest.raises(ConfigError):
        list(iter_windows(data, [5, 5]))


def test_carried_state_across_windows_equals_one_long_pass() -> None:
    """With the state carried (and detached) from window to window, the layout gives each
    column exactly the outputs of one uninterrupted pass over that column (torch.nn.LSTM)."""
    torch.manual_seed(0)
    vocab, batch = 11, 3
    data = batchify(torch.randint(vocab, (200,)), batch)
    embed, lstm = torch.nn.Embedding(vocab, 5), torch.nn.LSTM(5, 6)
    with torch.no_grad():
        whole, _ = lstm(embed(data[:-1]))
        state, pieces = None, []
        for w in iter_windows(data, window_lengths(data.shape[0], 7, variable=True, seed=2)):
            out, state = lstm(embed(w.inputs), state)
            state = tuple(s.detach() for s in state)
            pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces), whole)


def test_column_slice_splits_columns_between_ranks() -> None:
    data = batchify(torch.arange(120), 6)
    parts = [column_slice(data, r, 3) for r in range(3)]
    assert all(p.shape == (20, 2) for p in parts)
    assert torch.equal(torch.cat(parts, dim=1), data)
    with pytest.raises(ConfigError, match="multiple of 4"):
        column_slice(data, 0, 4)
    with pytest.raises(ConfigError):
        column_slice(data, 3, 3)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(8, 400),
    per_rank=st.integers(1, 4),
    world=st.integers(1, 4),
    bptt=st.integers(1, 12),
    variable=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_rank_slices_of_every_window_are_the_windows_of_rank_slices(
    n: int, per_rank: int, world: int, bptt: int, variable: bool, seed: int
) -> None:
    """Data parallelism splits each window by columns: rank r's windows (over its own columns)
    are exactly its columns of the combined windows, and the ranks together cover each window
    once, so every rank steps through the same windows in the same order."""
    batch = per_rank * world
    if n // batch < 2:
        return
    data = batchify(torch.arange(n), batch)
    lengths = window_lengths(data.shape[0], bptt, variable=variable, seed=seed)
    full = list(iter_windows(data, lengths))
    ranks = [list(iter_windows(column_slice(data, r, world), lengths)) for r in range(world)]
    for k, w in enumerate(full):
        parts = [windows[k] for windows in ranks]
        assert all((p.index, p.offset, p.length) == (w.index, w.offset, w.length) for p in parts)
        assert torch.equal(torch.cat([p.inputs for p in parts], dim=1), w.inputs)
        assert torch.equal(torch.cat([p.targets for p in parts], dim=1), w.targets)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(4, 300), batch=st.integers(1, 4), bptt=st.integers(1, 9), data=st.data())
def test_resuming_at_any_window_gives_the_rest_of_the_epoch(n, batch, bptt, data) -> None:
    if n // batch < 2:
        return
    ids = batchify(torch.arange(n), batch)
    lengths = window_lengths(ids.shape[0], bptt, variable=True, seed=n)
    start = data.draw(st.integers(0, len(lengths)))
    full = list(iter_windows(ids, lengths))
    resumed = list(iter_windows(ids, lengths, start=start))
    assert [w.index for w in resumed] == list(range(start, len(lengths)))
    for a, b in zip(resumed, full[start:], strict=True):
        assert a.offset == b.offset and torch.equal(a.inputs, b.inputs)
        assert torch.equal(a.targets, b.targets)


def test_lr_scale() -> None:
    assert lr_scale(35, 35) == 1.0
    assert lr_scale(70, 35) == 2.0
    assert lr_scale(7, 70) == pytest.approx(0.1)
