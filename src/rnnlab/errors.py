"""The one exception type users see.

Library code raises :class:`RnnlabError` for anything the *user* can fix (bad input, impossible
settings, missing corpora, corrupt checkpoints). Its message is one line that says what went
wrong and what to do. The CLI prints it as ``rnnlab: error: <message>`` and exits with
``exit_code``; it never shows a traceback for these. Bugs stay ordinary exceptions.
"""

from __future__ import annotations


class RnnlabError(Exception):
    """A user-facing error: one line, with what to do about it."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class DataError(RnnlabError):
    """A corpus or text file that cannot be used (missing, empty, binary, wrong encoding)."""


class CheckpointError(RnnlabError):
    """A checkpoint that is missing, corrupt, truncated, foreign or inconsistent."""


class ConfigError(RnnlabError):
    """Settings that are impossible or unknown (negative sizes, unknown cell or preset)."""


class TrainingDiverged(RnnlabError):
    """The loss became NaN or exploded; the last good checkpoint is kept."""

    exit_code = 3


# torch.nn's exception contract. rnnlab's layers and cells raise the built-in exception torch.nn
# raises for the same misuse, so code written against torch.nn catches the same type; these
# classes are that built-in *and* an RnnlabError, so the CLI still prints their one-line message.


class LayerArgumentError(ConfigError, ValueError):
    """A layer argument with an impossible value (torch.nn raises ValueError): a size below one,
    dropout outside [0, 1], an unknown nonlinearity."""


class LayerArgumentTypeError(ConfigError, TypeError):
    """A layer argument of the wrong type (torch.nn raises TypeError): ``bias=1``,
    ``batch_first="False"``, ``hidden_size=2.0``."""


class LayerInputError(RnnlabError, ValueError):
    """An input a layer cannot take (torch.nn raises ValueError): wrong rank, or a dtype other
    than the weights'."""


class LayerShapeError(RnnlabError, RuntimeError):
    """Tensors that do not fit the layer or each other (torch.nn raises RuntimeError): a
    feature size other than ``input_size``, an empty sequence, a state of the wrong shape,
    batch or dtype."""


class LayerUnsupportedError(RnnlabError, NotImplementedError):
    """Something torch.nn can do that this layer cannot (e.g. ``torch.jit.script`` of the
    explicit loop); the message says what to use instead."""
