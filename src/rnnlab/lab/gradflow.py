r"""Why the gates exist: gradient flow through time and gate statistics.

**Gradient flow.** Unroll the network over ``K + 1`` steps of text (after a warm-up that gives
it a realistic state), take the loss at the *last* step only, and measure how much of its
gradient reaches each earlier hidden state:

.. math::
    g_d = \Big\lVert \frac{\partial L_T}{\partial h_{T-d}} \Big\rVert, \qquad d = 0, 1, \dots, K

Back-propagation multiplies by one Jacobian per step,
:math:`\partial L/\partial h_{t-1} = J_t^\top \, \partial L/\partial h_t` with
:math:`J_t = \operatorname{diag}(\phi'(a_t))\, U` for a vanilla RNN, so :math:`g_d` shrinks (or
grows) roughly geometrically in ``d``: the vanishing (and exploding) gradient of Bengio et al.
(1994) and Pascanu et al. (2013). The LSTM's cell path :math:`c_t = f \circ c_{t-1} + \dots`
has Jacobian :math:`\operatorname{diag}(f)`, so with forget gates near 1 the gradient survives
many more steps; the GRU's :math:`h_t = (1 - z) \circ n + z \circ h_{t-1}` does the same
through ``z``. For a linear RNN with :math:`U = \rho Q` (``Q`` orthogonal) the ratio
:math:`g_{d+1} / g_d` is exactly ``rho``, a closed form the tests check.

The network is run step by step through the cells' own ``step`` functions
(:mod:`rnnlab.nn.cells`) from the layer weights, and :func:`torch.autograd.grad` takes the
gradient with respect to every per-step state. With several layers, ``g_d`` is the norm over
all layers' states at time ``T - d``. Each column of the batch is its own sequence; ``g_d`` is
the mean over columns of the per-column norm.

**Gate statistics.** On held-out text: the mean of each gate (LSTM input, forget, output; GRU
reset and update ``z``) and the fraction of saturated values (> 0.95 or < 0.05): a forget gate
saturated at 1 is a memory, one at 0 a reset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.data.batching import batchify
from rnnlab.data.dataset import DataConfig, load_data
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.recurrent import RNN, Recurrent
from rnnlab.nn.registry import FAMILIES

log = logging.getLogger(__name__)

IDENTITY = "identity"  # linear RNN, for the closed-form check (diagnostics only)
SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95

LayerState = tuple[Tensor, ...]  # (h,) or (h, c), each (B, H)
GateHook = Callable[[int, dict[str, Tensor]], None]


# --------------------------------------------------------------------------- stepping
def _kind(rnn: Recurrent) -> str:
    """The layer's family (:data:`rnnlab.nn.registry.FAMILIES`): "rnn", "gru" or "lstm"."""
    if isinstance(rnn, Recurrent) and rnn.family in FAMILIES:
        return rnn.family
    raise ConfigError(
        f"diagnostics support rnnlab's RNN, GRU and LSTM layers, not {type(rnn).__name__}"
    )


def _step(
    rnn: Recurrent, k: int, gi: Tensor, state: LayerState, nonlinearity: str | None
) -> LayerState:
    """One step of layer ``k`` from its input projection ``gi`` (B, G*H): the cells' equations."""
    _, w_hh, _, b_hh = rnn.layer_weights(k)
    kind = _kind(rnn)
    if kind == "lstm":
        return LSTMCell.step(gi, (state[0], state[1]), w_hh, b_hh)
    if kind == "gru":
        return (GRUCell.step(gi, state[0], w_hh, b_hh, rnn.reset),)
    phi = nonlinearity or rnn.nonlinearity
    if phi == IDENTITY:  # h_t = W x + b_ih + U h + b_hh
        pre = gi if b_hh is None else gi + b_hh
        return (torch.addmm(pre, state[0], w_hh.t()),)
    return (RNNCell.step(gi, state[0], w_hh, b_hh, phi),)


