"""Polyphonic piano rolls: the four music benchmarks, padded batches, the multi-label loss and the
exact negative log-likelihood per time step.

**Data.** Boulanger-Lewandowski, Bengio & Vincent (2012) turned four MIDI collections into
piano rolls with standard splits; Chung et al. (2014) compared tanh, GRU and LSTM units on them.
A piece is a ``(T, 88)`` 0/1 float tensor: row ``t`` is the frame at time step ``t``, column
``j`` is MIDI pitch ``21 + j`` (A0 .. C8), 1 where the note sounds. The registry
(:mod:`rnnlab.data.registry`: ``jsb``, ``nottingham``, ``musedata``, ``pianomidi``) names the
``.mat`` files, :mod:`rnnlab.data.fetch` finds and checks them, and :func:`read_mat` reads them
with ``scipy.io.loadmat``.

**Model and loss.** The input at step ``t`` is the frame ``x_t``, the target is ``x_{t+1}``; the
88 notes of a frame are independent given the past::

    p(x_{t+1} | x_{<=t}) = prod_j s_j^{x_{t+1,j}} (1 - s_j)^{1 - x_{t+1,j}},   s = sigmoid(z_t)
    -log p(x_{t+1} | x_{<=t}) = sum_j BCE(z_{t,j}, x_{t+1,j})       (nats; logits z_t = W h_t + b)

The metric is the paper's: the average negative log-probability per time step, i.e. the sum of
that over every predicted step of every piece of a split, divided by the number of predicted
steps. By default a piece of ``T`` frames has ``T - 1`` predicted steps: its first frame only
starts it. With ``start_frame`` an all-zero frame is put before every piece, so the first real
frame is predicted too (from the zero state, after "silence") and all ``T`` frames are scored,
as the RNN-RBM papers score ``p(x_1)``. The first frame of a piece is the hardest to predict,
so the two conventions give different figures; results must say which one they use.

**Batches.** Pieces are independent: a batch pads ``B`` pieces to the longest one and masks the
padding; every piece starts from the zero state. Training pieces longer than the BPTT window
``tau`` are cut into windows of ``tau`` steps with the state carried (detached) from one window
to the next *within* the batch; no state ever crosses from one piece to another::

    piece lengths 5, 3, 4 (frames)  ->  inputs (4, 3, 88), mask (4, 3):

        t   b=0  b=1  b=2           mask    b=0 b=1 b=2
        0   x0   y0   z0                     1   1   1
        1   x1   y1   z1                     1   1   1
        2   x2   y2   z2                     1   0   1
        3   x3   0    z3                     1   0   0      (targets: one row further down)

    A piece's last frame is an input only at a masked step (it has no target), and padding
    comes after a piece, so it never changes what the piece's own steps see.

The training loss of a window is the NLL summed over its unmasked steps, divided by their number.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.data.fetch import Fetch, corpus_file
from rnnlab.data.registry import PIANOROLL, get_spec
from rnnlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

N_PITCHES = 88  # piano keys, MIDI 21 (A0) .. 108 (C8)
LOWEST_PITCH = 21
SPLITS = ("train", "valid", "test")
MAT_VARIABLES = {"train": "traindata", "valid": "validdata", "test": "testdata"}
POOL_BATCHES = 8  # batches whose pieces are sorted by length together (less padding)


@dataclass
class RollData:
    """The piano rolls of the three splits: lists of ``(T_i, 88)`` float32 0/1 tensors.

    ``level`` and ``vocab`` mirror :class:`rnnlab.data.dataset.LMData` (rolls have no vocabulary).
    """

    name: str
    train: list[Tensor]
    valid: list[Tensor]
    test: list[Tensor]
    description: str = ""
    level: str = PIANOROLL
    vocab: None = None

    def split(self, name: str) -> list[Tensor]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)

    def num_steps(self, name: str) -> int:
        """Predicted time steps of a split: sum over its pieces of T_i - 1."""
        return sum(p.size(0) - 1 for p in self.split(name))


# --------------------------------------------------------------------------- reading
def read_mat(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The pieces of each split of a Boulanger-Lewandowski ``.mat`` file, as ``(T, 88)`` uint8.

    The file holds ``traindata``, ``validdata`` and ``testdata``, each a 1 x N cell array of
    ``T x 88`` 0/1 matrices whose column ``j`` is MIDI pitch ``21 + j``: already our layout, so
    nothing is transposed or shifted.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DataError(f"{path} is not a readable MATLAB file ({exc}); replace it") from None
    out = {}
    for split, var in MAT_VARIABLES.items():
        if var not in mat:
            raise DataError(f"{path} has no variable {var!r}; it is not a piano-roll .mat file")
        cells = np.asarray(mat[var]).reshape(-1)
        out[split] = [np.asarray(c) for c in cells]
    return out


def rolls_from_arrays(
    name: str, splits: dict[str, Sequence[np.ndarray | Tensor]], description: str = ""
) -> RollData:
    """Check and convert ``(T, 88)`` 0/1 arrays of the three splits into a :class:`RollData`.

    Every piece needs at least 2 frames (one input, one target) and only 0s and 1s.
    """
    converted: dict[str, list[Tensor]] = {}
    for split in SPLITS:
        if split not in splits:
            raise DataError(f"{name} lacks the {split} split")
        pieces = []
        for i, arr in enumerate(splits[split]):
            t = torch.as_tensor(np.asarray(arr))
            if t.dim() != 2 or t.size(1) != N_PITCHES:
                raise DataError(
                    f"{name} {split} piece {i} has shape {tuple(t.shape)}, not (T, {N_PITCHES}); "
                    "it is not a piano roll"
                )
            if t.size(0) < 2:
                raise DataError(
                    f"{name} {split} piece {i} has {t.size(0)} frame(s); a piece needs at "
                    "least 2 (one input, one target)"
                )
            t = t.to(torch.float32)
            if not bool(((t == 0) | (t == 1)).all()):
                raise DataError(f"{name} {split} piece {i} holds values other than 0 and 1")
            pieces.append(t.contiguous())
        if not pieces:
            raise DataError(f"{name} has no {split} pieces")
        converted[split] = pieces
    return RollData(name, converted["train"], converted["valid"], converted["test"], description)


def load_rolls(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
    start_frame: bool = False,
) -> RollData:
    """A named piano-roll corpus (``jsb``, ``nottingham``, ``musedata``, ``pianomidi``).

    The file comes checksum-verified from the mirror (``data_dir`` or ``$RNNLAB_DATA_DIR``), the
    user cache, or upstream (see :func:`rnnlab.data.fetch.corpus_file`). ``start_frame`` puts an
    all-zero frame before every piece (see the module docstring).
    """
    if not isinstance(start_frame, bool):
        raise ConfigError(f"start_frame must be True or False, not {start_frame!r}")
    spec = get_spec(name)
    if spec.level != PIANOROLL:
        raise ConfigError(f"corpus '{name}' is text, not piano rolls; load it with load_data")
    (rel,) = spec.files
    path = corpus_file(spec, rel, data_dir=data_dir, download=download, fetch=fetch)
    data = rolls_from_arrays(name, read_mat(path), spec.description)
    if start_frame:
        data = with_start_frame(data)
    log.info(
        "%s: %d/%d/%d pieces, %d/%d/%d predicted steps",
        name,
        *(len(data.split(s)) for s in SPLITS),
        *(data.num_steps(s) for s in SPLITS),
    )
    return data


def with_start_frame(data: RollData) -> RollData:
    """``data`` with an all-zero frame before every piece: ``(T, 88) -> (T + 1, 88)``."""

    def prepend(pieces: list[Tensor]) -> list[Tensor]:
        return [torch.cat([p.new_zeros(1, p.size(1)), p]) for p in pieces]

    return RollData(
        data.name,
        prepend(data.train),
        prepend(data.valid),
        prepend(data.test),
        data.description + " (an all-zero start frame before every piece)",
    )


def fraction_pieces(pieces: list[Tensor], fraction: float) -> list[Tensor]:
    """The first ``fraction`` of the pieces (at least one): data-size studies."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"data fraction must be in (0, 1], got {fraction}")
    return pieces if fraction >= 1.0 else pieces[: max(1, int(len(pieces) * fraction))]


