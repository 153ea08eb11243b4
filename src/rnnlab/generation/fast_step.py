"""One decoding step at a time, with the hidden state carried and no per-step framework overhead.

Generation feeds one token per step, so every step is a handful of small matrix-vector
products; calling ``torch.nn.LSTM`` (or :class:`~rnnlab.models.text.LanguageModel`) once per step adds
module dispatch, argument checks, autograd bookkeeping and shape juggling around them that cost
more than the arithmetic. :class:`FastStepper` pulls the weights out of the model **once** and
runs each step as a few fused ops under ``torch.inference_mode()``::

    layer 0:  gi = T[w]                         # (B, G*H): T = E W_ih^T + b_ih (+ b_hh), built once
    layer k:  gi = addmm(b_ih, x, W_ih^T)        # (B, G*H): one GEMM for all gates
              h  = Cell.step(gi, h, W_hh, b_hh)  # (B, H): the cell's own step (one more GEMM)
    decoder:  logits = addmm(b_out, h_L, W_out^T)  # (B, V)

The input table ``T`` replaces the embedding lookup and the first input GEMM by one row gather
(an embedding followed by a linear map is a linear map of the one-hot token). The gate equations
are not repeated here: each step calls the static ``step`` of :mod:`rnnlab.nn.cells`, the code the
training loop runs, so a step gives the same next-token distribution as ``model.forward``
(``tests/test_sampling.py`` checks it for every cell).

:class:`ForwardStepper` does the same job through ``model.forward`` for any object with the
``forward(tokens, state) -> (logits, state)`` interface (a hand-made model in a test, a model
with a cell the fast path does not know). :func:`make_stepper` picks one.

State layout: a stepper's state is a tuple of (B, H_k) tensors, one per layer k for RNN/GRU and
two per layer (h, c) for LSTM, in layer order: ``(h_0, c_0, h_1, c_1, ...)``; H_k is the
layer's width (the last layer's may differ: ``LanguageModelConfig.last_hidden_size``).

Shapes: B batch, T time, V vocabulary, D embedding, H hidden size, G gates, L layers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.registry import CELLS

PRECISIONS = {"float32": None, "bf16": torch.bfloat16, "int8": torch.qint8}
"""Decoding precisions by name (``--precision``): the stepper's ``dtype`` (None = exact)."""
TABLE_LIMIT = 1 << 25  # largest input table (V x G*H elements, 128 MiB in float32) built


