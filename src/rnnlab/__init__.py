"""rnnlab: recurrent neural language models from the CS224d equations."""

from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError, TrainingDiverged

__all__ = ["RnnlabError", "DataError", "CheckpointError", "ConfigError", "TrainingDiverged"]
__version__ = "0.1.0"
