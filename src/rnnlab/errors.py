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