class Stepper(Protocol):
    """Runs a language model one step at a time (see the module docstring)."""

    device: torch.device

    def start(self, prefix: Tensor, batch: int) -> tuple[Tensor, Any]:
        """Read ``prefix`` (T,) of ids once; return the logits after it (batch, V) and the
        state, repeated for ``batch`` rows."""
        ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Feed ``tokens`` (B,); return the next-token logits (B, V) and the new state."""
        ...

    def select(self, state: Any, index: Tensor) -> Any:
        """The state of rows ``index`` (B',) (beam search reorders and prunes rows)."""
        ...


@dataclass
class _Layer:
    """One layer's weights, detached: W_ih (G*H, I) or None for layer 0 (in the table)."""

    w_ih: Tensor | None
    b_ih: Tensor | None
    w_hh: Tensor
    b_hh: Tensor | None


class FastStepper:
    """The one-step inference path of a :class:`~rnnlab.models.text.LanguageModel`.

    Args:
        model: a LanguageModel (any cell of :data:`rnnlab.nn.registry.CELLS`). Its weights
            are copied by reference at construction: build a new stepper after changing them.
        table_limit: build the layer-0 input table only up to this many elements (V * G * H);
            above it, layer 0 gathers embeddings and runs one input GEMM instead.
        dtype: None (default) computes in the model's own dtype and gives its exact
            distributions. ``torch.bfloat16`` keeps weights, activations and state in bfloat16
            (the tables are built in full precision first): half the bytes to stream per step,
            and bf16 dot-product instructions where the CPU has them (AVX512-BF16, AMX), about
            3x faster on such CPUs, at about 3 significant digits, so the next-token
            distributions are close to, not equal to, the model's. ``torch.qint8`` holds every
            weight matrix in int8 (one scale per output row) and quantizes each step's
            activations on the fly (torch's fbgemm/x86 dynamic-quantized linear; CPU only;
            LSTM, GRU with the reset after U h, and RNN cells): a quarter of the bytes of
            float32 and int8 dot products (AVX512-VNNI where present), several times faster
            again, with distributions further from the model's than bf16 (``BENCHMARKS.md``
            records the measured total-variation distance). Logits are returned in the
            model's dtype.

    Dropout is ignored (inference), and so is the LSTM forget-bias option: it only initialises
    ``bias_ih``, whose trained value is read like any other weight.
    """

    def __init__(
        self, model: nn.Module, table_limit: int = TABLE_LIMIT, dtype: torch.dtype | None = None
    ) -> None:
        config = getattr(model, "config", None)
        cell = getattr(config, "cell", None)
        if cell is None:
            raise ConfigError("FastStepper needs an rnnlab LanguageModel; use ForwardStepper")
        spec = CELLS.get(cell)
        if spec is None:
            raise ConfigError(f"FastStepper does not know cell {cell!r}; use ForwardStepper")
        self.cell = spec.name
        self.kind = spec.family  # "rnn", "gru" or "lstm": which cell's step to call
        self.nonlinearity = spec.nonlinearity  # the RNN's; None for the gated families
        self.reset = spec.reset  # the GRU's; None for the others
        # every layer bottom first (a narrowed model's last layer is a module of its own)
        layers = model.recurrent_layers()
        self.num_layers = len(layers)
        self.sizes = [rnn.hidden_size for rnn, _ in layers]  # each layer's width
        self.hidden_size = max(self.sizes)  # the model state's width
        self.states_per_layer = spec.states  # 2 for the LSTM: (h, c)
        # b_hh adds to the pre-activation directly for LSTM/RNN (fold it into gi); the GRU needs
        # it apart, inside r * (U_n h + b_hn).
        fold = self.kind != "gru"
        with torch.no_grad():
            self.layers: list[_Layer] = []
            for rnn, k in layers:
                w_ih, w_hh, b_ih, b_hh = (
                    None if w is None else w.detach() for w in rnn.layer_weights(k)
                )
                if fold and b_hh is not None:
                    b_ih, b_hh = (b_hh if b_ih is None else b_ih + b_hh), None
                self.layers.append(_Layer(w_ih, b_ih, w_hh, b_hh))
            emb = model.embedding.weight.detach()  # (V, D)
            first = self.layers[0]
            self.table: Tensor | None = None
            self.embedding: Tensor | None = None
            if emb.size(0) * first.w_hh.size(0) <= table_limit:
                # (V, G*H): row w is the layer-0 input projection of token w
                self.table = _linear(emb, first.w_ih, first.b_ih)
                first.w_ih = None
            else:
                self.embedding = emb
            self.w_out = model.decoder.weight.detach()  # (V, H)
            self.b_out = model.decoder.bias.detach()  # (V,)
            self.out_dtype = self.w_out.dtype
            self.int8: list[_Int8Layer] | None = None
            if dtype == torch.qint8:
                self._quantize()
            elif dtype is not None and dtype != self.out_dtype:
                self._cast(dtype)

    def _quantize(self) -> None:
        """Pack every weight matrix in int8 (see the ``dtype`` argument), with the rows that
        feed a tanh doubled (the input table's columns too; see :func:`_lstm_update_int8`)."""
        if self.device.type != "cpu":
            raise ConfigError("int8 decoding runs on the CPU only; use bf16 on a GPU")
        if self.reset == "before":  # its U_n multiplies r∘h: U h is no longer one product
            raise ConfigError(f"int8 decoding does not support {self.cell}; use bf16")
        # every tanh argument doubled, so that tanh(a) = 2 sigmoid(2a) - 1 (see _lstm_update_int8)
        rows = [_tanh_rows(self.kind, self.nonlinearity, h) for h in self.sizes]
        layers = [
            _Layer(*(_double_rows(t, r) for t in (w.w_ih, w.b_ih, w.w_hh, w.b_hh)))
            for w, r in zip(self.layers, rows, strict=True)
        ]
        table = self.table is not None
        if table:  # (V, G*H) float32, gathered per step: its tanh columns doubled too
            self.table = _double_rows(self.table.t(), rows[0]).t().contiguous()
        self.int8 = [
            _Int8Layer.build(layer, self.kind, from_table=(k == 0 and table))
            for k, layer in enumerate(layers)
        ]
        self.q_out = _QuantLinear(self.w_out, self.b_out)

    def _cast(self, dtype: torch.dtype) -> None:
        """Hold every weight in ``dtype`` (reduced-precision inference)."""

        def cast(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(dtype)

        for layer in self.layers:
            layer.w_ih, layer.b_ih = cast(layer.w_ih), cast(layer.b_ih)
            layer.w_hh, layer.b_hh = cast(layer.w_hh), cast(layer.b_hh)
        self.table, self.embedding = cast(self.table), cast(self.embedding)
        self.w_out, self.b_out = cast(self.w_out), cast(self.b_out)

    @property
    def device(self) -> torch.device:
        return self.w_out.device

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        """Zeros: (B, H_k) per layer k and per state kind."""
        s = self.states_per_layer
        return tuple(self.w_out.new_zeros(batch, h) for h in self.sizes for _ in range(s))

    @torch.inference_mode()
    def step(self, tokens: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Feed ``tokens`` (B,); return logits (B, V) and the new state (see class docstring)."""
        if self.int8 is not None:
            return self._step_int8(tokens, state)
        s = self.states_per_layer
        new_state: list[Tensor] = []
        x = tokens
        for k, layer in enumerate(self.layers):
            if k == 0 and self.table is not None:
                gi = self.table[tokens]  # (B, G*H): embedding and input GEMM in one gather
            else:
                inp = self.embedding[tokens] if k == 0 else x  # (B, I)
                gi = _linear(inp, layer.w_ih, layer.b_ih)  # (B, G*H)
            if self.kind == "lstm":
                h, c = LSTMCell.step(gi, (state[s * k], state[s * k + 1]), layer.w_hh, None)
                new_state += (h, c)
            elif self.kind == "gru":
                h = GRUCell.step(gi, state[k], layer.w_hh, layer.b_hh, self.reset)
                new_state.append(h)
            else:
                h = RNNCell.step(gi, state[k], layer.w_hh, None, self.nonlinearity)
                new_state.append(h)
            x = h  # (B, H)
        logits = torch.addmm(self.b_out, x, self.w_out.t())  # (B, V)
        return logits.to(self.out_dtype), tuple(new_state)

    def _step_int8(
        self, tokens: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """:meth:`step` with the int8 weights: each matrix product one dynamic-quantized
        linear, and the gate equations of :mod:`rnnlab.nn.cells` with every tanh argument doubled
        in the weights, so that each tanh is a sigmoid (:func:`_lstm_update_int8`)."""
        assert self.int8 is not None
        s = self.states_per_layer
        new_state: list[Tensor] = []
        x = self.embedding.index_select(0, tokens) if self.table is None else None  # (B, D)
        for k, q in enumerate(self.int8):
            h = state[s * k]  # (B, H)
            # (B, G*H): embedding and input product in one gather (index_select: a row copy)
            gi = self.table.index_select(0, tokens) if (k == 0 and x is None) else None
            if self.kind == "gru":
                gi = q.ih(x) if gi is None else gi  # (B, 3H)
                h = _gru_combine_int8(gi, q.hh(h), h)
                new_state.append(h)
            else:
                # gi + U h, or [x, h] [W_ih, W_hh]^T + b in one product: (B, G*H)
                pre = q.hh(h).add_(gi) if gi is not None else q.cat(torch.cat((x, h), 1))
                if self.kind == "lstm":
                    h, c = _lstm_update_int8(pre, state[s * k + 1])
                    new_state += (h, c)
                elif self.nonlinearity == "tanh":
                    h = torch.sigmoid_(pre).mul_(2).sub_(1)  # tanh(a) = 2 sigmoid(2a) - 1
                    new_state.append(h)
                else:
                    h = RNNCell.activate(pre, self.nonlinearity)
                    new_state.append(h)
            x = h
        return self.q_out(x).to(self.out_dtype), tuple(new_state)

    def start(self, prefix: Tensor, batch: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Read ``prefix`` (T,) at batch 1, then repeat the state for ``batch`` rows."""
        if prefix.numel() == 0:
            raise ConfigError("generation needs at least one context token")
        state = self.init_state(1)
        for token in prefix.to(self.device).view(-1, 1):  # (1,) per step
            logits, state = self.step(token, state)
        return logits.expand(batch, -1).clone(), tuple(t.expand(batch, -1).clone() for t in state)

    def select(self, state: tuple[Tensor, ...], index: Tensor) -> tuple[Tensor, ...]:
        return tuple(t.index_select(0, index) for t in state)

    def to_model_state(self, state: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, Tensor]:
        """The state in the layout of ``LanguageModel.forward``: (L, B, H) or a pair of them
        (a narrowed model's layers zero-padded to the widest)."""
        width = self.hidden_size
        padded = [F.pad(t, (0, width - t.size(-1))) for t in state]
        if self.kind == "lstm":
            return torch.stack(padded[0::2]), torch.stack(padded[1::2])
        return torch.stack(padded)


def _tanh_rows(kind: str, nonlinearity: str | None, hidden: int) -> slice | None:
    """The gate rows whose pre-activation goes through a tanh: the LSTM's candidate g and the
    GRU's candidate n (rows 2H:3H), the whole tanh-RNN; None for the relu RNN."""
    if kind in ("lstm", "gru"):
        return slice(2 * hidden, 3 * hidden)
    return slice(0, hidden) if nonlinearity == "tanh" else None


def _double_rows(t: Tensor | None, rows: slice | None) -> Tensor | None:
    """A copy of ``t`` with ``rows`` (along dimension 0) times 2: exact in floating point, and
    int8 per-row quantization gives the same integers with twice the scale."""
    if t is None or rows is None:
        return t
    t = t.clone()
    t[rows] *= 2
    return t


def _lstm_update_int8(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    r"""(h_t, c_t) of :meth:`rnnlab.nn.cells.LSTMCell.update` from gates (B, 4H) whose candidate
    slice is doubled (:math:`2 a_g`), with every tanh written as a sigmoid:

    .. math::
        \tanh(a) = 2\sigma(2a) - 1, \qquad
        c_t = f \circ c + i \circ (2\sigma(2a_g) - 1) = f \circ c - i + 2\, i \circ
        \sigma(2 a_g), \qquad h_t = o \circ (2\sigma(2c_t) - 1)

    One sigmoid pass over all four gates replaces three sigmoids and a tanh (torch's tanh costs
    several times its sigmoid on the CPU); the results differ from tanh by about 1e-7, far
    below the int8 error. ``gates`` is overwritten.
    """
    i, f, s_g, o = torch.sigmoid_(gates).chunk(4, 1)  # (B, H) each: i, f, sigma(2 a_g), o
    c = torch.addcmul(torch.mul(f, c).sub_(i), i, s_g, value=2.0)  # c_t
    tanh_c = torch.mul(c, 2).sigmoid_().mul_(2).sub_(1)  # tanh(c_t)
    return tanh_c.mul_(o), c  # h_t = o * tanh(c_t)


def _gru_combine_int8(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """:meth:`rnnlab.nn.cells.GRUCell.combine` with the candidate rows of ``gi`` and ``gh`` (B, 3H)
    doubled: r and z in one sigmoid pass, and ``n = tanh(a) = 2 sigmoid(2a) - 1``."""
    hidden = h.size(1)
    rz = torch.add(gi[:, : 2 * hidden], gh[:, : 2 * hidden]).sigmoid_()  # (B, 2H)
    r, z = rz.chunk(2, 1)  # reset and update gates
    n = torch.addcmul(gi[:, 2 * hidden :], r, gh[:, 2 * hidden :]).sigmoid_().mul_(2).sub_(1)
    return torch.lerp(n, h, z)  # (1 - z)∘n + z∘h


class _QuantLinear:
    """``x W^T + b`` with W held in int8, one symmetric scale per output row, and ``x``
    quantized on the fly per call (torch's dynamic-quantized linear, fbgemm/x86 engine)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        weight = weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()  # (O,)
        zero = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():  # torch flags its quantized-tensor factories as legacy
            warnings.simplefilter("ignore")
            w8 = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
            b = None if bias is None else bias.detach().float()
            self.packed = torch.ops.quantized.linear_prepack(w8, b)

    def __call__(self, x: Tensor) -> Tensor:
        # reduce_range=True: 7-bit activations, safe from the 16-bit overflow of AVX2 kernels
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, True)


@dataclass
class _Int8Layer:
    """One layer's products in int8: ``hh`` (U h [+ b]), and ``ih`` (GRU: W x + b_ih) or ``cat``
    (LSTM/RNN above the table: [x, h] [W_ih, W_hh]^T + b, one product)."""

    hh: _QuantLinear | None = None
    ih: _QuantLinear | None = None
    cat: _QuantLinear | None = None

    @staticmethod
    def build(layer: _Layer, kind: str, from_table: bool) -> _Int8Layer:
        if kind == "gru":
            ih = None if from_table else _QuantLinear(layer.w_ih, layer.b_ih)
            return _Int8Layer(hh=_QuantLinear(layer.w_hh, layer.b_hh), ih=ih)
        if from_table:  # b_ih (+ b_hh) is in the table already
            return _Int8Layer(hh=_QuantLinear(layer.w_hh, None))
        return _Int8Layer(cat=_QuantLinear(torch.cat((layer.w_ih, layer.w_hh), 1), layer.b_ih))


class ForwardStepper:
    """One step through ``model.forward(tokens, state)`` for any model with that interface.

    The state is whatever the model returns; :meth:`select` picks rows along dimension 1 of
    every tensor in it (the (L, B, H) layout), and leaves ``None`` alone.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if params is not None else None
        self.device = first.device if first is not None else torch.device("cpu")

    @torch.inference_mode()
    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        logits, state = self.model(tokens.unsqueeze(0), state)  # (1, B, V)
        return logits[0], state

    @torch.inference_mode()
    def start(self, prefix: Tensor, batch: int) -> tuple[Tensor, Any]:
        if prefix.numel() == 0:
            raise ConfigError("generation needs at least one context token")
        logits, state = self.model(prefix.view(-1, 1), None)  # (T, 1, V)
        return logits[-1].expand(batch, -1).clone(), _map_state(state, lambda t: _repeat1(t, batch))

    def select(self, state: Any, index: Tensor) -> Any:
        return _map_state(state, lambda t: t.index_select(1, index))


def make_stepper(
    model: Any, fast: bool = True, dtype: torch.dtype | None = None
) -> FastStepper | ForwardStepper:
    """A :class:`FastStepper` (in ``dtype``, see there) for an rnnlab LanguageModel when
    ``fast``, else a :class:`ForwardStepper`."""
    config = getattr(model, "config", None)  # the adaptive head steps through forward
    if fast and getattr(config, "cell", None) is not None and config.head == "softmax":
        return FastStepper(model, dtype=dtype)
    if dtype is not None:
        raise ConfigError("reduced-precision decoding needs the softmax head; use float32")
    return ForwardStepper(model)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x W^T + b in one fused call."""
    return x.mm(weight.t()) if bias is None else torch.addmm(bias, x, weight.t())


def _repeat1(t: Tensor, batch: int) -> Tensor:
    """Repeat a (L, 1, ...) state tensor to (L, batch, ...)."""
    return t.expand(t.size(0), batch, *t.shape[2:]).clone()


def _map_state(state: Any, fn: Any) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list state."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    return type(state)(_map_state(s, fn) for s in state)
