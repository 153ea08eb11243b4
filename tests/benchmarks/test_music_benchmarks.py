"""The Chung et al. 2014 benchmarks (``benchmarks/music_conventions.py``,
``benchmarks/chung_table.py``): each scoring convention against a closed form, and the table's
differences and grouping on made-up rows."""

from __future__ import annotations

import math

import pytest
import torch


class Half(torch.nn.Module):
    """Every note on with probability 1/2: NLL 88 ln 2 per scored step, whatever is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, frames: torch.Tensor, state=None):
        return frames.new_zeros(*frames.shape[:2], 88) + self.w, state


def pieces(lengths: list[int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(n, 88, generator=g) < 0.05).float() for n in lengths]


def test_windows_score_exactly_the_pieces_steps(bench) -> None:
    mc = bench("music_conventions")
    ps = pieces([1, 2, 200, 201, 450])
    cut = mc.windows(ps, 200)
    assert sum(w.size(0) - 1 for w in cut) == sum(p.size(0) - 1 for p in ps)
    # the targets of the windows, in order, are the pieces' targets
    assert torch.equal(torch.cat([w[1:] for w in cut]), torch.cat([p[1:] for p in ps]))
    assert max(w.size(0) for w in cut) == 201


def test_every_convention_of_the_half_model_is_88_ln_2(bench) -> None:
    mc = bench("music_conventions")
    from rnnlab.data.rolls import RollData, with_start_frame

    split = pieces([3, 250, 17, 401])
    data = RollData("made-up", split, split, split, "")
    figures = mc.conventions(Half(), data, with_start_frame(data), "test")
    assert set(figures) == {
        "per_step", "per_piece", "windows_200", "start_frame", "one_stream", "padding_counted"
    }  # fmt: skip
    for name, value in figures.items():
        assert value == pytest.approx(88 * math.log(2), rel=1e-6), name  # float32 BCE


def test_padding_counted_divides_by_every_padded_position(bench) -> None:
    mc = bench("music_conventions")

    class Silent(torch.nn.Module):  # near-certain silence: padding costs almost nothing
        def forward(self, frames, state=None):
            return frames.new_full((*frames.shape[:2], 88), -30.0), state

    ps = [torch.zeros(5, 88), torch.zeros(11, 88)]
    ps[1][3, 40] = 1.0  # one note: the only real cost, 30 nats
    value = mc.padding_counted(Silent(), ps, batch=8)
    assert value == pytest.approx(30 / (2 * 10), rel=1e-6)  # 2 pieces x 10 padded steps


def test_chung_table_rows_and_differences(bench) -> None:
    ct = bench("chung_table")
    row = {"hidden": 41, "params": 19809, "lr": 2.5e-3, "train_nll": 3.5, "epochs": 120,
           "best_epoch": 100, "wall_time_s": 240.0}  # fmt: skip
    rows = [
        {**row, "cell": "gru", "seed": s, "valid_nll": 3.9, "test_nll": t}
        for s, t in ((1, 3.90), (2, 3.94))
    ] + [{**row, "cell": "gru", "hidden": 174, "seed": 1, "valid_nll": 3.3, "test_nll": 3.3}]
    text = ct.table({"nottingham": rows})
    lines = text.splitlines()[2:]
    assert len(lines) == 2  # the larger run of the same cell gets its own row
    assert "| 41 |" in lines[0] and "**3.92 ± 0.03**" in lines[0] and "+0.69" in lines[0]
    assert "(2.79)" in lines[0] and "120 (100)" in lines[0] and "| 4.0 | 2.00 |" in lines[0]
    assert "| 174 |" in lines[1] and "+0.07" in lines[1]
