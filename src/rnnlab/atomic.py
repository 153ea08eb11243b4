"""Atomic file writes: the one routine every writer of checkpoints, run files and caches uses.

:func:`write_atomic` puts the bytes in a temporary file beside the target, named
``.<name>.tmp-<pid>`` (:func:`rnnlab.runs.files.remove_stale_temp_files` relies on that pattern
to clear what a killed process left behind), fsyncs it, renames it over the target with
``os.replace`` and fsyncs the directory so that the rename survives a crash. Whatever fails, the
temporary file is removed and the target keeps its old content (or stays absent). Callers turn
the ``OSError`` into their own one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temp_path(path: str | Path, pid: int | str | None = None) -> Path:
    """The temporary file :func:`write_atomic` writes ``path`` through, ``.<name>.tmp-<pid>``
    (``pid`` default: this process; ``"*"`` gives the glob pattern of every process's)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def write_atomic(
    path: str | Path, data: bytes, *, check: Callable[[Path], None] | None = None
) -> None:
    """Write ``data`` to ``path`` atomically, creating its folder if needed.

    The bytes go to ``.<name>.tmp-<pid>`` beside ``path`` and are fsynced; ``check``, if given,
    is called with the temporary file's path and may raise to refuse it; then the file is
    renamed over ``path`` and the directory fsynced. On any failure (an ``OSError``, a refusal,
    an interrupt) the temporary file is removed, ``path`` is untouched and the error propagates.
    """
    path = Path(path)
    tmp = temp_path(path)
    replaced = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
        replaced = True
    finally:
        if not replaced:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort (some systems cannot open or fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
