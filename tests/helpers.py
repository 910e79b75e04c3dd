"""Helpers shared by the CLI tests: import them by name (``from helpers import ...``); pytest
puts this folder on sys.path when it loads tests/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from rnnkit.cli import main


def run_main(
    argv: Sequence[str | os.PathLike[str]], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``rnnkit ARGV`` in-process: its exit status, stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_sentence(err: str, *fragments: str) -> str:
    """``err`` (a command's stderr) is one sentence, ``rnnkit: error: ...`` ending with a full
    stop, with no traceback, naming every fragment given; returns that line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("rnnkit: error: ") and line.endswith("."), line
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line
