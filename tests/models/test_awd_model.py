"""A text model with AWD-LSTM's regularisers: the config's checks, evaluation equal to the
plain model with the same weights, training masks drawn, the hidden outputs returned."""

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import AdaptiveLanguageModel, LanguageModel

AWD = dict(
    dropout_input=0.4, dropout_hidden=0.3, dropout_output=0.4, dropout_embed=0.1, weight_drop=0.5
)


def cfg(**kw):
    base = dict(vocab_size=30, embed_size=8, hidden_size=8, num_layers=2, tie_weights=True)
    return LanguageModelConfig(**{**base, **kw})


def test_config_checks_the_rates():
    assert cfg().awd_options() == {}
    assert cfg(**AWD).awd_options() == AWD
    with pytest.raises(ConfigError, match="--weight-drop must be in"):
        cfg(weight_drop=1.0)
    with pytest.raises(ConfigError, match="--dropout-input must be a number"):
        cfg(dropout_input="0.3")
    with pytest.raises(ConfigError, match="set one of them to 0"):
        cfg(dropout=0.2, dropout_hidden=0.3)
    with pytest.raises(ConfigError, match="piano rolls"):
        LanguageModelConfig(vocab_size=88, head="sigmoid", embed_size=0, weight_drop=0.5)
    # a run.json written before these fields existed still loads, with them off
    old = {k: v for k, v in cfg().to_dict().items() if k not in AWD}
    assert LanguageModelConfig.from_dict(old).awd_options() == {}


@pytest.mark.parametrize(
    "model_cls,head", [(LanguageModel, "softmax"), (AdaptiveLanguageModel, "adaptive")]
)
def test_eval_is_the_plain_model_and_training_draws_masks(model_cls, head):
    torch.manual_seed(0)
    awd = model_cls(cfg(head=head, **AWD))
    plain = model_cls(cfg(head=head))
    plain.load_state_dict(awd.state_dict())
    assert set(awd.state_dict()) == set(plain.state_dict())  # same names: inference loads it
    tokens = torch.randint(0, 30, (6, 3))
    targets = torch.randint(0, 30, (6, 3))
    awd.eval()
    plain.eval()
    a, _ = awd(tokens, targets=targets)
    b, _ = plain(tokens, targets=targets)
    assert torch.equal(a, b)
    awd.train()
    torch.manual_seed(1)
    c, _ = awd(tokens, targets=targets)
    torch.manual_seed(2)
    d, _ = awd(tokens, targets=targets)
    assert not torch.equal(c, d) and not torch.equal(c, a)


def test_return_hidden_gives_the_outputs_before_and_after_output_dropout():
    torch.manual_seed(3)
    model = LanguageModel(cfg(dropout_output=0.5))
    model.train()
    tokens = torch.randint(0, 30, (5, 2))
    nll, state, (hidden, dropped) = model(tokens, targets=tokens, return_hidden=True)
    assert nll.shape == (5, 2) and hidden.shape == dropped.shape == (5, 2, 8)
    zero = dropped == 0
    assert bool(zero.any()) and torch.equal(zero, zero[:1].expand_as(zero))  # locked
    assert torch.allclose(dropped[~zero], 2.0 * hidden[~zero])
    plain = LanguageModel(cfg())  # the plain path returns them too (for AR/TAR)
    _, _, (h, dr) = plain(tokens, return_hidden=True)
    assert h.shape == (5, 2, 8)