def _gates(rnn: Recurrent, k: int, gi: Tensor, state: LayerState) -> dict[str, Tensor]:
    """The sigmoid gates of layer ``k`` at this step (empty for a vanilla RNN), each (B, H).

    LSTM: i, f, o = sigma(W x + b_i + U h + b_h) slices; GRU: r, z from the first 2H rows,
    which are the same in both reset placements.
    """
    kind = _kind(rnn)
    if kind == "rnn":
        return {}
    _, w_hh, _, b_hh = rnn.layer_weights(k)
    gh = state[0].mm(w_hh.t()) if b_hh is None else torch.addmm(b_hh, state[0], w_hh.t())
    if kind == "lstm":
        i, f, _, o = (gi + gh).chunk(4, 1)  # (B, H) each
        return {"input": torch.sigmoid(i), "forget": torch.sigmoid(f), "output": torch.sigmoid(o)}
    i_r, i_z, _ = gi.chunk(3, 1)
    h_r, h_z, _ = gh.chunk(3, 1)
    return {"reset": torch.sigmoid(i_r + h_r), "update": torch.sigmoid(i_z + h_z)}


def zero_states(rnn: Recurrent, batch: int, like: Tensor) -> list[LayerState]:
    """Zero state of every layer: (h,) or (h, c), each (B, H)."""
    _kind(rnn)  # ConfigError for a layer the diagnostics do not know
    n = rnn.num_states  # (h,) or (h, c)
    return [
        tuple(like.new_zeros(batch, rnn.hidden_size) for _ in range(n))
        for _ in range(rnn.num_layers)
    ]


def unroll(
    rnn: Recurrent,
    x: Tensor,
    states: list[LayerState] | None = None,
    *,
    nonlinearity: str | None = None,
    gate_hook: GateHook | None = None,
) -> list[list[LayerState]]:
    """Run the stack step by step over ``x`` (T, B, I) (no dropout: evaluation).

    Returns the state of every layer after every step, ``trace[t][k]`` = (h,) or (h, c).
    ``gate_hook(k, gates)`` sees the gates of layer ``k`` at every step.
    """
    states = list(states) if states is not None else zero_states(rnn, x.size(1), x)
    trace = []
    for x_t in x.unbind(0):  # (B, I)
        inp = x_t
        for k in range(rnn.num_layers):
            w_ih, _, b_ih, _ = rnn.layer_weights(k)
            gi = F.linear(inp, w_ih, b_ih)  # (B, G*H)
            if gate_hook is not None:
                gate_hook(k, _gates(rnn, k, gi, states[k]))
            states[k] = _step(rnn, k, gi, states[k], nonlinearity)
            inp = states[k][0]
        trace.append(list(states))
    return trace


# --------------------------------------------------------------------------- gradient flow
@dataclass
class StateGradients:
    """Mean per-column ‖∂L_T/∂h_{T-d}‖ for d = 0..K (and ‖∂L_T/∂c_{T-d}‖ for LSTMs)."""

    norms: list[float]
    per_layer: list[list[float]]  # [layer][d]
    cell_norms: list[float] | None = None


def state_gradient_norms(
    rnn: Recurrent,
    x: Tensor,
    readout: Callable[[Tensor], Tensor],
    states: list[LayerState] | None = None,
    *,
    nonlinearity: str | None = None,
) -> StateGradients:
    """Gradient norms of a last-step loss with respect to each earlier hidden state.

    Args:
        rnn: the recurrent stack; x: its input (T, B, I) with T = K + 1.
        readout: maps the top layer's last state h_T (B, H) to a scalar loss that *sums* the
            columns' losses, so each column's gradient is its own sequence's.
        states: the initial states (e.g. after a warm-up); zeros if None.
        nonlinearity: override a vanilla RNN's activation ("identity" for a linear RNN).
    """
    trace = unroll(rnn, x, states, nonlinearity=nonlinearity)
    loss = readout(trace[-1][-1][0])
    hs = [s[0] for step in trace for s in step]  # T*L tensors (B, H), t-major
    is_lstm = _kind(rnn) == "lstm"
    cs = [s[1] for step in trace for s in step] if is_lstm else []
    grads = torch.autograd.grad(loss, hs + cs, allow_unused=True)
    n_layers, steps = rnn.num_layers, len(trace)

    def column_norms(g: Tensor | None, like: Tensor) -> Tensor:  # (B,)
        return like.new_zeros(like.size(0)) if g is None else g.flatten(1).norm(dim=1)

    h_norms = [
        [column_norms(grads[t * n_layers + k], hs[t * n_layers + k]) for k in range(n_layers)]
        for t in range(steps)
    ]
    by_distance = list(reversed(h_norms))  # d = 0 is the last step
    norms = [float(torch.stack(per).pow(2).sum(0).sqrt().mean()) for per in by_distance]
    per_layer = [[float(per[k].mean()) for per in by_distance] for k in range(n_layers)]
    cell_norms = None
    if is_lstm:
        off = len(hs)
        c_norms = [
            [
                column_norms(grads[off + t * n_layers + k], cs[t * n_layers + k])
                for k in range(n_layers)
            ]
            for t in range(steps)
        ]
        cell_norms = [
            float(torch.stack(per).pow(2).sum(0).sqrt().mean()) for per in reversed(c_norms)
        ]
    return StateGradients(norms, per_layer, cell_norms)


