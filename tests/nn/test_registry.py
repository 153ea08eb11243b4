"""rnnlab.nn.registry: every registered cell builds, and its declared facts match what is built."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from torch import nn

import rnnlab
from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.generation.fast_step import FastStepper
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.nn import numpy_ref, recurrent, registry
from rnnlab.nn.recurrent import GRU, LSTM, RNN, make_recurrent
from rnnlab.nn.registry import CELL_NAMES, CELLS, FAMILIES, cell_help, find_cell, get_cell

I, H, L, V, E = 5, 7, 3, 11, 6
DOCUMENTED = ("rnn", "rnn-relu", "gru", "gru-reset-before", "lstm", "lstm-fb1")
LAYER = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
TORCH_LAYER = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}  # an independent source of shapes


def test_names_in_documented_order_everywhere() -> None:
    assert CELL_NAMES == DOCUMENTED == tuple(CELLS)
    assert recurrent.CELL_NAMES is CELL_NAMES and rnnlab.CELL_NAMES is CELL_NAMES
    assert all(name == spec.name for name, spec in CELLS.items())
    assert {spec.family for spec in CELLS.values()} == set(FAMILIES)


def test_specs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CELLS["gru"].gates = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        CELLS["gru2"] = CELLS["gru"]  # type: ignore[index]


@pytest.mark.parametrize("name", CELL_NAMES)
def test_every_cell_builds_as_declared(name: str) -> None:
    spec = get_cell(name)
    layer = make_recurrent(name, I, H, num_layers=L)
    assert type(layer) is LAYER[spec.family] and layer.family == spec.family
    assert (layer.num_gates, layer.num_states) == (spec.gates, spec.states)
    for option, value in spec.layer_options().items():
        assert getattr(layer, option) == value
    # G*H rows: 4H for an LSTM, 3H for a GRU, H for an RNN, the shapes torch.nn gives them
    reference = TORCH_LAYER[spec.family](I, H, num_layers=L)
    ours = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert layer.weight_ih_l0.shape == (spec.gates * H, I)
    assert layer.weight_hh_l1.shape == (spec.gates * H, H)
    state = layer.zero_state(2)
    assert len(state if isinstance(state, tuple) else (state,)) == spec.states


@pytest.mark.parametrize("name", CELL_NAMES)
def test_parameter_counts_agree(name: str) -> None:
    spec = get_cell(name)
    formula = sum(spec.gates * H * ((I if k == 0 else H) + H + 2) for k in range(L))
    layer = make_recurrent(name, I, H, num_layers=L)
    assert sum(p.numel() for p in layer.parameters()) == formula

    config = LanguageModelConfig(vocab_size=V, cell=name, embed_size=E, hidden_size=H, num_layers=L)
    model = LanguageModel(config)
    whole = V * E + sum(spec.gates * H * ((E if k == 0 else H) + H + 2) for k in range(L))
    whole += V * H + V
    assert config.num_parameters() == model.num_parameters() == whole
    assert sum(p.numel() for p in model.parameters()) == whole


@pytest.mark.parametrize("name", CELL_NAMES)
def test_fused_flag_is_the_layers_choice(name: str) -> None:
    spec = get_cell(name)
    layer = make_recurrent(name, I, H)
    assert layer.equations().family == spec.family
    assert layer.equations().fused is spec.fused
    assert layer.uses_fused() is spec.fused  # impl="auto"
    assert make_recurrent(name, I, H, impl="explicit").uses_fused() is False
    if spec.fused:
        assert make_recurrent(name, I, H, impl="fused").uses_fused() is True
    else:
        with pytest.raises(ConfigError, match="no fused kernel"):
            make_recurrent(name, I, H, impl="fused")


def test_only_the_reset_before_gru_lacks_a_fused_kernel() -> None:
    assert [n for n, s in CELLS.items() if not s.fused] == ["gru-reset-before"]


def test_find_cell_identifies_a_layers_equations() -> None:
    assert find_cell("rnn", nonlinearity="relu").name == "rnn-relu"
    assert find_cell("gru", reset="before").name == "gru-reset-before"
    assert find_cell("gru").name == "gru"
    assert find_cell("lstm").name == "lstm"
    assert LSTM(I, H, forget_bias=1.0).equations().name == "lstm"  # an initialisation only
    with pytest.raises(ConfigError, match="no registered gru cell"):
        find_cell("gru", reset="sideways")


@pytest.mark.parametrize("name", CELL_NAMES)
def test_fast_stepper_reads_the_spec(name: str) -> None:
    spec = get_cell(name)
    config = LanguageModelConfig(vocab_size=V, cell=name, embed_size=E, hidden_size=H, num_layers=2)
    stepper = FastStepper(LanguageModel(config).eval())
    assert (stepper.kind, stepper.states_per_layer) == (spec.family, spec.states)
    assert len(stepper.init_state(3)) == 2 * spec.states


def test_numpy_reference_gate_counts() -> None:
    assert numpy_ref.CELL_KINDS == FAMILIES
    for spec in CELLS.values():
        assert numpy_ref.gate_count(spec.family) == spec.gates


@pytest.mark.parametrize("bad", ["transformer", "LSTM", "", None, ["lstm"]])
def test_unknown_cell_error_lists_the_names(bad: object) -> None:
    message = f"unknown cell {bad!r}; choose one of " + ", ".join(DOCUMENTED)
    with pytest.raises(ConfigError) as caught:
        get_cell(bad)  # type: ignore[arg-type]
    assert str(caught.value) == message
    with pytest.raises(ConfigError) as caught:
        LanguageModelConfig(cell=bad)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_help_lists_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    assert cell_help() == ", ".join(DOCUMENTED)
    for command, flag in (("train", "--cell CELL "), ("compare", "--cells CELLS ")):
        capsys.readouterr()
        assert main([command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        start = out.index(flag) + len(flag)
        entry = out[start : out.index(" --", start)]  # the flag's help, up to the next flag
        assert set(CELL_NAMES) <= set(re.findall(r"[a-z0-9-]+", entry)), entry


def test_descriptions_are_one_line_with_a_source() -> None:
    for spec in CELLS.values():
        assert spec.description and "\n" not in spec.description
        assert any(ch.isdigit() for ch in spec.description)  # a year: the paper


def test_registry_imports_nothing_heavy() -> None:
    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    light = {"__future__", "collections.abc", "dataclasses", "types", "typing", "rnnlab.errors"}
    assert imported <= light
