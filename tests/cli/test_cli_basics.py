"""The command line end to end: train, eval, generate, plot, resume; python -m rnnkit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rnnkit
from rnnkit.cli import main


def test_python_dash_m_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rnnkit", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"rnnkit {rnnkit.__version__}"


def test_help_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("train", "eval", "generate", "plot"):
        assert verb in out


def test_train_eval_generate_plot_resume(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", str(tiny_corpus), "--out", str(run), "--cell", "gru", "--hidden", "16",
            "--layers", "2", "--batch-size", "4", "--bptt", "8", "--epochs", "2", "--seed", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stopped: finished 2 epochs" in out and "bits/char" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["cell"] == "gru" and config["model"]["num_layers"] == 2
    assert main(["eval", str(run), str(tiny_corpus)]) == 0
    assert "bits/char" in capsys.readouterr().out
    assert main(["generate", str(run), "--max-new-tokens", "10", "--num-samples", "2"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 2
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").is_file()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert "finished 3 epochs" in capsys.readouterr().out
