"""The ``rnnlab`` command: thin subcommands that parse arguments and call the library.

Every user-facing failure is a :class:`rnnlab.errors.RnnlabError`; :func:`main` prints it as one
line on stderr and exits with its code (2 for bad input, 3 for a diverged run, 130 when
interrupted). Results go to stdout; progress bars and logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from rnnlab.cli.export import _add_export, cmd_export
from rnnlab.cli.inference import (
    _add_corpora,
    _add_eval,
    _add_poem,
    _add_sample,
    _add_score,
    cmd_corpora,
    cmd_eval,
    cmd_poem,
    cmd_sample,
    cmd_score,
)
from rnnlab.cli.lab import _add_compare, _add_gradflow, build_grid_config, compare_settings
from rnnlab.cli.serve import _add_serve
from rnnlab.cli.train import _add_config, _add_train, build_run_config, cmd_config, cmd_train
from rnnlab.errors import RnnlabError

log = logging.getLogger("rnnlab")

__all__ = [
    "main",
    "make_parser",
    "build_run_config",
    "build_grid_config",
    "compare_settings",
    "cmd_train",
    "cmd_config",
    "cmd_eval",
    "cmd_sample",
    "cmd_poem",
    "cmd_score",
    "cmd_corpora",
    "cmd_export",
]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``rnnlab: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rnnlab: error: {message} (see {self.prog} --help)\n")


VERBOSE_HELP = "log progress details to stderr"


def make_parser() -> argparse.ArgumentParser:
    """The ``rnnlab`` parser and its subcommands; ``-v/--verbose`` is accepted before the
    subcommand and after it (``rnnlab -v train``, ``rnnlab train -v``)."""
    parser = _Parser(prog="rnnlab", description="Recurrent neural language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_train,
        _add_eval,
        _add_sample,
        _add_poem,
        _add_score,
        _add_corpora,
        _add_export,
        _add_compare,
        _add_gradflow,
        _add_config,
        _add_serve,
    ):
        add(sub)
    for command in sub.choices.values():
        # SUPPRESS: a subcommand without -v leaves the value given before it (or False) alone
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 success, 2 bad input, 3 diverged, 130 interrupted).

    Every failure is one line on stderr starting ``rnnlab: error:``, never a traceback (with
    ``--verbose`` an unexpected error also logs its traceback, for a bug report).
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "train"])
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="rnnlab: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except RnnlabError as e:
        print(f"rnnlab: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rnnlab: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # disk full, permissions, a file vanishing under us
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"rnnlab: error: {e.strerror or e}{where}; "
            "free disk space or fix permissions and retry",
            file=sys.stderr,
        )
        return 1
    except MemoryError:
        print(
            "rnnlab: error: out of memory; use a smaller model, --batch-size or --bptt",
            file=sys.stderr,
        )
        return 1
    except Exception as e:  # a bug: still one line, the traceback only with --verbose
        if args.verbose:
            log.info("unexpected error", exc_info=True)
        print(
            f"rnnlab: error: unexpected {type(e).__name__}: {_one_line(str(e))}; this is a bug in "
            "rnnlab, please report it with the output of --verbose",
            file=sys.stderr,
        )
        return 1


def _one_line(message: str) -> str:
    return " ".join(message.split())
