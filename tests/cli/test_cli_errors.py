"""Bad input: one clear sentence naming the file or flag, exit status 2, nothing overwritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers import assert_one_sentence, run_main
from rnnkit.cli import main


def digest(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        (b"", "empty or holds only whitespace"),
        (b"  \n\t \n", "empty or holds only whitespace"),
        (b"caf\xe9 au lait", "not valid UTF-8 (byte offset 3)"),
    ],
)
def test_bad_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, fragment: str
) -> None:
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    code, _out, err = run_main(["train", str(corpus), "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert_one_sentence(err, "corpus.txt", fragment)
    assert not (tmp_path / "run").exists()  # nothing created for a run that cannot start


def test_bad_corpus_leaves_an_existing_run_untouched(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digest(run_copy)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    code, _, err = run_main(["train", str(bad), "--out", str(run_copy), "--overwrite"], capsys)
    assert code == 2
    assert_one_sentence(err, "bad.txt")
    assert digest(run_copy) == before


def test_existing_run_is_not_overwritten_without_the_flag(
    run_copy: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digest(run_copy)
    code, _, err = run_main(["train", str(tiny_corpus), "--out", str(run_copy)], capsys)
    assert code == 2
    assert_one_sentence(err, "already holds a run", "--resume", "--overwrite")
    assert digest(run_copy) == before


def test_prompt_with_unseen_characters(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["generate", str(tiny_run), "--prompt", "Zebra 🙂"], capsys)
    assert code == 2 and out == ""
    assert_one_sentence(err, "prompt", "never saw", "'🙂'")


@pytest.mark.parametrize("verb", ["eval", "generate", "plot"])
def test_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    argv = [verb, str(tmp_path)] + ([str(tmp_path / "notes.txt")] if verb == "eval" else [])
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert_one_sentence(err, str(tmp_path), "not an rnnkit run directory")


def test_missing_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["generate", str(tmp_path / "nope")], capsys)
    assert code == 2
    assert_one_sentence(err, "nope", "does not exist")


def test_truncated_weights(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = run_copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    code, _, err = run_main(["generate", str(run_copy)], capsys)
    assert code == 2
    assert_one_sentence(err, "model.safetensors", "truncated or corrupt")


def test_altered_weights(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = run_copy / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x40  # flip a bit inside the last tensor
    w.write_bytes(bytes(data))
    code, _, err = run_main(["eval", str(run_copy), str(run_copy / "vocab.json")], capsys)
    assert code == 2
    assert_one_sentence(err, "model.safetensors", "altered")


def test_config_shapes_disagree_with_weights(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["model"]["hidden_size"] += 1
    (run_copy / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_main(["generate", str(run_copy)], capsys)
    assert code == 2
    assert_one_sentence(err, "model.safetensors", "shape", "config.json")


@pytest.mark.parametrize("value", ["abc", 48.0, True])
def test_config_value_of_the_wrong_type(
    run_copy: Path, capsys: pytest.CaptureFixture[str], value: object
) -> None:
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["model"]["hidden_size"] = value
    (run_copy / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_main(["generate", str(run_copy)], capsys)
    assert code == 2
    assert_one_sentence(err, "config.json", "hidden_size", "must be int")


def test_run_files_follow_the_umask(tiny_run: Path) -> None:
    import os

    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.json", "model.safetensors", "vocab.json"):
        assert (tiny_run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_killed_write_leaves_no_orphan_after_the_next_start(run_copy: Path) -> None:
    from rnnkit.api.runs import RunLock

    orphan = run_copy / ".model.safetensors.x1y2.tmp"
    orphan.write_bytes(b"half a checkpoint")
    RunLock(run_copy).release()
    assert not orphan.exists() and (run_copy / "model.safetensors").exists()


def test_damaged_config(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / "config.json").write_text("{not json")
    code, _, err = run_main(["generate", str(run_copy)], capsys)
    assert code == 2
    assert_one_sentence(err, "config.json", "not a valid")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["generate", "{run}", "--greedy", "--temperature", "0.5"], ["--greedy conflicts"]),
        (["generate", "{run}", "--top-p", "1.5"], ["--top-p"]),
        (["generate", "{run}", "--temperature", "0"], ["--temperature must be a positive"]),
        (["generate", "{run}", "--temperature", "inf"], ["--temperature", "finite"]),
        (["train", "{corpus}", "--out", "{tmp}/x", "--max-time", "nan"], ["--max-time", "finite"]),
        (["train", "{corpus}", "--out", "{tmp}/x", "--clip", "nan"], ["--clip", "finite"]),
        (["train", "{corpus}", "--out", "{tmp}/x", "--seed", str(2**63)], ["--seed"]),
        (
            ["train", "{corpus}", "--corpus", "shakespeare", "--out", "{tmp}/x"],
            ["give the corpus once"],
        ),
        (
            ["train", "--resume", "{run}", "--hidden", "99"],
            ["--hidden-size 99 conflicts", "saved value"],
        ),
        (["train", "--resume", "{run}", "--overwrite"], ["--resume and --overwrite conflict"]),
        (["train", "{corpus}"], ["--out RUN is required"]),
        (
            ["train", "{corpus}", "--out", "{tmp}/x", "--tie-weights", "--embedding-size", "8"],
            ["--tie-weights"],
        ),
        (["train", "{corpus}", "--out", "{tmp}/x", "--device", "cuda"], ["CUDA is not available"]),
        (
            ["train", "{corpus}", "--out", "{tmp}/x", "--max-time", "-1"],
            ["--max-time must be a positive"],
        ),
        (
            ["train", "{corpus}", "--out", "{tmp}/x", "--min-lr", "-1"],
            ["--min-lr must not be negative"],
        ),
        (["eval", "{run}", "{corpus}", "--batch-size", "0"], ["--batch-size"]),
    ],
)
def test_conflicting_or_bad_flags(
    argv: list[str],
    fragments: list[str],
    tiny_run: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    subs = {"{run}": str(tiny_run), "{corpus}": str(tiny_corpus), "{tmp}": str(tmp_path)}
    for k, v in subs.items():
        argv = [a.replace(k, v) for a in argv]
    before = digest(tiny_run)
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert_one_sentence(err, *fragments)
    assert digest(tiny_run) == before


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--cell", "transformer"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_sigterm_before_training_begins_exits_143_with_nothing_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's SIGTERM while the corpus is read unwinds like Ctrl-C: exit 143, a note,
    no run folder; the process's own SIGTERM handler is back afterwards."""
    import os
    import signal

    import rnnkit.api

    def read_and_get_terminated(*args: object, **kw: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the start-up")

    monkeypatch.setattr(rnnkit.api, "train", read_and_get_terminated)
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n", encoding="utf-8")
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_main(["train", corpus, "--out", tmp_path / "run"], capsys)
    assert code == 143 and err.strip() == "rnnkit: terminated (SIGTERM)"
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGTERM) is before


def test_resume_with_a_config_whose_shapes_the_state_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = Path(__file__).resolve().parent.parent / "data"
    run = tmp_path / "run"
    shutil.copytree(data / "run_v0_1_0", run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["hidden_size"] += 1
    cfg["data"]["corpus"] = str(data / "run_v0_1_0.corpus.txt")
    (run / "config.json").write_text(json.dumps(cfg))
    before = digest(run)
    code, _, err = run_main(["train", "--resume", run, "--no-progress"], capsys)
    assert code == 2
    assert_one_sentence(err, "state.pt", "shape", "config.json")
    after = digest(run)
    after.pop(".lock", None)  # the run's lock, taken to resume: empty, and no run file
    assert after == before
