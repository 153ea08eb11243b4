"""One time step of a vanilla RNN, a GRU and an LSTM, written gate by gate.

The cells mirror ``torch.nn.RNNCell``, ``torch.nn.GRUCell`` and ``torch.nn.LSTMCell``: same
constructor arguments, parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``),
shapes, gate order (r, z, n for the GRU; i, f, g, o for the LSTM), initialisation
(uniform in ±1/sqrt(hidden_size)) and ``hx=None`` default, so a ``state_dict`` copies across.

Each cell does ONE fused GEMM for all its gates and then splits the result. The equations live
in one place only: the static ``step`` of each cell. It takes the input projection already
computed, ``gi = x W_ih^T + b_ih`` of shape (B, G*H), so that :mod:`rnnlab.nn.recurrent` can compute
the projection of a whole sequence in one GEMM before its time loop and then call the very same
``step`` at every time step.

Shapes: B batch, I input size, H hidden size, G gates (1 RNN, 3 GRU, 4 LSTM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import (
    LayerArgumentError,
    LayerArgumentTypeError,
    LayerInputError,
    LayerShapeError,
)

NONLINEARITIES = ("tanh", "relu")
RESET_MODES = ("after", "before")


class _CellBase(nn.Module):
    """Parameters, initialisation and input handling shared by the three cells."""

    num_gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gates = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))  # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))  # (G*H, H)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates, **factory))  # (G*H,)
            self.bias_hh = nn.Parameter(torch.empty(gates, **factory))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), as torch.nn does (0 when H=0)."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        return text if self.bias else text + ", bias=False"

    def _batched_input(self, input: Tensor) -> tuple[Tensor, bool]:
        """Return ``input`` as (B, I) and whether it came without a batch dimension."""
        if input.dim() not in (1, 2):
            raise LayerInputError(
                f"{type(self).__name__}: expected input of shape (batch, {self.input_size}) or "
                f"({self.input_size},), got {tuple(input.shape)}; feed one time step at a time "
                "or use rnnlab.nn.recurrent for sequences"
            )
        if input.size(-1) != self.input_size:
            raise LayerShapeError(
                f"{type(self).__name__}: input has {input.size(-1)} features but input_size is "
                f"{self.input_size}; reshape the input or build the cell with "
                f"input_size={input.size(-1)}"
            )
        batched = input.dim() == 2
        return (input if batched else input.unsqueeze(0)), batched

    def _batched_state(self, hx: Tensor | None, x: Tensor, batched: bool) -> Tensor:
        """Return a state tensor as (B, H): zeros when ``hx`` is None."""
        if hx is None:
            return x.new_zeros(x.size(0), self.hidden_size)
        expected = (x.size(0), self.hidden_size) if batched else (self.hidden_size,)
        if tuple(hx.shape) != expected:
            raise LayerShapeError(
                f"{type(self).__name__}: expected a state of shape {expected}, got "
                f"{tuple(hx.shape)}; pass hx=None for zeros"
            )
        return hx if batched else hx.unsqueeze(0)

    def _input_projection(self, x: Tensor) -> Tensor:
        """The fused input GEMM for all gates: gi = x W_ih^T + b_ih."""
        return F.linear(x, self.weight_ih, self.bias_ih)  # (B, G*H)


class RNNCell(_CellBase):
    r"""Elman RNN cell (CS224d notes, lecture 4).

    .. math::
        h_t = \phi(W x_t + b_{ih} + U h_{t-1} + b_{hh}), \qquad \phi \in \{\tanh, \mathrm{relu}\}

    with ``W = weight_ih`` (H, I) and ``U = weight_hh`` (H, H).
    Input (B, I) or (I,); state (B, H) or (H,); returns h_t of the same batchedness.
    """

    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise LayerArgumentError(
                f"unknown nonlinearity {nonlinearity!r}; choose one of {', '.join(NONLINEARITIES)}"
            )
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype)

    @staticmethod
    def step(
        gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh"
    ) -> Tensor:
        """One step from a precomputed input projection ``gi = x W^T + b_ih`` (B, H).

        ``b_hh`` may be None when it is already folded into ``gi``.
        """
        if b_hh is not None:
            gi = gi + b_hh
        pre = torch.addmm(gi, h, w_hh.t())  # (B, H): W x + b_ih + U h + b_hh
        return RNNCell.activate(pre, nonlinearity)

    @staticmethod
    def activate(pre: Tensor, nonlinearity: str = "tanh") -> Tensor:
        """h_t from the whole pre-activation ``W x + b_ih + U h + b_hh`` (B, H)."""
        return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._batched_input(input)  # (B, I)
        h = self._batched_state(hx, x, batched)  # (B, H)
        gi = self._input_projection(x)  # (B, H)
        h = self.step(gi, h, self.weight_hh, self.bias_hh, self.nonlinearity)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return (
            text if self.nonlinearity == "tanh" else text + f", nonlinearity={self.nonlinearity!r}"
        )


class GRUCell(_CellBase):
    r"""Gated recurrent unit cell (Cho et al. 2014; CS224d notes, lecture 8).

    With ``reset="after"`` (default; the form of the CS224d notes as torch and cuDNN run it):

    .. math::
        r &= \sigma(W_r x + b_{ir} + U_r h_{t-1} + b_{hr}) \\
        z &= \sigma(W_z x + b_{iz} + U_z h_{t-1} + b_{hz}) \\
        n &= \tanh(W_n x + b_{in} + r \circ (U_n h_{t-1} + b_{hn})) \\
        h_t &= (1 - z) \circ n + z \circ h_{t-1}

    With ``reset="before"`` (the original Cho et al. 2014 form; Keras ``reset_after=False``) the
    reset gate acts on the state before the product, with the same parameters:

    .. math::
        n = \tanh(W_n x + b_{in} + U_n (r \circ h_{t-1}) + b_{hn})

    ``weight_ih`` is [W_r; W_z; W_n] (3H, I) and ``weight_hh`` is [U_r; U_z; U_n] (3H, H).
    """

    num_gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        reset: str = "after",
    ) -> None:
        if reset not in RESET_MODES:
            raise LayerArgumentError(f"unknown GRU reset {reset!r}; choose 'after' or 'before'")
        self.reset = reset
        super().__init__(input_size, hidden_size, bias, device, dtype)

    @staticmethod
    def step(
        gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, reset: str = "after"
    ) -> Tensor:
        """One step from a precomputed input projection ``gi = x W_ih^T + b_ih`` (B, 3H)."""
        if reset == "after":
            gh = h.mm(w_hh.t()) if b_hh is None else torch.addmm(b_hh, h, w_hh.t())  # (B, 3H)
            return GRUCell.combine(gi, gh, h)
        else:
            i_r, i_z, i_n = gi.chunk(3, 1)  # (B, H) each
            hidden = w_hh.size(1)
            w_rz, w_n = w_hh.split((2 * hidden, hidden))  # (2H, H), (H, H)
            b_rz, b_n = (None, None) if b_hh is None else b_hh.split((2 * hidden, hidden))
            gh_rz = h.mm(w_rz.t()) if b_rz is None else torch.addmm(b_rz, h, w_rz.t())  # (B, 2H)
            h_r, h_z = gh_rz.chunk(2, 1)
            r = torch.sigmoid(i_r + h_r)  # reset gate
            z = torch.sigmoid(i_z + h_z)  # update gate
            u_n = (r * h).mm(w_n.t()) if b_n is None else torch.addmm(b_n, r * h, w_n.t())
            n = torch.tanh(i_n + u_n)  # candidate: W_n x + b_in + U_n (r∘h) + b_hn
        return torch.lerp(n, h, z)  # (1 - z)∘n + z∘h

    @staticmethod
    def combine(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
        """h_t of the reset-after GRU from both projections: ``gi = x W_ih^T + b_ih`` and
        ``gh = h U^T + b_hh`` (B, 3H each, gates in the order r, z, n)."""
        i_r, i_z, i_n = gi.chunk(3, 1)  # (B, H) each
        h_r, h_z, h_n = gh.chunk(3, 1)  # (B, H) each
        r = torch.sigmoid(i_r + h_r)  # reset gate
        z = torch.sigmoid(i_z + h_z)  # update gate
        n = torch.tanh(torch.addcmul(i_n, r, h_n))  # candidate: W_n x + b_in + r∘(U_n h + b_hn)
        return torch.lerp(n, h, z)  # (1 - z)∘n + z∘h

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._batched_input(input)  # (B, I)
        h = self._batched_state(hx, x, batched)  # (B, H)
        gi = self._input_projection(x)  # (B, 3H)
        h = self.step(gi, h, self.weight_hh, self.bias_hh, self.reset)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.reset == "after" else text + ", reset='before'"


class LSTMCell(_CellBase):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997; CS224d notes, lecture 8).

    .. math::
        i &= \sigma(W_i x + b_{ii} + U_i h_{t-1} + b_{hi}) \\
        f &= \sigma(W_f x + b_{if} + U_f h_{t-1} + b_{hf}) \\
        g &= \tanh(W_g x + b_{ig} + U_g h_{t-1} + b_{hg}) \\
        o &= \sigma(W_o x + b_{io} + U_o h_{t-1} + b_{ho}) \\
        c_t &= f \circ c_{t-1} + i \circ g \\
        h_t &= o \circ \tanh(c_t)

    ``weight_ih`` is [W_i; W_f; W_g; W_o] (4H, I) and ``weight_hh`` is [U_i; U_f; U_g; U_o] (4H, H).

    ``forget_bias`` (default 0.0, as torch) is added at initialisation to the forget slice of
    ``bias_ih`` only (``bias_hh`` keeps its plain draw); Jozefowicz et al. 2015 recommend 1.0 so
    the cell remembers by default early in training. It is an initialisation only: the
    equations do not change. ``hx`` is a tuple (h, c); ``forward`` returns (h_t, c_t) like torch.
    """

    num_gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        forget_bias: float = 0.0,
    ) -> None:
        self.forget_bias = float(forget_bias)
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def reset_parameters(self) -> None:
        """Uniform init as torch.nn, then ``forget_bias`` added to the forget slice of bias_ih."""
        super().reset_parameters()
        add_forget_bias(self.bias_ih, self.hidden_size, self.forget_bias)

    @staticmethod
    def step(
        gi: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """One step from a precomputed input projection ``gi = x W_ih^T + b_ih`` (B, 4H).

        ``b_hh`` may be None when it is already folded into ``gi``. Returns (h_t, c_t).
        """
        h, c = state
        if b_hh is not None:
            gi = gi + b_hh
        gates = torch.addmm(gi, h, w_hh.t())  # (B, 4H)
        return LSTMCell.update(gates, c)

    @staticmethod
    def update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """(h_t, c_t) from the whole pre-activation ``W x + b_ih + U h + b_hh`` (B, 4H, gates in
        the order i, f, g, o) and the previous cell ``c`` (B, H)."""
        i, f, g, o = gates.chunk(4, 1)  # (B, H) each
        i = torch.sigmoid(i)  # input gate
        f = torch.sigmoid(f)  # forget gate
        g = torch.tanh(g)  # candidate cell
        o = torch.sigmoid(o)  # output gate
        c = torch.addcmul(f * c, i, g)  # c_t = f∘c + i∘g
        h = o * torch.tanh(c)  # h_t = o∘tanh(c_t)
        return h, c

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        x, batched = self._batched_input(input)  # (B, I)
        if hx is None:
            h = c = self._batched_state(None, x, batched)  # (B, H)
        else:
            h = self._batched_state(hx[0], x, batched)
            c = self._batched_state(hx[1], x, batched)
        gi = self._input_projection(x)  # (B, 4H)
        h, c = self.step(gi, (h, c), self.weight_hh, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.forget_bias == 0.0 else text + f", forget_bias={self.forget_bias}"


def add_forget_bias(bias_ih: Tensor | None, hidden_size: int, value: float) -> None:
    """Add ``value`` in place to the forget slice [H:2H] of an LSTM ``bias_ih`` (no-op if None)."""
    if bias_ih is None or value == 0.0:
        return
    with torch.no_grad():
        bias_ih[hidden_size : 2 * hidden_size] += value


def _check_sizes(input_size: int, hidden_size: int) -> None:
    """Refuse sizes that are not integers (TypeError) or negative (ValueError); zero is
    accepted, as torch.nn's cells accept it."""
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise LayerArgumentTypeError(
                f"{name} must be a non-negative integer, got {type(value).__name__} {value!r}"
            )
        if value < 0:
            raise LayerArgumentError(f"{name} must be a non-negative integer, got {value!r}")
