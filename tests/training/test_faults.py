"""Faults: Ctrl-C saves a resumable state; SIGKILL at any moment leaves a run that resumes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rnnkit
from rnnkit.training.checkpoint import load_state
from rnnkit.training.metrics import read_metrics

pytestmark = pytest.mark.slow

FLAGS = [
    "--hidden",
    "32",
    "--batch-size",
    "8",
    "--bptt",
    "32",
    "--validate-every",
    "5",
    "--log-every",
    "2",
    "--eval-batch-size",
    "4",
    "--epochs",
    "8",
    "--seed",
    "5",
    "--patience",
    "0",
]


def start(corpus: Path, run: Path) -> subprocess.Popen[str]:
    where = (
        ["--resume", str(run)]
        if (run / "config.json").exists()
        else [str(corpus), "--out", str(run)]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "train", *where, *(FLAGS if "--out" in where else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(
        Path(rnnkit.__file__).with_name("data").joinpath("shakespeare.txt").read_text()[:60_000]
    )
    return p


def wait_for_metrics(run: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if len(read_metrics(run / "metrics.jsonl")) >= 2:
            return
        time.sleep(0.05)
    raise AssertionError(f"training made no progress: {proc.communicate()}")


def test_ctrl_c_saves_a_resumable_state(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(corpus, run)
    wait_for_metrics(run, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped: interrupted" in out
    assert "resume with: rnnkit train --resume" in err
    assert "Traceback" not in err
    step = load_state(run / "state.pt")["position"]["step"]
    assert step >= 2
    proc = start(corpus, run)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "finished 8 epochs" in out


def test_sigkill_at_random_moments_leaves_a_run_that_resumes(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rng = random.Random(0)
    steps = []
    for i in range(4):
        proc = start(corpus, run)
        time.sleep(rng.uniform(1.0, 4.0))  # python start-up, data, training, checkpoint writes
        if i == 0:  # on a busy machine start-up alone can take longer: let one kill hit a run
            end = time.time() + 60
            while not (run / "config.json").exists() and time.time() < end:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate()  # reap it and close its pipes
        if (run / "config.json").exists():
            rnnkit.load(run, weights="last")  # the weights and config always load
            rnnkit.load(run, weights="best")
            steps.append(load_state(run / "state.pt")["position"]["step"])
    assert steps and steps == sorted(steps)
    proc = start(corpus, run)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "finished 8 epochs" in out
    records = read_metrics(run / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps))  # no step logged twice across the kills
