"""Multi-layer recurrent layers with the signature, parameters and return values of torch.nn.

:class:`RNN`, :class:`GRU` and :class:`LSTM` take the arguments of ``torch.nn.RNN/GRU/LSTM``
(``bidirectional`` for all three, ``proj_size`` for the LSTM), name their parameters as torch
does (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, the LSTM's
projection ``weight_hr_l{k}``, and each with ``_reverse`` for the backward direction), in
torch's order, so a ``state_dict`` copies across in both directions. They take a padded tensor
or a ``PackedSequence`` and return ``(output, h_n)`` or ``(output, (h_n, c_n))``; a packed input
gives a packed output and each sequence's state at its own last step.

Two implementations compute the same function:

* **fused** - when the equations are exactly those of torch's kernel, the layer calls it
  (``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` / ``rnn_relu``; cuDNN on a GPU).
* **explicit** - a readable time loop over the cells' own ``step`` (:mod:`rnnlab.nn.cells`).
  For each layer the input projection of the whole sequence is one GEMM before the loop::

      proj = x W_ih^T + b_ih            # (T, B, G*H), one GEMM
      for gi in proj.unbind(0):         # (B, G*H) per step; never x[t] (quadratic backward)
          h = Cell.step(gi, h, W_hh, b_hh)

  It runs for ``impl="explicit"`` and for variants torch has no kernel for
  (``GRU(reset="before")``; ``fused`` in :mod:`rnnlab.nn.registry`). Packing and direction
  are handled around the step by :mod:`rnnlab.nn.scan`: a packed window steps only its active
  rows, and the backward direction runs the same loop from the last step to the first.

* **cpu** - rnnlab's own whole-window kernel for the GRU and the RNN on CPU tensors
  (:mod:`rnnlab.nn.fused_cpu`: one autograd node per layer, no per-step bookkeeping); where it
  does not apply (GPU, packed, bidirectional, no autograd, other dtypes) the layer runs as
  ``auto``.

``impl="auto"`` (default) picks the fused kernel whenever it computes the same equations; on
CPU, with autograd on, it runs rnnlab's window kernel for the RNN and both GRUs
(:func:`rnnlab.nn.fused_cpu.auto_picks`), which was faster than torch's at every shape measured.
Dropout is applied to the output of every layer but the last, in training mode, as torch does.

torch.nn's contract holds too: a misuse raises the built-in exception torch.nn raises
(TypeError, ValueError or RuntimeError; ``rnnlab.errors.Layer*Error``, each also an
``RnnlabError`` with a one-line message); ``dropout`` with one layer is a ``UserWarning``;
``all_weights`` lists each layer's parameters; ``torch.save(model)`` loads back with
``torch.load``'s default ``weights_only=True`` (the classes are registered as safe globals on
import); ``torch.jit.script`` compiles the fused path as the equivalent ``torch.nn`` layer
sharing these Parameters (``__prepare_scriptable__``), and refuses the explicit loop.

Shapes: T time, B batch, I input size, H hidden size, P projection size (H without one),
L layers, D directions (2 if bidirectional), G gates, N packed rows (sum of the lengths).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.autograd.function import FunctionCtx
from torch.nn.utils.rnn import PackedSequence

from rnnlab.errors import (
    LayerArgumentError,
    LayerArgumentTypeError,
    LayerInputError,
    LayerShapeError,
    LayerUnsupportedError,
)
from rnnlab.nn import fused_cpu
from rnnlab.nn.cells import NONLINEARITIES, RESET_MODES, GRUCell, LSTMCell, RNNCell, add_forget_bias
from rnnlab.nn.registry import CELL_NAMES as CELL_NAMES  # re-exported: the names by cell
from rnnlab.nn.registry import CellSpec, find_cell, get_cell
from rnnlab.nn.scan import Step, join_window, scan_direction, split_window

IMPLS = ("auto", "fused", "explicit", "cpu")

State = Tensor | tuple[Tensor, Tensor]


def _check_arguments(
    name: str,
    input_size: object,
    hidden_size: object,
    num_layers: object,
    bias: object,
    batch_first: object,
    dropout: object,
) -> None:
    """Refuse constructor arguments torch.nn refuses, with the exception type it raises:
    TypeError for a wrong type, ValueError for an impossible value (one-line messages)."""
    for arg, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise LayerArgumentTypeError(
                f"{name}: {arg} must be a positive integer, got {type(value).__name__} {value!r}"
            )
        if value <= 0:
            raise LayerArgumentError(f"{name}: {arg} must be a positive integer, got {value!r}")
    for arg, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise LayerArgumentTypeError(
                f"{name}: {arg} must be True or False, got {type(value).__name__} {value!r}"
            )
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):  # NumPy too
        raise LayerArgumentError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
    if not 0.0 <= dropout <= 1.0:
        raise LayerArgumentError(f"{name}: dropout must be in [0, 1], got {dropout}")


class Recurrent(nn.Module):
    """Shared machinery of :class:`RNN`, :class:`GRU` and :class:`LSTM`.

    Subclasses set ``family`` (see :mod:`rnnlab.nn.registry`), ``num_gates`` and ``num_states``
    (1 for h, 2 for (h, c)) and implement ``_fused`` (the torch kernel) and ``_step`` (one step
    of the explicit loop). Inside, a state is always a tuple of (L*D, B, P) / (L*D, B, H)
    tensors, index ``k * D + d`` for layer k, direction d; ``forward`` converts to torch's
    public structure.
    """

    family: str = ""  # "rnn", "gru" or "lstm": rnnlab.nn.registry.FAMILIES
    num_gates: int = 1
    num_states: int = 1
    fold_hh_bias: bool = True  # b_hh can be added to the input projection before the loop
    mode: str = ""  # torch's name for the kernel: RNN_TANH, RNN_RELU, GRU, LSTM

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_arguments(name, input_size, hidden_size, num_layers, bias, batch_first, dropout)
        if impl not in IMPLS:
            raise LayerArgumentError(
                f"{name}: unknown impl {impl!r}; choose one of {', '.join(IMPLS)}"
            )
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise LayerArgumentError(
                f"{name}: proj_size should be a positive integer or zero to disable projections"
            )
        if proj_size and proj_size >= hidden_size:
            raise LayerArgumentError(f"{name}: proj_size has to be smaller than hidden_size")
        if dropout > 0 and num_layers == 1:
            warnings.warn(  # as torch.nn: a UserWarning through the warnings module
                f"{name}: dropout={dropout} acts only between layers, so it does nothing with "
                "num_layers=1",
                UserWarning,
                stacklevel=3,  # the line that built the layer
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = proj_size
        self.impl = impl

        factory = {"device": device, "dtype": dtype}
        gates = self.num_gates * hidden_size
        out_size = proj_size or hidden_size  # P: the size of h
        # Parameter names per layer and direction (torch's _all_weights), in the order torch
        # registers them and its kernels take them: w_ih, w_hh, b_ih, b_hh, w_hr.
        self._all_weights: list[list[str]] = []
        for k in range(num_layers):
            layer_input = input_size if k == 0 else out_size * self.num_directions
            for suffix in ("", "_reverse")[: self.num_directions]:
                layer = {
                    f"weight_ih_l{k}{suffix}": torch.empty(gates, layer_input, **factory),
                    f"weight_hh_l{k}{suffix}": torch.empty(gates, out_size, **factory),
                }  # (G*H, I or D*P), (G*H, P)
                if bias:
                    layer[f"bias_ih_l{k}{suffix}"] = torch.empty(gates, **factory)  # (G*H,)
                    layer[f"bias_hh_l{k}{suffix}"] = torch.empty(gates, **factory)  # (G*H,)
                if proj_size:
                    layer[f"weight_hr_l{k}{suffix}"] = torch.empty(
                        proj_size, hidden_size, **factory
                    )  # (P, H)
                for param_name, tensor in layer.items():
                    self.register_parameter(param_name, nn.Parameter(tensor))
                self._all_weights.append(list(layer))
        self._flat_weights_names = [n for names in self._all_weights for n in names]
        self.reset_parameters()
        self.flatten_parameters()

    # ----------------------------------------------------------------- parameters

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), in torch.nn's order."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    def weight_names(self, k: int, reverse: bool = False) -> list[str]:
        """The parameter names of layer ``k`` in one direction, in torch's order:
        ``weight_ih``, ``weight_hh``, then ``bias_ih``, ``bias_hh`` and ``weight_hr`` if any."""
        if not 0 <= k < self.num_layers or (reverse and not self.bidirectional):
            raise IndexError(f"{type(self).__name__} has no layer {k}{' reverse' * reverse}")
        return self._all_weights[k * self.num_directions + int(reverse)]

    def layer_weights(
        self, k: int, reverse: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer ``k`` (its backward direction if
        ``reverse``); biases None if bias=False. The projection: :meth:`projection_weight`."""
        suffix = "_reverse" if reverse else ""
        w_ih = self.weight(f"weight_ih_l{k}{suffix}")
        w_hh = self.weight(f"weight_hh_l{k}{suffix}")
        if not self.bias:
            return w_ih, w_hh, None, None
        b_ih = self.weight(f"bias_ih_l{k}{suffix}")
        return w_ih, w_hh, b_ih, self.weight(f"bias_hh_l{k}{suffix}")

    def projection_weight(self, k: int, reverse: bool = False) -> Tensor | None:
        """The LSTM's ``weight_hr`` (P, H) of layer ``k`` (``reverse``: backward direction);
        None without ``proj_size``."""
        if not self.proj_size:
            return None
        return self.weight(f"weight_hr_l{k}{'_reverse' if reverse else ''}")

    def weight(self, name: str) -> Tensor:
        """The tensor a forward pass uses for parameter ``name``: the parameter itself, or the
        substitute a regulariser put in ``weight_overrides`` for this pass (weight drop,
        :mod:`rnnlab.nn.weight_drop`). Both the fused and the explicit path read weights here."""
        overrides = self.__dict__.get("weight_overrides")
        if overrides and name in overrides:
            return overrides[name]
        return getattr(self, name)

    def _flat_weights(self) -> list[Tensor]:
        """The weights as the flat list torch's kernels take (read fresh: no stale cache)."""
        return [self.weight(name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters as torch.nn's ``all_weights``: one list per layer (and direction), each
        in torch's order (w_ih, w_hh, b_ih, b_hh, then w_hr if any), as
        named by ``_all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles in place of this layer: the equivalent
        ``torch.nn`` layer, sharing this layer's Parameters (so training either one trains
        both). Only the fused path has one; the explicit loop refuses in one line."""
        name = type(self).__name__
        if not self.uses_fused():
            raise LayerUnsupportedError(
                f"{name}(impl={self.impl!r}{self._scripting_variant()}) runs rnnlab's explicit loop, "
                "which torch.jit.script cannot compile; use torch.compile(layer) instead, or "
                "impl='auto' with torch's equations"
            )
        with warnings.catch_warnings():  # the dropout warning was given when this was built
            warnings.simplefilter("ignore")
            twin = self._torch_twin()
        for param_name in self._flat_weights_names:
            setattr(twin, param_name, getattr(self, param_name))
        twin.train(self.training)
        return twin

    def _scripting_variant(self) -> str:
        """Extra constructor text naming a variant in the scripting error (GRU's reset)."""
        return ""

    def _torch_twin(self) -> nn.Module:
        """A torch.nn layer of the same configuration (fresh parameters, on the meta device)."""
        options: dict = {
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
            "device": "meta",
            "dtype": self.weight_ih_l0.dtype,
        }
        if self.family == "lstm":
            return nn.LSTM(self.input_size, self.hidden_size, proj_size=self.proj_size, **options)
        if self.family == "gru":
            return nn.GRU(self.input_size, self.hidden_size, **options)
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        return nn.RNN(self.input_size, self.hidden_size, nonlinearity=nonlinearity, **options)

    def flatten_parameters(self) -> None:
        """On a GPU with cuDNN, put all weights in one contiguous buffer (as torch.nn does).

        cuDNN wants one weight buffer; without it, it would copy the weights on every call.
        A no-op on the CPU, for mixed dtypes, or when parameters alias each other.
        """
        weights = self._flat_weights()
        first = weights[0]
        if not first.is_cuda or not torch.backends.cudnn.is_acceptable(first):
            return
        if any(w.dtype != first.dtype or not w.is_cuda for w in weights):
            return
        if len({w.data_ptr() for w in weights}) != len(weights):
            return
        if not torch._use_cudnn_rnn_flatten_weight():
            return
        from torch.backends.cudnn import rnn as cudnn_rnn

        with torch.cuda.device_of(first), torch.no_grad():
            torch._cudnn_rnn_flatten_weight(
                weights,
                (4 if self.bias else 2) + (1 if self.proj_size else 0),
                self.input_size,
                cudnn_rnn.get_cudnn_mode(self.mode),
                self.hidden_size,
                self.proj_size,
                self.num_layers,
                self.batch_first,
                self.bidirectional,
            )

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Recurrent:
        module = super()._apply(fn, recurse)
        self.flatten_parameters()  # after .to(device) / .cuda() / .half(), as torch.nn
        return module

    # ----------------------------------------------------------------- state

    def zero_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """The zero initial state: (L*D, B, P) tensor, or an (h, c) tuple for the LSTM (c is
        (L*D, B, H)). Device and dtype default to those of the parameters.
        """
        ref = self.weight_hh_l0
        zeros = [
            torch.zeros(shape, device=device or ref.device, dtype=dtype or ref.dtype)
            for shape in self._state_shapes(batch_size)
        ]
        return self._pack(tuple(zeros))

    def _state_shapes(self, batch_size: int) -> list[tuple[int, int, int]]:
        """The shapes of the internal states: h (L*D, B, P), then c (L*D, B, H) for the LSTM."""
        layers = self.num_layers * self.num_directions
        sizes = [self.proj_size or self.hidden_size, self.hidden_size][: self.num_states]
        return [(layers, batch_size, size) for size in sizes]

    def _pack(self, states: tuple[Tensor, ...]) -> State:
        """Internal tuple of states -> the public structure (tensor, or (h, c))."""
        return states[0] if self.num_states == 1 else (states[0], states[1])

    def _unpack(self, hx: State) -> tuple[Tensor, ...]:
        """Public state structure -> internal tuple, with a helpful error on a wrong structure:
        TypeError for a non-tensor, RuntimeError (as torch) for an LSTM state that is not a pair."""
        name = type(self).__name__
        if self.num_states == 1:
            if not isinstance(hx, Tensor):
                raise LayerArgumentTypeError(
                    f"{name}: hx must be a tensor (num_layers, batch, hidden_size), "
                    f"got {type(hx).__name__}"
                )
            return (hx,)
        if isinstance(hx, tuple | list) and len(hx) == 2:
            if all(isinstance(s, Tensor) for s in hx):
                return (hx[0], hx[1])
        elif isinstance(hx, Tensor | tuple | list):  # torch: "lstm expects two hidden states"
            raise LayerShapeError(f"{name}: hx must be a tuple (h_0, c_0) of two tensors")
        raise LayerArgumentTypeError(
            f"{name}: hx must be a tuple (h_0, c_0) of tensors, got {type(hx).__name__}"
        )

    # ----------------------------------------------------------------- forward

    def equations(self) -> CellSpec:
        """The registered cell whose equations this layer computes (an LSTM's forget bias, an
        initialisation, may differ from that cell's)."""
        return find_cell(self.family)

    def uses_fused(self) -> bool:
        """Whether ``forward`` calls torch's fused kernel (True) or the explicit loop (False):
        the kernel unless ``impl="explicit"`` or torch has none for these equations
        (``CellSpec.fused``)."""
        return self.impl != "explicit" and self.equations().fused

    def uses_cpu_kernel(self, input: Tensor) -> bool:
        """Whether ``forward`` on the padded (T, B, I) ``input`` runs rnnlab's CPU window kernel
        (:mod:`rnnlab.nn.fused_cpu`): for ``impl="cpu"`` wherever it applies, for ``"auto"``
        where :func:`rnnlab.nn.fused_cpu.auto_picks` chose it by measurement."""
        if self.impl not in ("cpu", "auto") or not fused_cpu.supports(self, input):
            return False
        return self.impl == "cpu" or fused_cpu.auto_picks(self)

    def forward(
        self, input: Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the stack over a sequence.

        input: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched, or a
        ``PackedSequence`` (``batch_first`` does not apply to it).
        hx: (L*D, B, P) for RNN/GRU, (h_0, c_0) for LSTM with c_0 (L*D, B, H); (L*D, P) when
        unbatched; None for zeros. For packed input, B is the largest batch and hx's rows
        follow the order of the sequences as given (before packing sorted them).
        Returns output (T, B, D*P) (or (B, T, D*P), (T, D*P), or packed like the input) from
        the last layer, both directions concatenated, and the final state of every layer and
        direction in the structure of ``hx``.
        """
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        batched = self._check_input(input)
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        if hx is None:
            shapes = self._state_shapes(input.size(batch_dim))
            states = tuple(input.new_zeros(shape) for shape in shapes)
        else:
            states = self._check_states(self._unpack(hx), input.size(batch_dim), batched)
        if self.uses_cpu_kernel(input):  # rnnlab.nn.fused_cpu: the GRU/RNN window on CPU
            x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
            output, states = fused_cpu.run_stack(self, x, states)  # (T, B, H)
            if self.batch_first:
                output = output.transpose(0, 1)  # (B, T, H)
        elif self.uses_fused():
            output, states = self._fused(input, states)
        else:
            x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
            output, states = self._explicit(x, states)  # (T, B, D*P)
            if self.batch_first:
                output = output.transpose(0, 1)  # (B, T, D*P)
        if not batched:
            output = output.squeeze(batch_dim)
            states = tuple(s.squeeze(1) for s in states)
        return output, self._pack(states)

    def _forward_packed(
        self, input: PackedSequence, hx: State | None
    ) -> tuple[PackedSequence, State]:
        """``forward`` on a PackedSequence: its data (N, I) in, packed (N, D*P) out.

        The rows of hx and of the final states follow the caller's order; inside, they are
        permuted to the packed (longest first) order with ``sorted_indices``, as torch does.
        """
        data, batch_sizes, sorted_indices, unsorted_indices = input
        self._check_input(data.unsqueeze(1))  # (N, 1, I): the feature check of a padded input
        batch = int(batch_sizes[0])
        if hx is None:
            states = tuple(data.new_zeros(shape) for shape in self._state_shapes(batch))
        else:
            states = self._check_states(self._unpack(hx), batch, True)
            if sorted_indices is not None:
                states = tuple(s.index_select(1, sorted_indices) for s in states)
        if self.uses_fused():
            output, states = self._fused(data, states, batch_sizes)
        else:
            output, states = self._explicit(data, states, batch_sizes.tolist())
        if unsorted_indices is not None:
            states = tuple(s.index_select(1, unsorted_indices) for s in states)
        packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        return packed, self._pack(states)

    def _check_input(self, input: Tensor) -> bool:
        """Validate the input's type, rank, dtype and size; return whether it has a batch
        dimension. Exception types as torch.nn: ValueError for the rank and dtype,
        RuntimeError for the feature size and an empty sequence."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise LayerArgumentTypeError(
                f"{name}: input must be a tensor, got {type(input).__name__}"
            )
        if input.dim() not in (2, 3):
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise LayerInputError(
                f"{name}: expected a 3-D input {layout} or a 2-D unbatched (time, features), "
                f"got shape {tuple(input.shape)}"
            )
        weight_dtype = self.weight_ih_l0.dtype
        if input.dtype != weight_dtype and not torch.is_autocast_enabled(input.device.type):
            raise LayerInputError(
                f"{name}: input dtype {input.dtype} does not match the weights' dtype "
                f"{weight_dtype}; convert the input with input.to({weight_dtype}) or the "
                f"layer with .to({input.dtype})"
            )
        if input.size(-1) != self.input_size:
            raise LayerShapeError(
                f"{name}: input has {input.size(-1)} features in its last dimension but "
                f"input_size is {self.input_size}; check the layout (batch_first="
                f"{self.batch_first}) or build the layer with input_size={input.size(-1)}"
            )
        if input.size(1 if self.batch_first and input.dim() == 3 else 0) == 0:
            raise LayerShapeError(f"{name}: the input sequence is empty (0 time steps)")
        return input.dim() == 3

    def _check_states(
        self, states: tuple[Tensor, ...], batch: int, batched: bool
    ) -> tuple[Tensor, ...]:
        """Validate hx against the input; return it as (L*D, B, P) (and (L*D, B, H)) tensors."""
        name = type(self).__name__
        layers = "num_layers * 2" if self.bidirectional else "num_layers"
        for s, shape in zip(states, self._state_shapes(batch), strict=True):
            expected = shape if batched else (shape[0], shape[2])
            if tuple(s.shape) != expected:
                kind = "batched" if batched else "unbatched"
                size = "proj_size" if shape[2] != self.hidden_size else "hidden_size"
                raise LayerShapeError(
                    f"{name}: for {kind} input the state must have shape "
                    f"{expected} ({layers}, {'batch, ' if batched else ''}{size}), "
                    f"got {tuple(s.shape)}; pass hx=None for zeros"
                )
            if s.dtype != self.weight_hh_l0.dtype and not torch.is_autocast_enabled(s.device.type):
                raise LayerShapeError(
                    f"{name}: the state's dtype {s.dtype} does not match the weights' dtype "
                    f"{self.weight_hh_l0.dtype}; convert it with .to({self.weight_hh_l0.dtype})"
                )
        return states if batched else tuple(s.unsqueeze(1) for s in states)

    def _explicit(
        self, x: Tensor, states: tuple[Tensor, ...], batch_sizes: list[int] | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The explicit stack: x (T, B, I) -> output (T, B, D*P), final states (L*D, B, P/H).

        With ``batch_sizes``, x is a PackedSequence's data (N, I) and the output is (N, D*P).
        """
        per_layer = [s.unbind(0) for s in states]  # per state kind, L*D tensors of (B, P/H)
        finals = []
        for k in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                state = tuple(s[k * self.num_directions + d] for s in per_layer)
                output, final = self._explicit_layer(k, x, state, d == 1, batch_sizes)
                outputs.append(output)  # (T, B, P) or (N, P)
                finals.append(final)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)  # (T, B, D*P)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        stacked = tuple(torch.stack(kind) for kind in zip(*finals, strict=True))  # (L*D, B, .)
        return x, stacked

    def _explicit_layer(
        self,
        k: int,
        x: Tensor,
        state: tuple[Tensor, ...],
        reverse: bool = False,
        batch_sizes: list[int] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One direction of layer ``k`` over the window: one GEMM for the input projection,
        then the time loop (:func:`rnnlab.nn.scan.scan_direction`, backward if ``reverse``)."""
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(k, reverse)
        w_hr = self.projection_weight(k, reverse)
        if self.fold_hh_bias and b_hh is not None:
            b_ih, b_hh = b_ih + b_hh, None  # both just add to the pre-activation
        proj = F.linear(x, w_ih, b_ih)  # (T, B, G*H) or (N, G*H): the whole window in one GEMM
        packed = batch_sizes is not None
        if not (self._batches_hh_grad() and torch.is_grad_enabled() and w_hh.requires_grad):
            inputs = [(gi,) for gi in split_window(proj, batch_sizes)]
            step = self._step(w_hh, b_hh, w_hr)
            outputs, final = scan_direction(step, inputs, state, reverse)
            return join_window(outputs, packed), final
        # Same function, but W_hh's gradient comes from one GEMM over all steps (see
        # _BatchedHiddenWeightGrad): route the per-step pre-activation term through it.
        h_prev_box: list[Tensor] = []
        if self.fold_hh_bias:
            proj = _BatchedHiddenWeightGrad.apply(proj, w_hh, h_prev_box)
            inputs = [(gi,) for gi in split_window(proj, batch_sizes)]
        else:  # b_hh sits inside the cell (GRU): route it, per step, instead of proj
            b_hh = proj.new_zeros(proj.shape) if b_hh is None else b_hh.expand(proj.shape)
            b_hh = _BatchedHiddenWeightGrad.apply(b_hh, w_hh, h_prev_box)  # like proj
            gis, biases = split_window(proj, batch_sizes), split_window(b_hh, batch_sizes)
            inputs = list(zip(gis, biases, strict=True))  # (gi, b_hh) per step
        prev_h: list[Tensor] = []
        step = self._step(w_hh.detach(), None, w_hr)  # b_hh: folded, or per step in inputs
        outputs, final = scan_direction(step, inputs, state, reverse, prev_h)
        h_prev_box.append(join_window(prev_h, packed))  # h_{t-1} of every step, detached
        return join_window(outputs, packed), final

    def _batches_hh_grad(self) -> bool:
        """Whether every step adds h W_hh^T (+ b_hh) to its pre-activation as one term, so the
        gradient of W_hh can be batched over time by :class:`_BatchedHiddenWeightGrad`."""
        return True

    def _step(self, w_hh: Tensor, b_hh: Tensor | None, w_hr: Tensor | None) -> Step:
        """One step of this layer's cell with the given weights, for
        :func:`rnnlab.nn.scan.scan_direction`: ``step(state, gi[, b_hh_t]) -> state``; ``gi``
        is the step's input projection (n, G*H), ``b_hh_t`` a per-step b_hh (GRU)."""
        raise NotImplementedError

    def _fused(
        self, input: Tensor, states: tuple[Tensor, ...], batch_sizes: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """torch's fused kernel on the (batched) input; same layout in, same layout out.
        With ``batch_sizes``, ``input`` is packed data (N, I) and torch's packed kernel runs."""
        raise NotImplementedError

    def _kernel_args(self, packed: bool = False) -> tuple:
        """The trailing arguments torch's kernels share, after the flat weight list (the
        packed kernels take no ``batch_first``)."""
        args = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        return args if packed else (*args, self.batch_first)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.impl != "auto":
            text += f", impl={self.impl!r}"
        return text


def _refuse_projection(proj_size: int) -> None:
    """RNN and GRU take ``proj_size`` (torch's signature) but, as torch, only the LSTM has one."""
    if proj_size:
        raise LayerArgumentError("proj_size argument is only supported for LSTM, not RNN or GRU")


class RNN(Recurrent):
    r"""Multi-layer Elman RNN, a drop-in for ``torch.nn.RNN``.

    Each layer computes :math:`h_t = \phi(W x_t + b_{ih} + U h_{t-1} + b_{hh})` with
    :math:`\phi` = tanh or relu (see :class:`rnnlab.nn.cells.RNNCell`).
    """

    family = "rnn"
    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
    ) -> None:
        _refuse_projection(proj_size)
        if nonlinearity not in NONLINEARITIES:
            raise LayerArgumentError(
                f"RNN: unknown nonlinearity {nonlinearity!r}; choose one of "
                f"{', '.join(NONLINEARITIES)}"
            )
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,  # proj_size: the LSTM's only
            device,
            dtype,
            impl,
        )

    def equations(self) -> CellSpec:
        return find_cell(self.family, nonlinearity=self.nonlinearity)

    def _step(self, w_hh: Tensor, b_hh: Tensor | None, w_hr: Tensor | None) -> Step:
        nonlinearity = self.nonlinearity

        def step(state: tuple[Tensor, ...], gi: Tensor) -> tuple[Tensor, ...]:
            return (RNNCell.step(gi, state[0], w_hh, b_hh, nonlinearity),)  # (n, H)

        return step

    def _fused(
        self, input: Tensor, states: tuple[Tensor, ...], batch_sizes: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        kernel = _VF.rnn_tanh if self.nonlinearity == "tanh" else _VF.rnn_relu
        weights, packed = self._flat_weights(), batch_sizes is not None
        args = (input, batch_sizes) if packed else (input,)
        output, h_n = kernel(*args, states[0], weights, *self._kernel_args(packed))
        return output, (h_n,)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return (
            text if self.nonlinearity == "tanh" else text + f", nonlinearity={self.nonlinearity!r}"
        )


class GRU(Recurrent):
    r"""Multi-layer GRU, a drop-in for ``torch.nn.GRU``; see :class:`rnnlab.nn.cells.GRUCell`.

    ``reset="after"`` (default) is torch's and cuDNN's form and runs on the fused kernel;
    ``reset="before"`` (Cho et al. 2014) always runs the explicit loop.
    """

    family = "gru"
    num_gates = 3
    fold_hh_bias = False  # b_hn sits inside r ∘ (U_n h + b_hn)
    mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        reset: str = "after",
        impl: str = "auto",
    ) -> None:
        _refuse_projection(proj_size)
        if reset not in RESET_MODES:
            raise LayerArgumentError(f"GRU: unknown reset {reset!r}; choose 'after' or 'before'")
        if impl == "fused" and not find_cell(self.family, reset=reset).fused:
            raise LayerArgumentError(
                f"GRU: torch has no fused kernel for reset={reset!r}; use impl='auto' or 'explicit'"
            )
        self.reset = reset
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,  # proj_size: the LSTM's only
            device,
            dtype,
            impl,
        )

    def equations(self) -> CellSpec:
        return find_cell(self.family, reset=self.reset)

    def _scripting_variant(self) -> str:
        return "" if self.reset == "after" else f", reset={self.reset!r}"

    def _batches_hh_grad(self) -> bool:
        return self.reset == "after"  # "before" multiplies U_n by r∘h, not by h

    def _step(self, w_hh: Tensor, b_hh: Tensor | None, w_hr: Tensor | None) -> Step:
        reset = self.reset

        def step(
            state: tuple[Tensor, ...], gi: Tensor, b_step: Tensor | None = b_hh
        ) -> tuple[Tensor, ...]:
            # b_step: b_hh (3H,), or this step's (n, 3H) slice from the batched gradient
            return (GRUCell.step(gi, state[0], w_hh, b_step, reset),)  # (n, H)

        return step

    def _fused(
        self, input: Tensor, states: tuple[Tensor, ...], batch_sizes: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        weights, packed = self._flat_weights(), batch_sizes is not None
        args = (input, batch_sizes) if packed else (input,)
        output, h_n = _VF.gru(*args, states[0], weights, *self._kernel_args(packed))
        return output, (h_n,)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.reset == "after" else text + ", reset='before'"


class LSTM(Recurrent):
    r"""Multi-layer LSTM, a drop-in for ``torch.nn.LSTM``; see :class:`rnnlab.nn.cells.LSTMCell`.

    ``forget_bias`` is added to the forget slice of every layer's ``bias_ih`` at initialisation
    (Jozefowicz et al. 2015); the equations, and so the fused kernel, are unchanged.
    """

    family = "lstm"
    num_gates = 4
    num_states = 2
    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        forget_bias: float = 0.0,
        impl: str = "auto",
    ) -> None:
        self.forget_bias = float(forget_bias)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            impl,
        )

    def reset_parameters(self) -> None:
        """Uniform init as torch.nn, then ``forget_bias`` added to each layer's bias_ih[H:2H]."""
        super().reset_parameters()
        for k in range(self.num_layers):
            for reverse in (False, True)[: self.num_directions]:
                bias_ih = self.layer_weights(k, reverse)[2]
                add_forget_bias(bias_ih, self.hidden_size, self.forget_bias)

    def _step(self, w_hh: Tensor, b_hh: Tensor | None, w_hr: Tensor | None) -> Step:
        def step(state: tuple[Tensor, ...], gi: Tensor) -> tuple[Tensor, ...]:
            h, c = LSTMCell.step(gi, (state[0], state[1]), w_hh, b_hh)  # (n, H) each
            if w_hr is not None:  # LSTMP (Sak et al. 2014): h_t = W_hr (o ∘ tanh(c_t))
                h = h.mm(w_hr.t())  # (n, P)
            return h, c

        return step

    def _fused(
        self, input: Tensor, states: tuple[Tensor, ...], batch_sizes: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        weights, packed = self._flat_weights(), batch_sizes is not None
        args = (input, batch_sizes) if packed else (input,)
        output, h_n, c_n = _VF.lstm(*args, states, weights, *self._kernel_args(packed))
        return output, (h_n, c_n)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.forget_bias == 0.0 else text + f", forget_bias={self.forget_bias}"


class _BatchedHiddenWeightGrad(torch.autograd.Function):
    r"""Identity on ``z`` whose backward also gives the recurrent weight's gradient in ONE GEMM.

    The time loop computes every step's pre-activation as ``z_t + h_{t-1} W_hh^T`` with ``W_hh``
    *detached*, so autograd skips the small (G*H, B) x (B, H) GEMM it would otherwise run for
    ``dW_hh`` at every step. The gradient reaching ``z`` is then that of the pre-activations of
    all steps, and

    .. math::  \frac{\partial L}{\partial W_{hh}} = \sum_t \delta_t^\top h_{t-1}
               = \delta_{(TB, GH)}^\top H^{prev}_{(TB, H)}

    is one large GEMM, as fused RNN kernels do it. ``h_prev_box`` is a list the caller fills
    with the detached (T, B, P) tensor of previous states (packed: (N, P), the rows each step
    started from) once the loop has produced them.
    First-order gradients only: double backward raises (the cells in :mod:`rnnlab.nn.cells` are
    plain autograd and support it).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, z: Tensor, w_hh: Tensor, h_prev_box: list[Tensor]) -> Tensor:
        ctx.h_prev_box = h_prev_box
        return z.view_as(z)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        if torch.is_grad_enabled():  # backward(create_graph=True): would be silently wrong
            raise RuntimeError(
                "double backward through an explicit rnnlab layer is not supported; "
                "use impl='fused', or loop over rnnlab.nn.cells for higher-order gradients"
            )
        grad_w = None
        if ctx.needs_input_grad[1]:
            (h_prev,) = ctx.h_prev_box  # (T, B, P), or (N, P) for a packed window
            grad_2d = grad.reshape(-1, grad.size(-1))  # (T*B or N, G*H)
            grad_w = grad_2d.t().mm(h_prev.reshape(-1, h_prev.size(-1)))  # (G*H, P)
        return grad, grad_w, None


_LAYERS: dict[str, type[Recurrent]] = {layer.family: layer for layer in (RNN, GRU, LSTM)}


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    batch_first: bool = False,
    impl: str = "auto",
) -> Recurrent:
    """Build a recurrent stack by cell name (one of :data:`CELL_NAMES`): the layer class of
    the cell's family with the cell's options (:mod:`rnnlab.nn.registry`)."""
    spec = get_cell(cell)
    return _LAYERS[spec.family](
        input_size,
        hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        batch_first=batch_first,
        impl=impl,
        **spec.layer_options(),
    )


# torch.save(model) of a module holding these layers pickles their classes; torch.load's default
# weights_only=True unpickles only registered classes, so register ours (torch.nn's are already).
torch.serialization.add_safe_globals([RNN, GRU, LSTM])
