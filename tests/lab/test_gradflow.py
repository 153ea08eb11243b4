"""Gradient flow through time and gate statistics, against closed forms and torch.nn references."""

import json

import pytest
import torch
from torch import nn

from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.lab.gradflow import (
    GradFlow,
    decay_per_step,
    fresh_model,
    gate_statistics,
    gradflow_at_init,
    gradflow_of_run,
    gradient_flow,
    linear_rnn_gradient_norms,
    plot_gradflow,
    state_gradient_norms,
    unroll,
)
from rnnlab.models.config import LanguageModelConfig
from rnnlab.nn.recurrent import CELL_NAMES, make_recurrent
from rnnlab.training.trainer import Trainer


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.1])
def test_linear_rnn_gradient_ratio_per_step_is_rho(rho):
    norms = linear_rnn_gradient_norms(rho, hidden_size=16, steps=12, batch=3)
    assert len(norms) == 13
    for d in range(12):
        assert norms[d + 1] / norms[d] == pytest.approx(rho, rel=1e-9)
    assert decay_per_step(norms) == pytest.approx(rho, rel=1e-9)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_step_by_step_unroll_is_the_same_network(cell):
    torch.manual_seed(0)
    rnn = make_recurrent(cell, 5, 7, num_layers=2).double().eval()
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    out, state = rnn(x)
    trace = unroll(rnn, x)
    top = torch.stack([step[-1][0] for step in trace])  # (T, B, H)
    torch.testing.assert_close(top, out)
    h_n = state[0] if isinstance(state, tuple) else state
    torch.testing.assert_close(torch.stack([s[0] for s in trace[-1]]), h_n)
    if isinstance(state, tuple):
        torch.testing.assert_close(torch.stack([s[1] for s in trace[-1]]), state[1])


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_gradient_norms_match_torch_nn_cells_with_retain_grad(kind):
    """Reference: torch.nn.RNNCell / LSTMCell unrolled by hand, retain_grad, backward."""
    torch.manual_seed(1)
    T, B, I, H = 7, 4, 3, 5
    rnn = make_recurrent(kind, I, H).double()
    ref = (nn.RNNCell if kind == "rnn" else nn.LSTMCell)(I, H).double()
    ref.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items()})
    x = torch.randn(T, B, I, dtype=torch.float64)
    w = torch.randn(H, dtype=torch.float64)

    def readout(h):
        return torch.tanh(h @ w).sum()

    got = state_gradient_norms(rnn, x, readout)
    hs, state = [], None
    for t in range(T):
        state = ref(x[t], state)
        h = state if kind == "rnn" else state[0]
        h.retain_grad()
        hs.append(h)
    readout(hs[-1]).backward()
    want = [float(h.grad.norm(dim=1).mean()) for h in reversed(hs)]
    assert got.norms == pytest.approx(want, rel=1e-10)
    assert got.per_layer == [got.norms]
    assert (got.cell_norms is not None) == (kind == "lstm")


def test_tanh_rnn_gradients_vanish_faster_than_lstm_with_forget_bias_1():
    ids = torch.randint(0, 40, (4000,), generator=torch.Generator().manual_seed(0))
    reach, decay = {}, {}
    for cell in ("rnn", "lstm-fb1"):
        config = LanguageModelConfig(
            vocab_size=40, cell=cell, embed_size=16, hidden_size=48, num_layers=1
        )
        for seed in (3, 4):
            g = gradient_flow(
                fresh_model(config, seed), ids, steps=40, batch=16, warmup=10, seed=seed
            )
            reach[cell, seed] = g.norms[-1] / g.norms[0]
            decay[cell, seed] = decay_per_step(g.norms)
    # at init a tanh RNN keeps about x0.6 per step, the LSTM with f ~ sigmoid(1) about x0.8:
    # after 40 steps that is a factor of ~1e5 (asserted: 100)
    for seed in (3, 4):
        assert reach["rnn", seed] < 1e-2 * reach["lstm-fb1", seed]
        assert decay["rnn", seed] < decay["lstm-fb1", seed] - 0.08


