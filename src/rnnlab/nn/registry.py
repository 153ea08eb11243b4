"""The cell registry: every recurrent cell rnnlab builds by name, each one's facts declared once.

A cell name (``--cell``, ``LanguageModelConfig.cell``, a checkpoint's config) stands for a layer
family (:class:`rnnlab.nn.recurrent.RNN`, ``GRU`` or ``LSTM``) with fixed options. What the
rest of the package needs to know about a cell, it reads here: how to build it
(:func:`rnnlab.nn.recurrent.make_recurrent`), how many gate blocks and states it has (parameter
counts, memory estimates, the one-step decoder), whether torch has a fused kernel for its
equations, and the names the command line lists.

Torch-free and import-light on purpose: the command line's ``--help`` and configuration checks
read it without building anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from rnnlab.errors import ConfigError

FAMILIES = ("rnn", "gru", "lstm")
"""The layer families, one per class of :mod:`rnnlab.nn.recurrent` (and of :mod:`rnnlab.nn.cells`)."""


@dataclass(frozen=True)
class CellSpec:
    """One named cell: a layer family with fixed options.

    Attributes:
        name: the name users type (``--cell``), stored in every model config.
        family: "rnn", "gru" or "lstm": which layer class computes it.
        gates: G, the stacked gate blocks: ``weight_ih`` is (G*H, I) and ``weight_hh`` (G*H, H).
        states: 1 (h) or 2 (h and the LSTM's memory cell c) tensors of state per layer.
        nonlinearity: the RNN's activation, "tanh" or "relu"; None for the gated families.
        reset: the GRU's reset placement, "after" U h (torch, cuDNN) or "before" it (Cho et al.
            2014); None for the other families.
        forget_bias: the LSTM's forget-gate bias offset at initialisation; None for the others.
        fused: torch has a fused kernel (``torch._VF``, cuDNN on a GPU) for exactly these
            equations, so ``impl="auto"`` uses it; otherwise the layer runs its explicit loop.
        description: one line: what the cell is, with its paper.
    """

    name: str
    family: str
    gates: int
    states: int
    nonlinearity: str | None
    reset: str | None
    forget_bias: float | None
    fused: bool
    description: str

    def layer_options(self) -> dict[str, Any]:
        """The keyword arguments of the family's layer class that make this cell (the options
        that do not apply to the family are left out)."""
        options = {
            "nonlinearity": self.nonlinearity,
            "reset": self.reset,
            "forget_bias": self.forget_bias,
        }
        return {key: value for key, value in options.items() if value is not None}


def _rnn(name: str, nonlinearity: str, description: str) -> CellSpec:
    return CellSpec(name, "rnn", 1, 1, nonlinearity, None, None, True, description)


def _gru(name: str, reset: str, fused: bool, description: str) -> CellSpec:
    return CellSpec(name, "gru", 3, 1, None, reset, None, fused, description)


def _lstm(name: str, forget_bias: float, description: str) -> CellSpec:
    return CellSpec(name, "lstm", 4, 2, None, None, forget_bias, True, description)


CELLS: Mapping[str, CellSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _rnn("rnn", "tanh", "Elman RNN, h = tanh(W x + U h + b) (Elman 1990)"),
            _rnn(
                "rnn-relu",
                "relu",
                "Elman RNN with relu for tanh (Le et al. 2015, without their identity init)",
            ),
            _gru(
                "gru",
                "after",
                True,
                "GRU (Cho et al. 2014) with the reset gate after U h, as torch and cuDNN run it",
            ),
            _gru(
                "gru-reset-before",
                "before",
                False,
                "GRU with the reset gate on h before U h, the original form of Cho et al. 2014",
            ),
            _lstm("lstm", 0.0, "LSTM (Hochreiter & Schmidhuber 1997), torch's initialisation"),
            _lstm(
                "lstm-fb1",
                1.0,
                "LSTM with the forget-gate bias started at 1 (Jozefowicz et al. 2015)",
            ),
        )
    }
)
"""Every cell by name, in the documented order (the order ``--help`` lists them in)."""

CELL_NAMES: tuple[str, ...] = tuple(CELLS)
"""The cell names, in the documented order."""


def get_cell(name: str) -> CellSpec:
    """The cell called ``name``; ConfigError naming the valid ones if there is none."""
    spec = CELLS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"unknown cell {name!r}; choose one of {', '.join(CELL_NAMES)}")
    return spec


def find_cell(
    family: str, *, nonlinearity: str | None = None, reset: str | None = None
) -> CellSpec:
    """The first registered cell of ``family`` with these equation options (None: any).

    A layer built directly (``GRU(reset="before")``) uses it to find the cell whose equations
    it computes; the forget bias is an initialisation, not an equation, and plays no part.
    """
    for spec in CELLS.values():
        if (
            spec.family == family
            and nonlinearity in (None, spec.nonlinearity)
            and reset in (None, spec.reset)
        ):
            return spec
    raise ConfigError(
        f"no registered {family} cell with nonlinearity={nonlinearity!r}, reset={reset!r}"
    )


def cell_help(names: Iterable[str] = CELL_NAMES) -> str:
    """The cells as the command line's help lists them: ``rnn, rnn-relu, gru, ...``."""
    return ", ".join(names)
