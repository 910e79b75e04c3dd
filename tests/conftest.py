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


# -- word level (issue 4): a tiny toy-grammar corpus and three small runs -----------------------


def word_text(lines: int = 240, seed: int = 0) -> str:
    """A toy English corpus: short sentences over ~40 words, one a line."""
    import random

    rng = random.Random(seed)
    subj = ["the cat", "a dog", "the old man", "my friend", "she", "he", "they"]
    verb = ["sees", "likes", "eats", "wants", "finds", "holds"]
    obj = ["the fish", "a red ball", "some bread", "the small house", "it", "the big tree"]
    tail = ["", "today", "again", "in the garden", "with joy", "every day"]
    out = []
    for _ in range(lines):
        words = [rng.choice(subj), rng.choice(verb), rng.choice(obj), rng.choice(tail)]
        out.append(" ".join(w for w in words if w))
    return "\n".join(out) + "\n"


WORD_SETTINGS = dict(
    level="word", hidden_size=24, batch_size=8, bptt=10, epochs=3, lr=0.02, log_every=5,
    seed=5, eval_batch_size=4,
)  # fmt: skip


@pytest.fixture(scope="session")
def word_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Word-level runs on the toy corpus: 'sentence' (rnn), 'stream' (lstm), 'window'."""
    import rnnkit

    base = tmp_path_factory.mktemp("word_runs")
    (base / "train.txt").write_text(word_text(240, 0), encoding="utf-8")
    (base / "valid.txt").write_text(word_text(40, 1), encoding="utf-8")
    common = dict(valid=base / "valid.txt", progress=False, **WORD_SETTINGS)
    variants = {
        "sentence": dict(mode="sentence", cell="rnn"),
        "stream": dict(cell="lstm"),
        "window": dict(arch="window", context=3, embedding_size=12),
    }
    for name, extra in variants.items():
        rnnkit.train(base / "train.txt", base / name, **common, **extra)  # type: ignore[arg-type]
    return {"train": base / "train.txt", "valid": base / "valid.txt"} | {
        name: base / name for name in variants
    }
