"""Fixtures for the n-gram tests: PTB from the shared data folder, when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="session")
def ptb() -> Path:
    data = Path(os.environ.get("RNNKIT_DATA", ROOT.parent / "shared" / "data"))
    d = data / "ptb"
    if not (d / "ptb.train.txt").is_file():
        pytest.skip(f"PTB is absent from {d} (set RNNKIT_DATA to the shared data folder)")
    return d
