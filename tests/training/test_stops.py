"""However a run stops, its default weights are the best validated ones, never the initial ones.

Each way of stopping gets a test: the epochs, the schedule, --max-steps, --max-time, Ctrl-C
(SIGINT), SIGTERM, and a kill before the first validation (no validation possible: the last
weights, with a note). --weights last reads the latest weights instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import rnnkit
from helpers import assert_one_sentence
from rnnkit.cli import main
from rnnkit.training.checkpoint import load_state
from rnnkit.training.metrics import read_metrics

# No validation inside the budgets below: only a validation at the stop can score the weights.
NEVER = dict(hidden_size=16, batch_size=4, bptt=12, log_every=3, eval_batch_size=2, seed=3)


def meta(run: Path, name: str = "model.safetensors") -> dict[str, str]:
    with safe_open(str(run / name), "pt") as f:
        return dict(f.metadata())


def initial_weights(corpus: Path, tmp_path: Path, **settings: object) -> dict[str, torch.Tensor]:
    """The weights a run starts from (same seed): what eval must never read after training."""
    run = tmp_path / "initial"
    rnnkit.train(corpus, run, max_steps=1, progress=False, lr=1e-30, **settings)  # type: ignore[arg-type]
    return load_file(str(run / "model.safetensors"))


def assert_trained_and_validated(run: Path, step: int) -> None:
    m = meta(run)
    assert m["validated"] == "yes" and m["step"] == str(step)
    final = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "final"]
    assert final and final[-1]["step"] == step and final[-1]["best"]
    loaded = rnnkit.load(run)
    assert loaded.note is None and loaded.weights == "model.safetensors"


def test_max_steps_before_any_validation_validates_the_final_weights(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    result = rnnkit.train(tiny_corpus, tmp_path / "r", max_steps=7, progress=False, **NEVER)
    assert result.stopped == "reached --max-steps 7"
    assert_trained_and_validated(tmp_path / "r", 7)
    assert result.best_valid_loss < float("inf")
    best = load_file(str(tmp_path / "r" / "model.safetensors"))
    last = load_file(str(tmp_path / "r" / "last.safetensors"))
    start = initial_weights(tiny_corpus, tmp_path, **NEVER)
    for k in best:
        assert torch.equal(best[k], last[k])
    assert any(not torch.equal(best[k], start[k]) for k in best)


def test_max_time_before_any_validation_validates_the_final_weights(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "big.txt"  # an epoch far longer than the budget: no validation in it
    corpus.write_text(tiny_corpus.read_text() * 200, encoding="utf-8")
    result = rnnkit.train(corpus, tmp_path / "r", max_time=0.5, progress=False, **NEVER)
    assert result.stopped.startswith("reached --max-time")
    assert_trained_and_validated(tmp_path / "r", result.step)
    # eval reads those weights: the perplexity is the final validation's, not an untrained one
    final = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "final"]
    assert final[-1]["valid_loss"] == pytest.approx(result.best_valid_loss)


def test_a_stop_after_validations_keeps_the_final_weights_only_when_better(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "r"
    rnnkit.train(tiny_corpus, run, max_steps=10, validate_every=4, progress=False, **NEVER)
    records = read_metrics(run / "metrics.jsonl")
    scored = [r for r in records if r["kind"] in ("valid", "final")]
    assert [r["step"] for r in scored] == [4, 8, 10]
    best = min(scored, key=lambda r: r["valid_loss"])
    assert meta(run)["step"] == str(best["step"])  # the best of every validation, stop's too


def test_epochs_and_schedule_stops_end_on_a_validation(tiny_run: Path) -> None:
    records = read_metrics(tiny_run / "metrics.jsonl")
    assert not [r for r in records if r["kind"] == "final"]  # the last epoch validated already
    assert meta(tiny_run)["validated"] == "yes"


def test_a_resumed_run_is_unchanged_by_the_validation_at_its_stop(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    settings = {**NEVER, "epochs": 2, "lr_schedule": "rnnlm", "min_improvement": 1.5}
    full = rnnkit.train(tiny_corpus, tmp_path / "full", progress=False, **settings)
    rnnkit.train(tiny_corpus, tmp_path / "part", max_steps=5, progress=False, **settings)
    rest = rnnkit.train(resume=tmp_path / "part", progress=False)
    assert rest.step == full.step
    a, b = (load_file(str(tmp_path / n / "last.safetensors")) for n in ("full", "part"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lrs = [
        [r["lr"] for r in read_metrics(tmp_path / n / "metrics.jsonl") if r["kind"] == "valid"]
        for n in ("full", "part")
    ]
    assert lrs[0] == lrs[1]  # the schedule never saw the stop's validation


def test_weights_last_and_the_note_for_a_run_never_validated(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a run killed before it could validate: model.safetensors missing, last weights trained
    (run_copy / "model.safetensors").unlink()
    text = run_copy / "t.txt"
    text.write_text("Speak, speak.\n", encoding="utf-8")
    assert main(["eval", str(run_copy), str(text)]) == 0
    err = capsys.readouterr().err
    assert "rnnkit: note:" in err and "stopped before any validation" in err
    assert "last weights" in err
    assert main(["eval", str(run_copy), str(text), "--weights", "last"]) == 0
    assert "note" not in capsys.readouterr().err
    assert main(["generate", str(run_copy), "--weights", "last", "--max-new-tokens", "5"]) == 0
    assert rnnkit.load(run_copy, weights="last").weights == "last.safetensors"


def _start(corpus: Path, run: Path, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "train", str(corpus), "--out", str(run), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_any_validation_saves_and_validates(
    tiny_corpus: Path, tmp_path: Path, signum: int, status: int
) -> None:
    run = tmp_path / "r"
    corpus = tmp_path / "big.txt"
    corpus.write_text(tiny_corpus.read_text() * 40, encoding="utf-8")
    flags = ["--hidden", "16", "--batch-size", "4", "--bptt", "12", "--log-every", "1"]
    proc = _start(corpus, run, *flags, "--epochs", "1000")
    end = time.time() + 60
    while time.time() < end and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(read_metrics(run / "metrics.jsonl")) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err and "resume with" in err
    step = load_state(run / "state.pt")["position"]["step"]
    assert step >= 3
    assert_trained_and_validated(run, step)


@pytest.mark.slow
def test_a_run_directory_is_locked_while_a_process_trains_in_it(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    corpus = tmp_path / "big.txt"
    corpus.write_text(tiny_corpus.read_text() * 40, encoding="utf-8")
    flags = ["--hidden", "16", "--batch-size", "4", "--bptt", "12", "--log-every", "1"]
    proc = _start(corpus, run, *flags, "--epochs", "1000")
    end = time.time() + 60
    while time.time() < end and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(read_metrics(run / "metrics.jsonl")) >= 2:
            break
        time.sleep(0.05)
    try:
        before = (run / "config.json").read_bytes()
        for argv in (["--resume", str(run)], [str(corpus), "--out", str(run), "--overwrite"]):
            assert main(["train", *argv, "--max-steps", "1"]) == 2
            assert_one_sentence(capsys.readouterr().err, "is in use by another rnnkit process")
        assert (run / "config.json").read_bytes() == before
    finally:
        proc.kill()  # a killed process leaves no stale lock: the OS drops it
        proc.communicate()
    assert main(["train", "--resume", str(run), "--max-steps", "1000000", "--epochs", "1"]) in (0,)
