"""AR and TAR: the values against a hand computation, and the training objective of a text
task (the plain loss logged, the penalties added to what is minimised)."""

import pytest
import torch

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.training.activation_reg import activation_penalty, penalties, temporal_penalty
from rnnlab.training.trainer import Trainer


def test_ar_and_tar_against_hand_computation():
    h = torch.tensor([[[1.0, -2.0]], [[3.0, 0.0]], [[0.5, 1.0]]])  # (T=3, B=1, H=2)
    dropped = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]], [[1.0, 2.0]]])
    squares = [4, 0, 0, 0, 1, 4]
    assert activation_penalty(dropped, 2.0).item() == pytest.approx(2.0 * sum(squares) / 6)
    diffs = [(3 - 1) ** 2, (0 + 2) ** 2, (0.5 - 3) ** 2, (1 - 0) ** 2]  # over t = 2..3
    assert temporal_penalty(h, 1.5).item() == pytest.approx(1.5 * sum(diffs) / 4)
    both = penalties(h, dropped, 2.0, 1.5).item()
    assert both == pytest.approx(2.0 * 9 / 6 + 1.5 * sum(diffs) / 4)
    assert penalties(h, dropped, 0.0, 0.0).item() == 0.0
    assert temporal_penalty(h[:1], 1.0).item() == 0.0  # one step: no pair


def config(text_file, **optim) -> RunConfig:
    return RunConfig(
        data=DataConfig(text=str(text_file)),
        model=LanguageModelConfig(
            embed_size=8, hidden_size=8, num_layers=2, dropout_output=0.3, tie_weights=True
        ),
        optim=OptimConfig(optimizer="sgd", lr=1.0, clip=1.0, schedule="constant", **optim),
        train=TrainConfig(
            bptt=6, batch_size=3, eval_batch_size=2, epochs=1, log_every=1, seed=3, threads=1
        ),
    )


def test_text_objective_adds_the_penalties_and_logs_the_plain_loss(fox_file, tmp_path):
    trainer = Trainer(config(fox_file, ar=2.0, tar=1.0), tmp_path / "run")
    trainer.model.train()
    window = next(trainer.task.windows(0))
    torch.manual_seed(5)
    objective, loss, _ = trainer.task.forward_objective(trainer.model, window, None)
    torch.manual_seed(5)  # the same masks
    nll, _, (hidden, dropped) = trainer.model(
        window.inputs, None, targets=window.targets, return_hidden=True
    )
    assert loss.item() == pytest.approx(nll.mean().item(), rel=1e-6)
    expected = nll.mean() + 2.0 * dropped.pow(2).mean() + (hidden[1:] - hidden[:-1]).pow(2).mean()
    assert objective.item() == pytest.approx(expected.item(), rel=1e-6)
    assert objective.item() > loss.item()
    # without AR/TAR the objective is the loss itself
    plain = Trainer(config(fox_file), tmp_path / "plain")
    torch.manual_seed(5)
    o, l, _ = plain.task.forward_objective(plain.model, window, None)
    assert o is l
    # a training step reports (logs, checks for divergence) the plain loss, not the objective
    torch.manual_seed(5)
    value, _ = trainer._step(window)
    assert value == pytest.approx(loss.item(), rel=1e-6)


def test_bad_coefficients_are_refused():
    with pytest.raises(ConfigError, match="ar must be >= 0"):
        OptimConfig(ar=-1.0)
    with pytest.raises(ConfigError, match="tar must be >= 0"):
        OptimConfig(tar=float("nan"))
