"""Faults: Ctrl-C saves a resumable state; SIGKILL at any moment leaves a run that resumes;
--checkpoint-every bounds what a kill loses; damaged weights, a full disk, an unwritable --out
and a model too large for the memory are each one sentence and exit status 2."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from helpers import assert_one_sentence
from rnnkit.cli import main
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


# -- --checkpoint-every, the carried train_loss and time, damaged weights, full disks -------

EVERY = [
    "--hidden",
    "48",
    "--batch-size",
    "8",
    "--bptt",
    "32",
    "--log-every",
    "5",
    "--eval-batch-size",
    "4",
    "--epochs",
    "3",
    "--seed",
    "5",
    "--validate-every",
    "0",
    "--threads",
    "1",
]


def train_process(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "train", *argv, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_kill_between_checkpoint_every_saves_resumes_to_the_uninterrupted_weights(
    corpus: Path, tmp_path: Path
) -> None:
    full, run = tmp_path / "full", tmp_path / "run"
    proc = train_process(str(corpus), "--out", str(full), *EVERY)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    total = load_state(full / "state.pt")["position"]["step"]

    proc = train_process(str(corpus), "--out", str(run), *EVERY, "--checkpoint-every", "0.3")
    saves: list[int] = []
    inside: list[int] = []  # saves inside an epoch: --checkpoint-every's (no validation there)
    end = time.time() + 120
    while time.time() < end and proc.poll() is None and len(saves) < 3:
        try:
            position = load_state(run / "state.pt")["position"]
        except Exception:  # not written yet
            position = {"step": 0}
        step = position["step"]
        if step and step not in saves:
            saves.append(step)
            if position["window"] > 0:
                inside.append(step)
        time.sleep(0.02)
    time.sleep(random.Random(1).uniform(0.05, 0.25))  # somewhere between two saves
    proc.kill()
    proc.communicate()
    position = load_state(run / "state.pt")["position"]
    assert len(saves) >= 2 and 0 < position["step"] < total, (saves, total)
    # (the kill itself may land just after an epoch's own save: the resume is checked anyway)
    assert inside, saves

    proc = train_process("--resume", str(run))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "finished 3 epochs" in out
    a = load_file(str(full / "last.safetensors"))
    b = load_file(str(run / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train_steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps))


SMALL = dict(hidden_size=16, batch_size=4, bptt=12, log_every=3, eval_batch_size=2, seed=3)


def test_train_loss_and_time_continue_on_resume(tiny_corpus: Path, tmp_path: Path) -> None:
    settings = {**SMALL, "epochs": 2, "validate_every": 10}
    rnnkit.train(tiny_corpus, tmp_path / "full", progress=False, **settings)
    rnnkit.train(tiny_corpus, tmp_path / "part", max_steps=13, progress=False, **settings)
    time.sleep(0.5)  # wall time between the calls is not training time
    rnnkit.train(resume=tmp_path / "part", progress=False)

    def train(run: Path) -> list[dict[str, Any]]:
        return [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]

    full, part = train(tmp_path / "full"), train(tmp_path / "part")
    assert [r["step"] for r in full] == [r["step"] for r in part]
    # the smoothed loss goes on from the stop as if never stopped (it restarted there before)
    assert [r["train_loss"] for r in full] == [r["train_loss"] for r in part]
    times = [r["time"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if "time" in r]
    assert times == sorted(times)  # the clock goes on from where the run stopped
    after = [r["time"] for r in part if r["step"] > 13]
    assert after[0] >= max(r["time"] for r in part if r["step"] <= 13)


@pytest.fixture
def stopped_run(tiny_corpus: Path, tmp_path: Path) -> Path:
    run = tmp_path / "r"
    rnnkit.train(tiny_corpus, run, max_steps=6, progress=False, validate_every=3, **SMALL)
    return run


@pytest.mark.parametrize("name", ["model.safetensors", "last.safetensors"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_resume_names_a_damaged_weights_file(
    stopped_run: Path, capsys: pytest.CaptureFixture[str], name: str, damage: str
) -> None:
    path = stopped_run / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x01  # one bit of one weight
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    state = (stopped_run / "state.pt").read_bytes()
    code = main(["train", "--resume", str(stopped_run), "--max-steps", "9", "--no-progress"])
    assert code == 2
    assert_one_sentence(capsys.readouterr().err, repr(str(path)), "corrupt", "cannot be resumed")
    assert (stopped_run / "state.pt").read_bytes() == state  # nothing trained on


def fail_writes_of(monkeypatch: pytest.MonkeyPatch, name: str, err: int) -> None:
    """os.fsync fails with ``err`` for the temporary file of ``name``, after its data is
    written (as a full disk shows itself on a delayed-allocation file system)."""
    fsync = os.fsync

    def failing(fd: int) -> None:
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(err, os.strerror(err))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("name", ["last.safetensors", "state.pt", "model.safetensors"])
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(
    stopped_run: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    files = ("model.safetensors", "last.safetensors", "state.pt")
    before = {f: (stopped_run / f).read_bytes() for f in files}
    fail_writes_of(monkeypatch, name, errno.ENOSPC)
    code = main(["train", "--resume", str(stopped_run), "--max-steps", "12", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err  # after the resumed run's progress lines
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert_one_sentence(line, repr(str(stopped_run / name)), "no space left on device", "intact")
    assert {f: (stopped_run / f).read_bytes() for f in files} == before
    assert not list(stopped_run.glob("*.tmp")) and not list(stopped_run.glob(".*.tmp"))
    monkeypatch.undo()  # space again: the run goes on from its last checkpoint
    assert main(["train", "--resume", str(stopped_run), "--max-steps", "12", "--no-progress"]) == 0
    assert load_state(stopped_run / "state.pt")["position"]["step"] == 12


@pytest.mark.parametrize("err", [errno.EACCES, errno.EROFS])
@pytest.mark.parametrize("exists", [True, False])
def test_an_out_that_cannot_be_written_is_one_sentence(
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    exists: bool,
) -> None:
    out = tmp_path / "out"
    if exists:
        out.mkdir()
    real_open, real_mkdir = open, Path.mkdir

    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(str(out)):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, *args, **kwargs)

    def refuse_mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if str(self).startswith(str(out)):
            raise OSError(err, os.strerror(err), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr(Path, "mkdir", refuse_mkdir)
    code = main(["train", str(tiny_corpus), "--out", str(out), "--max-steps", "2", "--hidden", "8"])
    assert code == 2
    reason = os.strerror(err).lower()
    err_text = capsys.readouterr().err  # a new folder is made once the data has been read
    assert "Traceback" not in err_text
    assert_one_sentence(err_text.strip().splitlines()[-1], repr(str(out)), reason)
    assert list(out.iterdir()) == [] if exists else not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 folder anyway")
def test_a_read_only_out_folder_is_one_sentence(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        code = main(["train", str(tiny_corpus), "--out", str(out), "--max-steps", "2"])
        assert code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert_one_sentence(err.strip().splitlines()[-1], repr(str(out)), "permission denied")
    finally:
        out.chmod(0o700)


def test_a_model_too_large_for_the_memory_is_one_sentence_and_leaves_no_folder(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["train", str(tiny_corpus), "--out", str(out), "--hidden-size", "1000000"]
    assert main([*argv, "--embedding-size", "8", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err  # after the line on the data read
    assert "Traceback" not in err
    assert_one_sentence(err.strip().splitlines()[-1], "too large for this machine's memory")
    assert not out.exists()