# --------------------------------------------------------------------------- batches
class PaddedBatch(NamedTuple):
    """``B`` pieces padded to the longest: inputs and targets ``(T - 1, B, 88)`` (T the longest
    piece's frames), mask ``(T - 1, B)`` True on predicted steps, and each piece's frames."""

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    lengths: list[int]


def pad_pieces(pieces: Sequence[Tensor]) -> PaddedBatch:
    """Lay out ``pieces`` time-major with zero padding and the mask of real steps."""
    if not pieces:
        raise ConfigError("a batch needs at least one piece")
    lengths = [int(p.size(0)) for p in pieces]
    steps = max(lengths) - 1
    ref = pieces[0]
    frames = torch.zeros(steps + 1, len(pieces), N_PITCHES, dtype=ref.dtype, device=ref.device)
    for b, p in enumerate(pieces):
        frames[: p.size(0), b] = p
    idx = torch.arange(steps, device=ref.device).unsqueeze(1)  # (T - 1, 1)
    mask = idx < torch.tensor(lengths, device=ref.device).unsqueeze(0) - 1  # (T - 1, B)
    return PaddedBatch(frames[:-1], frames[1:], mask, lengths)


def nll_sum(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Summed negative log-likelihood (nats) of the unmasked steps: sum_{t,b: mask} sum_j BCE.

    logits, targets: (L, B, 88); mask: (L, B) bool. Padded steps are never looked at. Half
    precision is summed in float32; float32 and float64 stay as they are.
    """
    z = logits[mask]  # (N, 88), the predicted steps only
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return F.binary_cross_entropy_with_logits(z, targets[mask].to(z.dtype), reduction="sum")


def steps_in_window(lengths: Sequence[int], offset: int, length: int) -> int:
    """Predicted steps of pieces with ``lengths`` frames inside input rows offset..offset+length-1."""
    return sum(max(0, min(n - 1 - offset, length)) for n in lengths)


def epoch_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int
) -> list[list[int]]:
    """The pieces of every batch of one epoch (indices into ``lengths``).

    The pieces are shuffled; each pool of ``POOL_BATCHES`` batches is sorted by length and cut
    into batches (similar lengths pad less); then the batches are shuffled. A private NumPy
    generator seeded by ``(seed, epoch)`` draws it all, so a resumed run rebuilds the same epoch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]