def decay_per_step(norms: Sequence[float]) -> float:
    """Geometric-mean ratio g_{d+1} / g_d over the measured distances: (g_K / g_0)^(1/K)."""
    if len(norms) < 2 or norms[0] <= 0 or norms[-1] <= 0:
        return 0.0
    return (norms[-1] / norms[0]) ** (1.0 / (len(norms) - 1))


@dataclass
class GradFlow:
    """What ``rnnlab gradflow`` reports for one model."""

    cell: str
    source: str  # "init" or the run directory
    text: str  # the text the measurement ran on
    norms: list[float]  # mean ‖∂L_T/∂h_{T-d}‖, d = 0..K
    per_layer: list[list[float]]
    cell_norms: list[float] | None = None
    gates: list[dict[str, dict[str, float]]] = field(default_factory=list)  # per layer

    @property
    def decay(self) -> float:
        return decay_per_step(self.norms)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decay_per_step"] = self.decay
        if d["cell_norms"] is None:
            del d["cell_norms"]
        return d


def sample_windows(ids: Tensor, length: int, batch: int, seed: int) -> Tensor:
    """``batch`` windows of ``length`` consecutive ids at random offsets, as (length, B)."""
    n = ids.numel()
    if n < length:
        raise DataError(
            f"the text has {n:,} tokens but the measurement needs {length:,} in a row; "
            "use fewer --steps or a longer text"
        )
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n - length + 1, (batch,), generator=g)
    return torch.stack([ids[s : s + length] for s in starts.tolist()], dim=1)  # (length, B)


def gradient_flow(
    model: LanguageModel,
    ids: Tensor,
    *,
    steps: int = 50,
    batch: int = 32,
    warmup: int = 20,
    seed: int = 0,
) -> StateGradients:
    """‖∂L_T/∂h_{T-d}‖ for d = 0..``steps`` of a language model on the id stream ``ids``.

    Each of ``batch`` windows runs ``warmup`` tokens without gradient (to reach a typical
    state), then ``steps + 1`` tokens step by step; L_T is the cross-entropy of the next token
    after the last one.
    """
    if steps < 1 or batch < 1 or warmup < 0:
        raise ConfigError("steps and batch must be positive and warmup non-negative")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = sample_windows(ids, warmup + steps + 2, batch, seed).to(device)  # (W+K+2, B)
    try:
        with torch.no_grad():
            states = None
            if warmup:
                emb = model.embedding(tokens[:warmup])  # (W, B, D)
                states = unroll(model.rnn, emb)[-1]
        x = model.embedding(tokens[warmup : warmup + steps + 1])  # (K+1, B, D)
        target = tokens[-1]  # (B,)

        def readout(h: Tensor) -> Tensor:
            return model.readout(h, target).sum()  # cross-entropy, any softmax head

        return state_gradient_norms(model.rnn, x, readout, states)
    finally:
        model.train(was_training)


