"""LanguageModel: shapes, state carrying, weight tying, parameter counts, closed-form perplexity."""

import math

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.evaluation.text import evaluate
from rnnlab.models.base import detach_state
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.nn.recurrent import CELL_NAMES


def small(cell: str = "lstm", **kw) -> LanguageModel:
    torch.manual_seed(0)
    cfg = dict(vocab_size=13, cell=cell, embed_size=8, hidden_size=8, num_layers=2)
    cfg.update(kw)
    return LanguageModel(LanguageModelConfig(**cfg))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_forward_shapes_and_state_carry(cell):
    model = small(cell).eval()
    tokens = torch.randint(0, 13, (12, 3))
    whole, _ = model(tokens)
    assert whole.shape == (12, 3, 13)
    first, state = model(tokens[:5])
    second, _ = model(tokens[5:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second]), whole)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_formula(cell, tie):
    model = small(cell, tie_weights=tie)
    assert model.config.num_parameters() == model.num_parameters()


def test_tied_weights_are_one_tensor():
    model = small(tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    with pytest.raises(ConfigError, match="embed size"):
        LanguageModelConfig(vocab_size=10, embed_size=4, hidden_size=8, tie_weights=True)


def test_forget_bias_survives_uniform_init():
    model = small("lstm-fb1", init_range=0.05)
    for layer in range(2):
        b = getattr(model.rnn, f"bias_ih_l{layer}")
        assert b[8:16].min() > 0.9  # 1.0 + U(-0.05, 0.05)
        assert b[:8].abs().max() <= 0.05 and b[16:].abs().max() <= 0.05


@pytest.mark.parametrize(
    "kw",
    [
        dict(hidden_size=0),
        dict(num_layers=-1),
        dict(dropout=1.0),
        dict(cell="transformer"),
        dict(init_range=0.0),
    ],
)
def test_bad_configs_are_refused(kw):
    with pytest.raises(ConfigError):
        LanguageModelConfig(vocab_size=10, **kw)


def test_uniform_logits_give_perplexity_equal_to_vocabulary_size():
    """Closed form: p = 1/V for every token, so cross-entropy = ln V and perplexity = V."""
    model = small()
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    ids = torch.randint(0, 13, (500,))
    result = evaluate(model, ids, batch_size=4, bptt=7)
    assert result.tokens == 499
    assert result.loss == pytest.approx(math.log(13), rel=1e-6)
    assert result.perplexity == pytest.approx(13.0, rel=1e-6)


def test_untrained_perplexity_is_near_vocabulary_size():
    model = small(vocab_size=50)
    result = evaluate(model, torch.randint(0, 50, (2000,)), batch_size=5)
    assert 40 < result.perplexity < 62
