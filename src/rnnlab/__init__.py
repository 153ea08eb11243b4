"""rnnlab: recurrent neural language models from the CS224d equations.

The public API, re-exported from the modules that define it.
"""

from rnnlab.batching import batchify, iter_windows, window_lengths
from rnnlab.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.corpora import (
    Corpus,
    CorpusSpec,
    default_corpus,
    list_corpora,
    load_corpus,
    load_text_file,
)
from rnnlab.dataset import DataConfig, LMData, load_data
from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError, TrainingDiverged
from rnnlab.evaluate import EvalResult, evaluate
from rnnlab.model import (
    AdaptiveLanguageModel,
    LanguageModel,
    LanguageModelConfig,
    default_cutoffs,
    detach_state,
)
from rnnlab.numpy_ref import NumpyRNNLM, gradient_check, numerical_gradient
from rnnlab.recurrent import CELL_NAMES, GRU, LSTM, RNN, Recurrent, make_recurrent
from rnnlab.sampling import SamplingConfig, generate
from rnnlab.train import OptimConfig, RunConfig, TrainConfig, Trainer, load_model
from rnnlab.vocab import Vocab, build_vocab, encode_text, make_tokenizer

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