def linear_rnn_gradient_norms(
    rho: float, *, hidden_size: int = 16, steps: int = 10, batch: int = 4, seed: int = 0
) -> list[float]:
    """‖∂L_T/∂h_{T-d}‖ of a linear RNN h_t = rho Q h_{t-1} + W x_t (Q orthogonal), d = 0..steps.

    Back-propagation multiplies by (rho Q)^T once per step and Q keeps norms, so the ratio of
    consecutive norms is exactly ``rho``. Runs in float64 through the same measurement as
    :func:`gradient_flow`.
    """
    g = torch.Generator().manual_seed(seed)
    rnn = RNN(hidden_size, hidden_size, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(hidden_size, hidden_size, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(rho * q)
    x = torch.randn(steps + 1, batch, hidden_size, generator=g, dtype=torch.float64)
    v = torch.randn(hidden_size, generator=g, dtype=torch.float64)
    return state_gradient_norms(rnn, x, lambda h: (h @ v).sum(), nonlinearity=IDENTITY).norms


# --------------------------------------------------------------------------- gate statistics
@torch.no_grad()
def gate_statistics(
    model: LanguageModel, ids: Tensor, *, batch: int = 32, max_tokens: int = 10_000
) -> list[dict[str, dict[str, float]]]:
    """Per layer and gate: mean, and fractions above 0.95 / below 0.05 / either, on ``ids``.

    Returns ``[]`` entries per layer for a vanilla RNN (it has no gates).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = ids[:max_tokens]
    batch = max(1, min(batch, ids.numel() // 2))
    columns = batchify(ids, batch).to(device)  # (T, B)
    sums: dict[tuple[int, str], Tensor] = {}  # (mean, above, below) sums, float64
    counts: dict[tuple[int, str], int] = {}

    def hook(k: int, gates: dict[str, Tensor]) -> None:
        for name, g in gates.items():
            high, low = (g > SATURATION_HIGH).double().sum(), (g < SATURATION_LOW).double().sum()
            part = torch.stack((g.double().sum(), high, low))
            sums[k, name] = sums[k, name] + part if (k, name) in sums else part
            counts[k, name] = counts.get((k, name), 0) + g.numel()

    try:
        unroll(model.rnn, model.embedding(columns), gate_hook=hook)
    finally:
        model.train(was_training)
    stats: list[dict[str, dict[str, float]]] = [{} for _ in range(model.rnn.num_layers)]
    for (k, name), acc in sums.items():
        total, high, low = (float(v) / counts[k, name] for v in acc)
        stats[k][name] = {
            "mean": total,
            "saturated": high + low,
            "above_0.95": high,
            "below_0.05": low,
        }
    return stats


# --------------------------------------------------------------------------- one call
def measure(
    model: LanguageModel,
    ids: Tensor,
    *,
    cell: str,
    source: str,
    text: str,
    steps: int = 50,
    batch: int = 32,
    warmup: int = 20,
    seed: int = 0,
    gates: bool = True,
) -> GradFlow:
    """Gradient flow and (optionally) gate statistics of ``model`` on ``ids``."""
    grads = gradient_flow(model, ids, steps=steps, batch=batch, warmup=warmup, seed=seed)
    stats = gate_statistics(model, ids) if gates else []
    if any(not math.isfinite(v) for v in grads.norms):
        log.warning("%s (%s): non-finite gradient norms: the gradient explodes", cell, source)
    return GradFlow(cell, source, text, grads.norms, grads.per_layer, grads.cell_norms, stats)


def fresh_model(config: LanguageModelConfig, seed: int) -> LanguageModel:
    """A model at initialisation, drawn from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LanguageModel(config)


def gradflow_at_init(
    cells: Sequence[str],
    *,
    data: DataConfig | None = None,
    vocab_size: int = 64,
    hidden_size: int = 128,
    embed_size: int = 64,
    num_layers: int = 1,
    seed: int = 0,
    **kwargs: Any,
) -> list[GradFlow]:
    """:func:`measure` for freshly initialised models of ``cells``.

    On the validation split of ``data`` (its vocabulary sizes the models), or, without data, on
    uniformly random tokens of a ``vocab_size`` vocabulary. ``kwargs`` go to :func:`measure`.
    """
    if data is not None:
        lm = load_data(data)
        ids, vocab_size, text = lm.valid, len(lm.vocab), f"{lm.name} valid ({lm.level})"
    else:
        g = torch.Generator().manual_seed(seed)
        ids, text = torch.randint(0, vocab_size, (50_000,), generator=g), "random tokens"
    flows = []
    for cell in cells:
        config = LanguageModelConfig(
            vocab_size=vocab_size,
            cell=cell,
            embed_size=embed_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
        )
        model = fresh_model(config, seed)
        flows.append(measure(model, ids, cell=cell, source="init", text=text, seed=seed, **kwargs))
    return flows


def gradflow_of_run(
    run_dir: str | Path,
    *,
    data: DataConfig | None = None,
    with_init: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> list[GradFlow]:
    """:func:`measure` for a trained run (its best checkpoint), on held-out text.

    The text is the run's own validation split unless ``data`` names another (tokenized with
    the run's vocabulary). ``with_init`` adds a fresh model of the same configuration.
    """
    from rnnlab.runs.load import load_model

    model, vocab, ckpt = load_model(run_dir)
    if vocab is None:
        raise ConfigError(
            f"{run_dir} is a piano-roll model; gradflow measures text models (train one with "
            "--text or a text --corpus)"
        )
    if model.config.narrowed:
        raise ConfigError(
            f"{run_dir} has a last layer of its own width ({model.config.stack_text()}); "
            "gradflow follows one stack of one width, so it measures runs without --last-hidden"
        )
    if data is None:
        data = DataConfig.from_dict(ckpt.meta["run"]["data"])
    data = DataConfig.from_dict(dict(data.to_dict(), level=ckpt.meta["level"]))
    lm = load_data(data, vocab=vocab)
    text = f"{lm.name} valid ({lm.level})"
    cell = model.config.cell
    flows = [
        measure(model, lm.valid, cell=cell, source=str(run_dir), text=text, seed=seed, **kwargs)
    ]
    if with_init:
        fresh = fresh_model(model.config, seed)
        flows.append(
            measure(fresh, lm.valid, cell=cell, source="init", text=text, seed=seed, **kwargs)
        )
    return flows


DEFAULT_CELLS = ("rnn", "gru", "lstm", "lstm-fb1")  # measured at initialisation by default


def gradflow(
    run_dirs: Sequence[str | Path] = (),
    *,
    cells: Sequence[str] | None = None,
    with_init: bool = False,
    data: DataConfig | None = None,
    vocab_size: int = 64,
    hidden_size: int = 128,
    embed_size: int = 64,
    num_layers: int = 1,
    **kwargs: Any,
) -> list[GradFlow]:
    """What ``rnnlab gradflow`` measures: the trained runs ``run_dirs`` (each with a fresh model
    of its config when ``with_init``), or without runs freshly initialised ``cells`` (default
    :data:`DEFAULT_CELLS`) of the given sizes. ``kwargs`` go to :func:`measure`."""
    if run_dirs:
        if cells:
            raise ConfigError(
                "--cell picks models at initialisation; a RUN_DIR brings its own cell "
                "(add --with-init)"
            )
        flows: list[GradFlow] = []
        for run_dir in run_dirs:
            flows += gradflow_of_run(run_dir, data=data, with_init=with_init, **kwargs)
        return flows
    if with_init:
        raise ConfigError("--with-init compares a RUN_DIR with its initialisation; give a RUN_DIR")
    return gradflow_at_init(
        cells or DEFAULT_CELLS,
        data=data,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        embed_size=embed_size,
        num_layers=num_layers,
        **kwargs,
    )


def plot_gradflow(flows: Sequence[GradFlow], path: str | Path) -> Path:
    """‖∂L_T/∂h_{T-d}‖ / ‖∂L_T/∂h_T‖ against d on a log scale, one line per model (PNG, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    all_init = all(f.source == "init" for f in flows)
    for flow in flows:
        g0 = flow.norms[0] if flow.norms and flow.norms[0] > 0 else 1.0
        ys = [max(v / g0, 1e-300) for v in flow.norms]
        where = "init" if flow.source == "init" else Path(flow.source).name
        label = flow.cell if all_init else f"{flow.cell} ({where})"
        label += f": ×{flow.decay:.3g}/step"
        ax.plot(range(len(ys)), ys, marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("distance d = T - t (steps back from the loss)")
    ax.set_ylabel("‖∂L_T/∂h_t‖ / ‖∂L_T/∂h_T‖")
    ax.set_title("Gradient flow through time" + (" at initialisation" if all_init else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
