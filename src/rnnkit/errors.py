"""Errors a user can fix.

Anything raised as an :class:`RnnkitError` is the user's to fix (a bad file, flag or run
directory): the CLI prints its one-sentence message as ``rnnkit: error: <msg>`` and exits
with status 2. Any other exception is a bug in rnnkit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RnnkitError(Exception):
    """A problem the user can fix; the message is one sentence naming the file or flag."""


class DataError(RnnkitError):
    """An input file (corpus, text to score, n-best list, ARPA file) is missing or malformed."""


class RunError(RnnkitError):
    """A run directory is missing, incomplete, or its files disagree with each other."""


class ConfigError(RnnkitError):
    """Flags or configuration values are invalid or conflict with each other."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
