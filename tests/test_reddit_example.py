"""The seeds' reddit tutorial as an example script: it runs and samples sentences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.data
def test_reddit_example_samples_sentences(data_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "reddit_rnnlm.py"), "--minutes", "0.05",
         "--samples", "3", "--min-words", "1"],
        capture_output=True, text=True, timeout=300, check=True,
        env={"RNNKIT_DATA": str(data_dir), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert "sentences from reddit-comments-2015-08.csv" in out.stdout
    samples = out.stdout.split("sampled sentences:")[1].strip().splitlines()
    assert len(samples) == 3 and all(s.strip() for s in samples)
    assert "<unk>" not in out.stdout.split("sampled sentences:")[1]
