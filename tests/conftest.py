"""Shared fixtures: tiny corpora, a tiny trained run, the shared data folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# Test models are tiny: one thread is faster than two fighting over a shared machine.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RNNKIT_DATA", ROOT.parent / "shared" / "data"))

TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 12


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent (set RNNKIT_DATA)")
    return DATA


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.txt"
    p.write_text(TINY_TEXT, encoding="utf-8")
    return p


# A few seconds of training on a tiny corpus, shared by the tests that only read a run.
TINY_SETTINGS = dict(
    hidden_size=32, batch_size=4, bptt=16, epochs=6, lr=0.01, log_every=5, seed=7, eval_batch_size=4
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import rnnkit

    base = tmp_path_factory.mktemp("tiny_run")
    corpus = base / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    rnnkit.train(corpus, base / "run", progress=False, **TINY_SETTINGS)
    return base / "run"


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run, for tests that damage it."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst
