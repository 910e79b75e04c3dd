"""The ``rnnkit`` command line: argparse, one thin function per verb.

Each verb group lives in its own module with a ``register(subparsers)`` function that adds
its sub-commands and sets ``func`` to a function ``(args) -> int``. Modules here import torch
only inside those functions, so ``rnnkit --help`` starts instantly.

:func:`main` maps :class:`~rnnkit.errors.RnnkitError` to one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from rnnkit.errors import RnnkitError

# One module per verb group; each has register(subparsers).
COMMAND_MODULES = (
    "rnnkit.cli.lm",
    "rnnkit.cli.score",
    "rnnkit.cli.diagnose",
    "rnnkit.cli.ngram",
    "rnnkit.cli.rescore",
    "rnnkit.cli.classify",
    "rnnkit.cli.tag",
    "rnnkit.cli.translate",
    "rnnkit.cli.serve",
    "rnnkit.cli.condition",
)


def build_parser() -> argparse.ArgumentParser:
    from rnnkit.version import __version__

    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Recurrent neural network sequence models: train, evaluate, generate.",
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


class _NoteHandler(logging.Handler):
    """Prints a library warning as ``rnnkit: note: ...`` on the sys.stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"rnnkit: note: {record.getMessage()}", file=sys.stderr)


def _log_notes_to_stderr() -> None:
    """Warnings of the library (its ``rnnkit`` logger) go to stderr as notes."""
    logger = logging.getLogger("rnnkit")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler(logging.WARNING))
        logger.propagate = False


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles it itself: finish the step, save):
    unwinds like Ctrl-C, so nothing half-written is left, and exits with 143."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 user error, 130 interrupted,
    143 terminated)."""
    _log_notes_to_stderr()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 0
    # A scheduler's SIGTERM during start-up (reading data, building the model) would
    # otherwise kill the process outright; the trainer installs its own handler later.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        status = args.func(args)
    except RnnkitError as exc:
        print(f"rnnkit: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("rnnkit: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnkit generate RUN | head`
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(status or 0)
