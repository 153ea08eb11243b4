"""rnnlab: recurrent neural language models from the CS224d equations.

The public API, re-exported from the modules that define it.

Everything here needs PyTorch except :mod:`rnnlab.onnx_sampler` (NumPy and onnxruntime only,
for models exported with ``rnnlab export --onnx``). Without torch the package still imports, so
``import rnnlab.onnx_sampler`` works; any other public name then raises a one-line
ImportError saying so.
"""

import sys as _sys

try:
    import torch as _torch  # noqa: F401  (only the question whether it imports)
except ImportError:  # a torch-free install: only rnnlab.onnx_sampler works
    _HAVE_TORCH = False
else:
    _HAVE_TORCH = True
    del _torch

from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError, TrainingDiverged

if _HAVE_TORCH:
    from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
    from rnnlab.data.batching import batchify, iter_windows, window_lengths
    from rnnlab.data.corpora import load_corpus
    from rnnlab.data.corpus import Corpus
    from rnnlab.data.dataset import DataConfig, LMData, load_data
    from rnnlab.data.default_corpus import default_corpus
    from rnnlab.data.registry import CorpusSpec, list_corpora
    from rnnlab.data.text_files import load_text_file
    from rnnlab.data.vocab import Vocab, build_vocab, encode_text, make_tokenizer
    from rnnlab.evaluation.text import EvalResult, evaluate
    from rnnlab.generation.sampling import SamplingConfig, generate
    from rnnlab.models.base import detach_state
    from rnnlab.models.config import LanguageModelConfig, default_cutoffs
    from rnnlab.models.text import AdaptiveLanguageModel, LanguageModel
    from rnnlab.nn import numpy_ref
    from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
    from rnnlab.nn.numpy_ref import NumpyRNNLM, gradient_check, numerical_gradient
    from rnnlab.nn.recurrent import CELL_NAMES, GRU, LSTM, RNN, Recurrent, make_recurrent
    from rnnlab.runs.load import load_model
    from rnnlab.training.trainer import Trainer

__all__ = [
    "RNNCell", "GRUCell", "LSTMCell", "RNN", "GRU", "LSTM", "Recurrent", "CELL_NAMES", "make_recurrent",
    "LanguageModel", "LanguageModelConfig", "detach_state", "AdaptiveLanguageModel", "default_cutoffs",
    "NumpyRNNLM", "gradient_check", "numerical_gradient",
    "Corpus", "CorpusSpec", "load_corpus", "list_corpora", "load_text_file", "default_corpus",
    "Vocab", "build_vocab", "make_tokenizer", "encode_text",
    "batchify", "iter_windows", "window_lengths",
    "DataConfig", "LMData", "load_data",
    "RunConfig", "OptimConfig", "TrainConfig", "Trainer", "load_model",
    "EvalResult", "evaluate", "SamplingConfig", "generate",
    "RnnlabError", "DataError", "CheckpointError", "ConfigError", "TrainingDiverged",
]  # fmt: skip
__version__ = "0.1.0"

if _HAVE_TORCH:
    # ``import rnnlab.numpy_ref`` keeps working: the NumPy reference moved to rnnlab.nn.numpy_ref.
    _sys.modules.setdefault("rnnlab.numpy_ref", numpy_ref)
else:

    def __getattr__(name: str) -> object:
        """Without torch, a public name is a one-line ImportError (``from rnnlab import LSTM``)."""
        if name in __all__ or name == "numpy_ref":
            raise ImportError(
                f"rnnlab.{name} needs PyTorch, which is not installed; without it only "
                "rnnlab.onnx_sampler works (pip install torch, or pip install rnnlab)"
            )
        raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")
