"""The CUDA path: fused layers against torch.nn on the GPU, a tiny training run there, and a
checkpoint trained on the GPU read back on the CPU. Skipped where no CUDA GPU is available."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.evaluation.text import evaluate
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.recurrent import GRU, LSTM, RNN
from rnnlab.runs.load import load_model
from rnnlab.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PAIRS = {"lstm": (LSTM, nn.LSTM), "gru": (GRU, nn.GRU), "rnn": (RNN, nn.RNN)}


@pytest.fixture
def exact_float32():
    """No TF32 in cuDNN or cuBLAS: the comparisons are of float32 arithmetic."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple:
    x = x.clone().requires_grad_(True)
    out, state = layer(x)
    out.backward(grad)
    grads = [p.grad.clone() for p in layer.parameters()]
    states = state if isinstance(state, tuple) else (state,)
    return out.detach(), [s.detach() for s in states], x.grad, grads


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_layer_on_cuda_matches_torch_nn_on_cuda(kind: str, impl: str, exact_float32) -> None:
    ours_cls, torch_cls = PAIRS[kind]
    torch.manual_seed(0)
    reference = torch_cls(12, 16, num_layers=2).cuda()
    ours = ours_cls(12, 16, num_layers=2, impl=impl).cuda()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(7, 3, 12, device="cuda")  # (T, B, I)
    grad = torch.randn(7, 3, 16, device="cuda")  # (T, B, H)
    got, want = _forward_backward(ours, x, grad), _forward_backward(reference, x, grad)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)  # output
    for a, b in zip(got[1], want[1], strict=True):  # final states
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-5)  # input gradient
    for a, b in zip(got[3], want[3], strict=True):  # weight gradients, same order
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _config(text_file, max_steps: int | None = None) -> RunConfig:
    return RunConfig(
        data=DataConfig(text=str(text_file)),
        model=LanguageModelConfig(cell="lstm", embed_size=16, hidden_size=32, dropout=0.1),
        optim=OptimConfig(optimizer="adam", lr=0.01, clip=1.0, schedule="constant"),
        train=TrainConfig(
            bptt=10,
            batch_size=4,
            eval_batch_size=2,
            epochs=2,
            log_every=5,
            max_steps=max_steps,
            device="cuda",
        ),
    )


@pytest.fixture
def text_file(tmp_path, make_fox_file):
    return make_fox_file(tmp_path, repeat=60, jugs=False, fox_end="\n")  # one fox a line


def test_tiny_training_on_cuda_learns_and_evaluates(text_file, tmp_path, exact_float32) -> None:
    trainer = Trainer(_config(text_file), tmp_path / "run")
    assert next(trainer.model.parameters()).is_cuda
    result = trainer.fit()
    rows = [r for r in result.history if r["kind"] == "train"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result.test is not None and torch.isfinite(torch.tensor(result.test.loss))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"]["tokens"] == result.test.tokens
    # the GPU's exact evaluation agrees with the CPU's on the same weights
    ids = trainer.data.test
    on_gpu = evaluate(trainer.model, ids, batch_size=2, bptt=50)
    on_cpu = evaluate(trainer.model.cpu(), ids, batch_size=2, bptt=50)
    assert on_gpu.loss == pytest.approx(on_cpu.loss, rel=1e-4)


def test_checkpoint_trained_on_cuda_loads_on_cpu(text_file, tmp_path) -> None:
    run = tmp_path / "run"
    trainer = Trainer(_config(text_file), run)
    trainer.fit()
    on_cpu, vocab, _ = load_model(run / "best.safetensors", device="cpu")
    on_gpu, _, _ = load_model(run / "best.safetensors", device="cuda")
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())
    assert len(vocab) == len(trainer.data.vocab)
    for name, tensor in on_cpu.state_dict().items():
        torch.testing.assert_close(tensor, on_gpu.state_dict()[name].cpu(), rtol=0, atol=0)
    ids = trainer.data.valid
    cpu_loss = evaluate(on_cpu, ids, batch_size=2, bptt=50).loss
    gpu_loss = evaluate(on_gpu, ids, batch_size=2, bptt=50).loss
    assert cpu_loss == pytest.approx(gpu_loss, rel=1e-3)


def test_resume_on_cuda_continues_where_it_stopped(text_file, tmp_path) -> None:
    run = tmp_path / "run"
    Trainer(_config(text_file, max_steps=7), run).fit()
    resumed = Trainer(_config(text_file), run, resume=True)
    assert resumed.progress.step == 7
    assert next(resumed.model.parameters()).is_cuda
    state = resumed.state if isinstance(resumed.state, tuple) else (resumed.state,)
    assert all(s.is_cuda for s in state if s is not None)
    resumed.fit()
    assert resumed.progress.step > 7
