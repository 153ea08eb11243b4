"""A last layer of its own width (``last_hidden_size``, AWD-LSTM's 1150-1150-400 stack): the same
function as torch.nn's layers with copied weights, the state padded to one width, parameters
counted exactly (the paper's 24M for ``awd-ptb``), the fast stepper equal to ``forward``, and
impossible settings refused in one line."""

import pytest
import torch

from rnnlab.config.presets import get_preset
from rnnlab.errors import ConfigError
from rnnlab.generation.fast_step import FastStepper
from rnnlab.models.build import build_model
from rnnlab.models.config import LanguageModelConfig

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}


def cfg(**kw):
    base = dict(vocab_size=40, embed_size=6, hidden_size=10, num_layers=3, last_hidden_size=6)
    return LanguageModelConfig(**{**base, **kw})


def torch_twins(model):
    """torch.nn layers holding ``model``'s weights: the first L - 1 layers and the last."""
    c = model.config
    cls = TORCH[c.cell]
    first = cls(c.embed_size, c.hidden_size, c.num_layers - 1)
    last = cls(c.hidden_size, c.output_size, 1)
    for twin, prefix in ((first, "rnn."), (last, "rnn_last.")):
        own = {
            k.removeprefix(prefix): v for k, v in model.state_dict().items() if k.startswith(prefix)
        }
        twin.load_state_dict(own)
    return first, last


def kinds(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forward_is_torch_layers_with_copied_weights_and_the_state_is_padded(cell):
    torch.manual_seed(0)
    model = build_model(cfg(cell=cell, tie_weights=True)).eval()
    assert model.decoder.weight is model.embedding.weight  # tied through the 6-wide last layer
    first, last = torch_twins(model)
    tokens = torch.randint(0, 40, (7, 3))
    logits, state = model(tokens)
    for s in kinds(state):
        assert s.shape == (3, 3, 10)
        assert torch.equal(s[2, :, 6:], torch.zeros(3, 4))  # the narrow layer's padding
    with torch.no_grad():
        h1, s1 = first(model.embedding(tokens))
        h2, s2 = last(h1)
        torch.testing.assert_close(logits, model.decoder(h2), rtol=0, atol=1e-6)
        for mine, a, b in zip(kinds(state), kinds(s1), kinds(s2), strict=True):
            torch.testing.assert_close(mine[:2], a, rtol=0, atol=1e-6)
            torch.testing.assert_close(mine[2:, :, :6], b, rtol=0, atol=1e-6)
        # the state carried into the next window is read the same way
        more = torch.randint(0, 40, (4, 3))
        logits2, _ = model(more, state)
        h1, _ = first(model.embedding(more), s1)
        h2, _ = last(h1, s2)
        torch.testing.assert_close(logits2, model.decoder(h2), rtol=0, atol=1e-6)
    assert torch.equal(kinds(model.init_state(5))[0], torch.zeros(3, 5, 10))


def test_parameters_are_counted_exactly_and_awd_ptb_has_the_papers_24m():
    for kw in (
        dict(tie_weights=True),
        dict(embed_size=5),
        dict(head="adaptive", cutoffs=(10, 20), div_value=2.0, embed_size=5),
        dict(head="adaptive", cutoffs=(10, 20), tie_weights=True),
        dict(last_hidden_size=14, embed_size=5),  # a wider last layer works too
        dict(cell="gru", num_layers=2),
    ):
        config = cfg(**kw)
        assert build_model(config).num_parameters() == config.num_parameters(), kw
    awd = get_preset("awd-ptb").overrides["model"]
    paper = LanguageModelConfig(**{**awd, "vocab_size": 10000})
    assert (
        paper.layer_sizes() == [1150, 1150, 400] and paper.stack_text() == "3x1150 (the last 400)"
    )
    assert paper.num_parameters() == 24_221_600  # Merity et al. 2018, table 1: 24M


def test_a_last_layer_as_wide_as_the_rest_is_the_plain_stack():
    plain = build_model(cfg(last_hidden_size=0, embed_size=10, tie_weights=True))
    same = build_model(cfg(last_hidden_size=10, embed_size=10, tie_weights=True))
    assert not same.config.narrowed and set(same.state_dict()) == set(plain.state_dict())
    old = {k: v for k, v in cfg().to_dict().items() if k != "last_hidden_size"}  # older run.json
    assert LanguageModelConfig.from_dict(old).last_hidden_size == 0


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(num_layers=1), "with one layer use --hidden 6"),
        (dict(tie_weights=True, embed_size=10), r"the last layer's width \(got 10 and 6\)"),
        (dict(last_hidden_size=-1), "last_hidden_size must be"),
        (dict(last_hidden_size=True), "last_hidden_size must be"),
        (dict(head="sigmoid", embed_size=0, vocab_size=88), "piano rolls"),
        (dict(head="adaptive", cutoffs=(10, 20)), "a larger --last-hidden"),
    ],
)
def test_impossible_settings_are_one_line_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        cfg(**kw)


def test_tying_unequal_widths_names_the_flag_that_narrows_the_last_layer():
    with pytest.raises(ConfigError, match="--last-hidden 12"):
        LanguageModelConfig(vocab_size=40, embed_size=12, hidden_size=10, tie_weights=True)


AWD = dict(
    dropout_input=0.4, dropout_hidden=0.3, dropout_output=0.4, dropout_embed=0.1, weight_drop=0.5
)


def test_awd_regularisers_act_in_training_only_and_reach_both_modules():
    torch.manual_seed(1)
    awd = build_model(cfg(tie_weights=True, **AWD))
    plain = build_model(cfg(tie_weights=True))
    plain.load_state_dict(awd.state_dict())
    tokens, targets = torch.randint(0, 40, (6, 2)), torch.randint(0, 40, (6, 2))
    awd.eval(), plain.eval()
    assert torch.equal(awd(tokens, targets=targets)[0], plain(tokens, targets=targets)[0])
    awd.train()
    nll, _ = awd(tokens, targets=targets)
    nll.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in awd.parameters())
    weight = awd.rnn_last.weight_hh_l0
    seen = []
    awd.rnn_last.register_forward_pre_hook(lambda m, _: seen.append(m.weight("weight_hh_l0")))
    awd(tokens, targets=targets)
    assert not torch.equal(seen[0], weight)  # weight drop masks the last layer's W_hh too
    assert torch.equal(weight, plain.rnn_last.weight_hh_l0)  # and never the parameter


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_fast_stepper_steps_as_forward_does(cell):
    torch.manual_seed(2)
    model = build_model(cfg(cell=cell, embed_size=5)).eval()
    stepper = FastStepper(model)
    assert [t.shape[-1] for t in stepper.init_state(2)][-1] == 6
    tokens = torch.randint(0, 40, (5, 2))
    logits, state = model(tokens)
    step_state = stepper.init_state(2)
    for t in range(5):
        step_logits, step_state = stepper.step(tokens[t], step_state)
    torch.testing.assert_close(step_logits, logits[-1], rtol=0, atol=1e-5)
    for mine, want in zip(kinds(stepper.to_model_state(step_state)), kinds(state), strict=True):
        torch.testing.assert_close(mine, want, rtol=0, atol=1e-5)
    for dtype, atol in ((torch.bfloat16, 0.1), (torch.qint8, 0.2)):
        approx = FastStepper(model, dtype=dtype)
        out, _ = approx.step(tokens[0], approx.init_state(2))
        torch.testing.assert_close(out, logits[0], rtol=0, atol=atol)
