"""NT-ASGD: the non-monotone trigger on scripted validation losses, the average against
torch's ASGD, evaluation and checkpoints with the averaged weights, exact resume across the
switch, and the fine-tuning mode that averages from the start and stops when the trigger fires."""

import math

import pytest
import torch
from torch import nn

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.evaluation.text import EvalResult
from rnnlab.models.config import LanguageModelConfig
from rnnlab.runs import checkpoint as ck
from rnnlab.training.asgd import Averager, nonmono_trigger
from rnnlab.training.trainer import Trainer


def first_fire(losses, n):
    """The index of the first check at which the trigger fires (None if never)."""
    for k, loss in enumerate(losses):
        if nonmono_trigger(losses[:k], loss, n):
            return k
    return None


def test_trigger_on_scripted_losses():
    """Check k fires when k > n and L_k > min(L_0 .. L_{k-n-1})."""
    plateau = [5.0, 4.0, 3.0, 2.9, 2.95, 2.92, 2.91, 3.05]
    assert first_fire(plateau, 2) == 6  # 2.91 > min(5, 4, 3, 2.9)
    assert first_fire(plateau, 5) is None  # 3.05 < min(5, 4)
    assert first_fire([5.0, 4.0, 4.5], 1) is None  # 4.5 < min(5.0)
    assert first_fire([5.0, 4.0, 6.0], 1) == 2  # 6.0 > 5.0
    assert first_fire([3.0, 3.0, 3.0, 3.0], 2) is None  # equal is not worse
    assert first_fire([1.0] + [2.0] * 5 + [1.5], 5) == 6  # the first check counts: min is 1.0
    assert first_fire([1.0, 2.0, 2.0, 2.0, 2.0, 9.0], 5) is None  # needs more than n earlier
    assert first_fire([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 9.0], 5) == 6