def test_gradient_flow_leaves_the_model_and_global_rng_alone():
    model = fresh_model(
        LanguageModelConfig(vocab_size=20, cell="gru", embed_size=8, hidden_size=8), 0
    )
    model.train()
    before = torch.get_rng_state()
    g = gradient_flow(model, torch.arange(200) % 20, steps=5, batch=2, warmup=3)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(before, torch.get_rng_state())
    assert len(g.norms) == 6


def test_gate_statistics_against_closed_form():
    """With every weight zero, each gate is sigmoid(its bias) at every step."""
    for cell, gate, bias_slice in (("lstm", "forget", 1), ("gru", "update", 1)):
        model = fresh_model(
            LanguageModelConfig(
                vocab_size=10, cell=cell, embed_size=4, hidden_size=6, num_layers=2
            ),
            0,
        )
        with torch.no_grad():
            for p in model.rnn.parameters():
                p.zero_()
            model.rnn.bias_ih_l1[bias_slice * 6 : (bias_slice + 1) * 6] = 4.0  # layer 1: saturated
        stats = gate_statistics(model, torch.arange(300) % 10, batch=4)
        assert stats[0][gate]["mean"] == pytest.approx(0.5)
        assert stats[0][gate]["saturated"] == 0.0
        assert stats[1][gate]["mean"] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
        assert stats[1][gate]["above_0.95"] == 1.0 and stats[1][gate]["saturated"] == 1.0


def test_forget_bias_raises_the_mean_forget_gate():
    ids = torch.randint(0, 30, (2000,), generator=torch.Generator().manual_seed(1))
    mean = {}
    for cell in ("lstm", "lstm-fb1"):
        config = LanguageModelConfig(
            vocab_size=30, cell=cell, embed_size=8, hidden_size=16, num_layers=1
        )
        mean[cell] = gate_statistics(fresh_model(config, 0), ids)[0]["forget"]["mean"]
    assert mean["lstm"] == pytest.approx(0.5, abs=0.05)
    assert mean["lstm-fb1"] == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.05)


def test_init_and_trained_run_report_and_plot(tmp_path):
    import matplotlib.image as mpimg

    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 60, encoding="utf-8")
    data = DataConfig(text=str(text))
    config = RunConfig(
        data=data,
        model=LanguageModelConfig(cell="lstm", embed_size=8, hidden_size=12, num_layers=1),
        optim=OptimConfig(optimizer="adam", lr=0.01, schedule="constant"),
        train=TrainConfig(bptt=8, batch_size=4, max_steps=5),
    )
    run = tmp_path / "run"
    Trainer(config, run).fit()
    flows = gradflow_of_run(run, with_init=True, steps=6, batch=4, warmup=2)
    assert [f.source for f in flows] == [str(run), "init"]
    init = gradflow_at_init(["rnn", "gru"], data=data, steps=6, batch=4, warmup=2)
    assert [f.cell for f in init] == ["rnn", "gru"] and init[0].gates == [{}]
    for f in flows + init:
        d = json.loads(json.dumps(f.to_dict()))
        assert len(d["norms"]) == 7 and all(v > 0 for v in d["norms"]) and d["cell"] == f.cell
    assert set(flows[0].gates[0]) == {"input", "forget", "output"}
    path = plot_gradflow(flows + init, tmp_path / "flow.png")
    assert path.stat().st_size > 0 and mpimg.imread(path).ndim == 3


def test_decay_summary_of_degenerate_norms():
    assert decay_per_step([1.0]) == 0.0
    assert GradFlow(
        "rnn", "init", "x", [1.0, 0.5, 0.25], [[1.0, 0.5, 0.25]]
    ).decay == pytest.approx(0.5)


def test_gradflow_refuses_mixed_requests_in_one_line(run_cli, tmp_path):
    code, _, err = run_cli("gradflow", str(tmp_path), "--cell", "gru")
    assert code == 2 and err.count("\n") == 1
    assert "--cell picks models at initialisation; a RUN_DIR brings its own cell" in err
    code, _, err = run_cli("gradflow", "--with-init")
    assert code == 2 and err.count("\n") == 1
    assert "--with-init compares a RUN_DIR with its initialisation; give a RUN_DIR" in err
