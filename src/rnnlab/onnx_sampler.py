"""Sampling from an exported rnnlab model with NumPy and onnxruntime only: no PyTorch.

``rnnlab export RUN_DIR --onnx FILE`` writes a run's language model as one ONNX graph of **one
step**, with everything a sampler needs in the file's metadata (:data:`FORMAT`)::

    inputs:   tokens     (B,) int64                    the token fed at this step
              state      (N, B, H) float32             N = layers x states per layer
    outputs:  log_probs  (B, V) float32                log p(next token | everything so far)
              new_state  (N, B, H) float32             the state after this step

The state is flat, in layer order: ``h_0, h_1, ...`` for RNN and GRU cells and
``h_0, c_0, h_1, c_1, ...`` for LSTM cells (the layout of
:mod:`rnnlab.generation.fast_step`); the metadata names each row (``state_names``). The batch
dimension B is dynamic. ``log_probs`` is the whole distribution for every head (for the adaptive
softmax heads, the full log-probability over the vocabulary).

This module loads such a file (:class:`OnnxLanguageModel`), encodes a prime with the run's own
tokenizer (characters, or whitespace words with ``<eos>`` closing each line), reads the context
(the line boundary, then the prime), and samples ``batch`` rows at once with temperature,
top-k and top-p from a seeded NumPy generator (:func:`sample`). The draw is the one of
:func:`rnnlab.generation.sampling.draw_categorical`: inverse-CDF sampling with one uniform
number per row (:func:`choose`), so the same uniform numbers pick the same tokens as
``rnnlab sample`` would from the same distribution. A character model never writes ``<unk>``.

Command line::

    python -m rnnlab.onnx_sampler model.onnx --prime "ROMEO:" --length 200 --seed 1 --batch 2

It imports only NumPy, onnxruntime (when a file is loaded) and :mod:`rnnlab.errors`, so it runs
where PyTorch is not installed (``import rnnlab`` does not need torch for it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rnnlab.errors import CheckpointError, ConfigError, RnnlabError

FORMAT = "rnnlab-onnx-step/1"
"""The ``format`` metadata value of a file this module reads (one step, the layout above)."""
INPUT_NAMES = ("tokens", "state")
OUTPUT_NAMES = ("log_probs", "new_state")
STATE_LAYOUT = (
    "state (N, batch, hidden) float32, N = num_layers * states_per_layer, rows in layer order: "
    "h_0, h_1, ... (rnn, gru) or h_0, c_0, h_1, c_1, ... (lstm); zeros to start"
)
REQUIRED_KEYS = (
    "format",
    "rnnlab_version",
    "vocab",
    "level",
    "unk_token",
    "eos_token",
    "boundary_id",
    "cell",
    "family",
    "head",
    "num_layers",
    "embed_size",
    "hidden_size",
    "vocab_size",
    "states_per_layer",
    "state_names",
    "state_layout",
)
"""The metadata keys every exported file carries (``rnnlab export`` writes them)."""
EXTRA_HINT = "pip install 'rnnlab[onnx]'"
"""How to install what exporting and sampling need (the ``onnx`` extra)."""


class OnnxLanguageModel:
    """An exported rnnlab language model: one onnxruntime session and its metadata.

    Args:
        path: a file written by ``rnnlab export RUN_DIR --onnx FILE``.
        threads: onnxruntime's intra-op threads (None: its default).

    Attributes: ``itos`` (the vocabulary, id -> token), ``level`` ("char" or "word"),
    ``unk_id``, ``boundary_id`` (the token read before any prime), ``num_states`` (N),
    ``hidden_size`` (H), ``meta`` (every metadata string).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"no ONNX file at {path}; make one with rnnlab export RUN_DIR --onnx FILE"
            )
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {threads}")
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(
                f"cannot load {path} as an ONNX model ({first[:200]}); export it again with "
                "rnnlab export"
            ) from None
        self.meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self._read_meta(path)

    def _read_meta(self, path: Path) -> None:
        meta = self.meta
        if meta.get("format") != FORMAT:
            found = meta.get("format")
            what = "no rnnlab metadata" if found is None else f"format {found!r}, not {FORMAT!r}"
            raise CheckpointError(
                f"{path} is an ONNX model but not an rnnlab export ({what}); make one with "
                "rnnlab export RUN_DIR --onnx FILE"
            )
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        try:
            if missing:
                raise KeyError(", ".join(missing))
            itos = json.loads(meta["vocab"])
            if not (isinstance(itos, list) and all(isinstance(t, str) for t in itos)):
                raise TypeError("vocab is not a list of strings")
            self.itos: list[str] = itos
            self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}
            self.level = meta["level"]
            if self.level not in ("char", "word"):
                raise ValueError(f"level {self.level!r}")
            self.unk_id = self.stoi[meta["unk_token"]]
            self.eos = meta["eos_token"]
            self.boundary_id = int(meta["boundary_id"])
            self.num_states = int(meta["num_layers"]) * int(meta["states_per_layer"])
            self.hidden_size = int(meta["hidden_size"])
            if not (0 <= self.boundary_id < len(itos) == int(meta["vocab_size"])):
                raise ValueError("vocabulary size or boundary id out of range")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{path} has damaged rnnlab metadata ({type(e).__name__}: {e}); export it again"
            ) from None
        names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if tuple(names) != INPUT_NAMES or tuple(outputs) != OUTPUT_NAMES:
            raise CheckpointError(
                f"{path} has inputs {names} and outputs {outputs}, not {list(INPUT_NAMES)} and "
                f"{list(OUTPUT_NAMES)}; export it again"
            )

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def init_state(self, batch: int) -> np.ndarray:
        """The zero state (N, batch, H) float32."""
        return np.zeros((self.num_states, batch, self.hidden_size), dtype=np.float32)

    def step(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed ``tokens`` (B,); return the next-token log-probabilities (B, V) and the state."""
        feed = {"tokens": np.asarray(tokens, dtype=np.int64).reshape(-1), "state": state}
        log_probs, new_state = self.session.run(None, feed)
        return log_probs, new_state

    def start(self, context: Sequence[int], batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Read ``context`` (ids) once at batch 1; return the log-probabilities after it and the
        state, repeated for ``batch`` rows."""
        if len(context) == 0:
            raise ConfigError("sampling needs at least one context token")
        state = self.init_state(1)
        for token in context:
            log_probs, state = self.step(np.array([token], dtype=np.int64), state)
        return np.repeat(log_probs, batch, axis=0), np.repeat(state, batch, axis=1)

    # ------------------------------------------------------------------ text

    def tokenize(self, text: str) -> list[str]:
        """The run's tokenizer: one token per character, or whitespace words with the
        end-of-line token closing every line (a final newline starts no extra line)."""
        if self.level == "char":
            return list(text)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        tokens: list[str] = []
        for line in lines:
            tokens.extend(line.split())
            tokens.append(self.eos)
        return tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        """The inverse of :meth:`tokenize` (words joined by spaces, end-of-line a newline)."""
        if self.level == "char":
            return "".join(tokens)
        out: list[str] = []
        line: list[str] = []
        for tok in tokens:
            if tok == self.eos:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(tok)
        if line:
            out.append(" ".join(line))
        return "".join(out)

    def prime_tokens(self, prime: str) -> list[str]:
        """The tokens of a prime: at word level an unfinished line (no closing end-of-line)."""
        tokens = self.tokenize(prime) if prime else []
        if self.level == "word" and tokens and tokens[-1] == self.eos and not prime.endswith("\n"):
            tokens = tokens[:-1]
        return tokens

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens``; one not in the vocabulary becomes ``<unk>``."""
        return [self.stoi.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]


def choose(
    log_probs: np.ndarray,
    uniforms: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    r"""One token id per row of ``log_probs`` (B, V) (or logits), from one uniform number in
    [0, 1) per row ``uniforms`` (B,).

    ``allowed`` (V,) or (B, V) bool restricts the choice first; ``temperature`` 0 is the argmax;
    otherwise the scores are divided by the temperature, tokens below the k-th largest score
    (top-k; ties kept) and tokens whose more likely tokens already reach mass p (top-p) are
    dropped, and with :math:`C` the cumulative distribution (summed in float64) the pick is the
    first :math:`j` with :math:`C_j > u\,C_{V-1}`: the rule of
    :func:`rnnlab.generation.sampling.pick`.
    """
    z = np.asarray(log_probs, dtype=np.float32)
    if z.ndim != 2:
        raise ConfigError(f"log_probs must be (batch, vocab), got shape {z.shape}")
    if allowed is not None:
        z = np.where(allowed, z, np.float32(-np.inf))
    if temperature == 0:
        return z.argmax(axis=-1)
    if temperature != 1.0:
        z = z / np.float32(max(temperature, 1e-8))
    vocab = z.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = -np.partition(-z, top_k - 1, axis=-1)[:, top_k - 1 : top_k]  # (B, 1)
        z = np.where(z < kth, np.float32(-np.inf), z)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")  # (B, V) most likely first
        ranked = np.take_along_axis(z, order, axis=-1)
        probs = _softmax(ranked)
        before = np.cumsum(probs, axis=-1) - probs  # mass ranked strictly before each token
        drop = np.empty_like(before, dtype=bool)
        np.put_along_axis(drop, order, before >= top_p, axis=-1)
        z = np.where(drop, np.float32(-np.inf), z)
    cdf = np.cumsum(_softmax(z), axis=-1, dtype=np.float64)  # (B, V)
    r = np.asarray(uniforms, dtype=np.float64).reshape(-1, 1) * cdf[:, -1:]  # (B, 1)
    ids = (cdf <= r).sum(axis=-1)  # first j with C_j > r
    return np.minimum(ids, vocab - 1)


def _softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax of float32 scores (-inf allowed; every row needs a finite one)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_options(
    length: int, batch: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Refuse impossible sampling options in one line."""
    if length < 1 or batch < 1:
        raise ConfigError(f"length and batch must be positive, got {length} and {batch}")
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top-p must be in (0, 1], got {top_p}")


def allowed_tokens(model: OnnxLanguageModel) -> np.ndarray | None:
    """The ids that may be drawn: all but ``<unk>`` for a character model (not a character)."""
    if model.level != "char" or model.vocab_size < 2:
        return None
    allowed = np.ones(model.vocab_size, dtype=bool)
    allowed[model.unk_id] = False
    return allowed


def sample_ids(
    model: OnnxLanguageModel,
    context: Sequence[int],
    *,
    length: int,
    batch: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``batch`` rows of ``length`` ids drawn after ``context``: (batch, length) int64."""
    check_options(length, batch, temperature, top_k, top_p)
    rng = rng or np.random.default_rng()
    allowed = allowed_tokens(model)
    log_probs, state = model.start(context, batch)
    out = np.empty((batch, length), dtype=np.int64)
    for t in range(length):
        ids = choose(log_probs, rng.random(batch), temperature, top_k, top_p, allowed)
        out[:, t] = ids
        if t + 1 < length:
            log_probs, state = model.step(ids, state)
    return out


def sample(
    model: OnnxLanguageModel,
    prime: str = "",
    *,
    length: int = 200,
    batch: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> list[str]:
    """``batch`` continuations of ``prime`` (each including it), decoded to text; ``seed`` makes
    them reproducible (NumPy's generator)."""
    check_options(length, batch, temperature, top_k, top_p)
    start = model.prime_tokens(prime)
    context = [model.boundary_id] + model.encode(start)
    rows = sample_ids(
        model,
        context,
        length=length,
        batch=batch,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        rng=np.random.default_rng(seed),
    )
    return [model.detokenize(start + model.decode(row)) for row in rows]


def _onnxruntime() -> Any:
    """The onnxruntime module, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            f"onnxruntime is not installed; {EXTRA_HINT} (or pip install onnxruntime)"
        ) from None
    return onnxruntime


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    """The ``python -m rnnlab.onnx_sampler`` arguments."""
    p = _Parser(
        prog="python -m rnnlab.onnx_sampler",
        description="Sample text from a model exported with rnnlab export --onnx "
        "(NumPy and onnxruntime; no PyTorch).",
    )
    p.add_argument("file", help="the .onnx file rnnlab export wrote")
    p.add_argument("--prime", default="", help="text the samples continue")
    p.add_argument("--length", type=int, default=300, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, help="draw from the K most likely tokens only")
    p.add_argument("--top-p", type=float, help="draw from the smallest set of mass >= P")
    p.add_argument("--seed", type=int, help="random seed (reproducible samples)")
    p.add_argument("--batch", type=int, default=1, help="samples, drawn as one batch")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--json", action="store_true", help="print a JSON list of {text}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0, or 2 for bad input)."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        check_options(args.length, args.batch, args.temperature, args.top_k, args.top_p)
        model = OnnxLanguageModel(args.file, threads=args.threads)
        texts = sample(
            model,
            args.prime,
            length=args.length,
            batch=args.batch,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    except RnnlabError as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps([{"text": t} for t in texts], ensure_ascii=False))
    else:
        print("\n\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
