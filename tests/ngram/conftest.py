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


@pytest.fixture(scope="session")
def ptb_kn5(ptb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """KN5 on PTB train, written as ARPA once per session."""
    from rnnkit.ngram import train_kneser_ney, write_arpa

    path = tmp_path_factory.mktemp("ptb") / "kn5.arpa"
    write_arpa(train_kneser_ney(ptb / "ptb.train.txt", 5), path)
    return path