def test_averaging_matches_torch_asgd_and_swaps_back_bit_for_bit():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    twin = nn.Linear(4, 3)
    twin.load_state_dict(net.state_dict())
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    asgd = torch.optim.ASGD(twin.parameters(), lr=0.1, t0=0, lambd=0.0)
    avg = Averager(net)
    avg.start()
    for _ in range(7):
        x = torch.randn(5, 4)
        for model, opt in ((net, sgd), (twin, asgd)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
        avg.update()
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    for (name, p), a in zip(net.named_parameters(), avg.avg, strict=True):
        assert torch.allclose(p, dict(twin.named_parameters())[name], atol=1e-6)  # same SGD
        assert torch.allclose(a, asgd.state[dict(twin.named_parameters())[name]]["ax"], atol=1e-6)
    with avg.averaged():
        for p, a in zip(net.parameters(), avg.avg, strict=True):
            assert torch.equal(p, a)
    for k, v in net.state_dict().items():
        assert torch.equal(v, raw[k])


def test_averaging_needs_sgd_and_a_known_mode():
    with pytest.raises(ConfigError, match="optimizer sgd"):
        OptimConfig(optimizer="adam", asgd="nt")
    with pytest.raises(ConfigError, match="unknown asgd mode"):
        OptimConfig(asgd="always")
    with pytest.raises(ConfigError, match="nonmono"):
        OptimConfig(nonmono=0)


# validation loss at the end of each epoch (1-based), scripted; the trigger (n = 1) fires at
# the end of epoch 3 (6.0 > min(5.0)); mid-epoch validations read the same table
SCRIPT = {1: 5.0, 2: 4.0, 3: 6.0, 4: 3.0, 5: 2.5, 6: 2.4}


def config(text_file, mode="nt", **train) -> RunConfig:
    t = dict(bptt=6, batch_size=3, eval_batch_size=2, epochs=5, log_every=4, seed=3, threads=1)
    t.update(train)
    return RunConfig(
        data=DataConfig(text=str(text_file)),
        model=LanguageModelConfig(
            embed_size=8, hidden_size=8, num_layers=2, weight_drop=0.3, dropout_output=0.2
        ),
        optim=OptimConfig(
            optimizer="sgd", lr=0.5, clip=1.0, schedule="constant", asgd=mode, nonmono=1
        ),
        train=TrainConfig(**t),
    )


def scripted(trainer: Trainer, seen: list | None = None) -> Trainer:
    """Validation losses from SCRIPT by epoch; ``seen`` collects (step, weights at the call)."""
    real = trainer.task.evaluate

    def evaluate(model, split, **kw):
        if split != "valid":
            return real(model, split, **kw)
        if seen is not None:
            seen.append((trainer.progress.step, [p.detach().clone() for p in model.parameters()]))
        loss = SCRIPT[trainer.progress.epoch + 1]
        return EvalResult(loss, math.exp(loss), 100)

    trainer.task.evaluate = evaluate
    return trainer


def tensors(run_dir, which="last"):
    return ck.load_checkpoint(run_dir / f"{which}.safetensors").tensors


def test_switch_at_the_trigger_and_the_average_is_what_is_validated_and_saved(fox_file, tmp_path):
    seen = []
    trainer = scripted(Trainer(config(fox_file), tmp_path / "run"), seen)
    windows = trainer.task.num_windows(0)
    trainer.fit()
    p = trainer.progress
    assert p.asgd_step == 3 * windows  # switched at the end of epoch 3
    assert p.valid_losses == [SCRIPT[e] for e in range(1, 6)]
    assert trainer.averager.count == p.step - p.asgd_step
    # epoch 5's validation saw the average, not the iterate; last.safetensors stores both
    step, weights = seen[-1]
    assert step == p.step
    saved = tensors(tmp_path / "run")
    names = [n for n, _ in trainer.model.named_parameters()]
    for name, w, a in zip(names, weights, trainer.averager.avg, strict=True):
        assert torch.equal(w, a), name
        assert torch.equal(saved[f"model.{name}"], a), name
        raw = saved[f"asgd.raw.{name}"]
        assert not torch.equal(raw, a), name


@pytest.mark.parametrize("stop_at", ["before", "after"])
def test_resume_across_the_switch_is_exact(fox_file, tmp_path, stop_at):
    full = tmp_path / "full"
    scripted(Trainer(config(fox_file), full)).fit()
    windows = Trainer(config(fox_file), tmp_path / "probe").task.num_windows(0)
    stop = windows + 2 if stop_at == "before" else 3 * windows + 2  # mid epoch 2 / mid epoch 4
    part = tmp_path / "part"
    scripted(Trainer(config(fox_file, max_steps=stop), part)).fit()
    stopped = ck.load_checkpoint(part / "last.safetensors")
    assert (stopped.meta["progress"]["asgd_step"] is None) == (stop_at == "before")
    assert (not stopped.group("asgd.raw")) == (stop_at == "before")  # plain before the switch
    scripted(Trainer(config(fox_file), part, resume=True)).fit()
    a, b = tensors(full), tensors(part)
    keys = [k for k in a if k.startswith(("model.", "asgd."))]
    assert sorted(keys) == sorted(k for k in b if k.startswith(("model.", "asgd.")))
    assert any(k.startswith("asgd.raw.") for k in keys)
    for k in keys:
        assert torch.equal(a[k], b[k]), k


def test_finetune_averages_from_the_start_and_stops_when_the_trigger_fires(fox_file, tmp_path):
    trainer = scripted(Trainer(config(fox_file, mode="finetune", epochs=6), tmp_path / "ft"))
    assert trainer.progress.asgd_step == 0 and trainer.averager.active
    result = trainer.fit()
    assert result.progress.epoch == 3 and result.progress.done  # fired at epoch 3's end
    assert trainer.averager.count == result.progress.step


def test_finetune_restarts_averaging_from_the_saved_average(fox_file, tmp_path):
    """AWD-LSTM's finetune: a run started (--init-from) from an NT-ASGD run's best checkpoint,
    which holds the averaged weights, averages again from its first step."""
    source = tmp_path / "source"
    scripted(Trainer(config(fox_file), source)).fit()
    best = ck.load_checkpoint(source / "best.safetensors")
    assert best.meta["progress"]["asgd_step"] is not None  # saved after the switch: averaged
    cfg = config(fox_file, mode="finetune", epochs=1, init_from={"run": str(source)})
    trainer = Trainer(cfg, tmp_path / "finetune")
    assert trainer.progress.asgd_step == 0 and trainer.averager.count == 0
    for name, p in trainer.model.state_dict().items():
        assert torch.equal(p, best.group("model")[name]), name  # the average, not the iterate
    trainer.fit()
    assert trainer.averager.count == trainer.progress.step > 0
