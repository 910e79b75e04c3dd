"""Input faults (issue 17): symbolic link loops, FIFOs and process substitutions, and a
vocabulary file whose tokens were edited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import rnnkit
from helpers import assert_one_sentence, run_main
from rnnkit.errors import DataError, RunError
from rnnkit.text import reading
from rnnkit.text.columns import LabelVocab
from rnnkit.text.vocab import CHECKSUM, Vocab

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


# -- symbolic link loops: one sentence naming the path, exit 2, nothing made ----------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{loop}", "--out", "{tmp}/run"],
        ["train", "{corpus}", "--valid", "{loop}", "--out", "{tmp}/run", "--level", "word"],
        ["train", "--resume", "{tmp}/missing", "--corpus", "{loop}"],
        ["classify", "train", "{loop}", "--out", "{tmp}/run"],
        ["classify", "train", "{corpus}", "--valid", "{loop}", "--out", "{tmp}/run"],
        ["tag", "train", "{loop}", "--out", "{tmp}/run"],
        ["translate", "train", "{loop}", "{corpus}", "--out", "{tmp}/run"],
        ["condition", "train", "{loop}", "--out", "{tmp}/run"],
        ["ngram", "train", "--order", "2", "{loop}", "-o", "{tmp}/m.arpa"],
    ],
)
def test_a_symbolic_link_loop_given_to_train_is_one_sentence(
    argv: list[str], loop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("pos\tthe cat sees it\nneg\tthe dog\n")
    args = [a.format(loop=loop, tmp=tmp_path, corpus=corpus) for a in argv]
    code, _, err = run_main(args, capsys)
    assert code == 2
    if "--resume" in argv:  # the run is checked first; that is one sentence too
        assert_one_sentence(err)
        return
    assert_one_sentence(err, str(loop), "symbolic link loop")
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.arpa").exists()


def test_a_symbolic_link_loop_given_to_eval_or_score_is_one_sentence(
    tiny_run: Path, word_runs: dict[str, Path], loop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, said in (
        (["eval", tiny_run, loop], "symbolic link loop"),
        (["score", word_runs["sentence"], loop], "symbolic link loop"),
        (["eval", loop, word_runs["valid"]], "does not exist"),  # MODEL: the run's own check
    ):
        code, _, err = run_main([str(a) for a in argv], capsys)
        assert code == 2, argv
        assert_one_sentence(err, str(loop), said)


def test_every_reader_reports_a_loop_the_same_way(loop: Path) -> None:
    from rnnkit.audio import read_manifest
    from rnnkit.ngram import read_lines as ngram_lines
    from rnnkit.tasks.condition import read_vectors
    from rnnkit.text.columns import read_columns
    from rnnkit.text.corpus import iter_lines
    from rnnkit.text.labeled import read_tsv
    from rnnkit.text.parallel import read_lines

    readers = [
        lambda: list(iter_lines(loop)),
        lambda: read_tsv(loop),
        lambda: read_columns(loop),
        lambda: read_lines(loop),
        lambda: read_manifest(loop),
        lambda: read_vectors(loop),
        lambda: ngram_lines(loop),
        lambda: reading.input_path(loop),
    ]
    for read in readers:
        with pytest.raises(DataError, match="symbolic link loop") as info:
            read()
        assert str(loop) in str(info.value)


def test_a_dangling_link_and_a_folder_are_named_too(tmp_path: Path) -> None:
    dangling = tmp_path / "gone.txt"
    dangling.symlink_to(tmp_path / "nowhere.txt")
    with pytest.raises(DataError, match="symbolic link to a file that does not exist"):
        reading.check_readable(dangling)
    with pytest.raises(DataError, match="is a directory"):
        list(reading.iter_text(tmp_path))


# -- non-seekable inputs: read once, spooled ---------------------------------------------------


def _writer(path: Path, text: str) -> threading.Thread:
    """A thread that opens the FIFO for writing (blocking until a reader opens it), writes
    ``text`` and closes it: one writer, as a shell's `cat f > fifo`."""

    def write() -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


TRAIN_TEXT = "the cat sees the dog\nthe dog sees a cat\n" * 30
VALID_TEXT = "a cat sees the dog\n" * 5


def test_training_from_fifos_reads_each_once(tmp_path: Path) -> None:
    corpus, valid = tmp_path / "corpus.fifo", tmp_path / "valid.fifo"
    os.mkfifo(corpus)
    os.mkfifo(valid)
    writers = [_writer(corpus, TRAIN_TEXT), _writer(valid, VALID_TEXT)]
    result = rnnkit.train(
        corpus, tmp_path / "run", valid=valid, level="word", hidden_size=8, batch_size=2,
        bptt=5, max_steps=2, progress=False, threads=1,
    )  # fmt: skip
    for w in writers:
        w.join(timeout=10)
        assert not w.is_alive()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["stats"]["train_tokens"] == len(TRAIN_TEXT.split()) + TRAIN_TEXT.count("\n")
    assert config["data"]["corpus"] == str(corpus)  # kept as given, not resolved
    assert result.step == 2
    # the same text from a regular file gives the same run
    (tmp_path / "c.txt").write_text(TRAIN_TEXT)
    (tmp_path / "v.txt").write_text(VALID_TEXT)
    plain = rnnkit.train(
        tmp_path / "c.txt", tmp_path / "plain", valid=tmp_path / "v.txt", level="word",
        hidden_size=8, batch_size=2, bptt=5, max_steps=2, progress=False, threads=1,
    )  # fmt: skip
    assert plain.best_valid_loss == result.best_valid_loss
    assert (tmp_path / "run" / "vocab.json").read_text() == (
        tmp_path / "plain" / "vocab.json"
    ).read_text()


def test_a_fifo_is_spooled_once_and_read_from_its_start_by_each_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    w = _writer(fifo, "héllo\nworld\n" * 1000)
    first = reading.read_text(fifo)
    w.join(timeout=10)
    with reading.open_input(fifo) as a, reading.open_input(fifo) as b:
        assert a.read(3) == b.read(3) == "héllo".encode()[:3]  # independent positions
        assert a.read(3) == "héllo".encode()[3:6]
    assert reading.read_text(fifo) == first == "héllo\nworld\n" * 1000
    assert reading.input_path(fifo) == str(fifo)  # recorded as given: a FIFO has no target


def _rnnkit(args: list[str], pass_fds: tuple[int, ...]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rnnkit", *args],
        pass_fds=pass_fds, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def _pipe(text: str) -> tuple[int, threading.Thread]:
    """The read end of a pipe (as bash's <(...) gives /dev/fd/N) and its writer thread."""
    r, w = os.pipe()

    def write() -> None:
        with os.fdopen(w, "w", encoding="utf-8") as f:
            f.write(text)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return r, t


def test_process_substitution_paths_train_and_evaluate(tmp_path: Path) -> None:
    """`rnnkit train <(cat corpus) --valid <(cat valid)`: /dev/fd/N, read once each."""
    (r1, t1), (r2, t2) = _pipe(TRAIN_TEXT), _pipe(VALID_TEXT)
    try:
        done = _rnnkit(
            ["train", f"/dev/fd/{r1}", "--valid", f"/dev/fd/{r2}", "--out", str(tmp_path / "run"),
             "--level", "word", "--hidden-size", "8", "--batch-size", "2", "--bptt", "5",
             "--max-steps", "2", "--threads", "1", "--no-progress"],
            (r1, r2),
        )  # fmt: skip
    finally:
        os.close(r1)
        os.close(r2)
    t1.join(timeout=10)
    t2.join(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "does not exist" not in done.stderr
    r3, t3 = _pipe(VALID_TEXT)
    try:
        ev = _rnnkit(["eval", str(tmp_path / "run"), f"/dev/fd/{r3}", "--format", "json"], (r3,))
    finally:
        os.close(r3)
    t3.join(timeout=10)
    assert ev.returncode == 0, ev.stderr
    (tmp_path / "v.txt").write_text(VALID_TEXT)
    want = rnnkit.evaluate(tmp_path / "run", tmp_path / "v.txt", device="cpu")
    assert json.loads(ev.stdout)["tokens"] == want.tokens
    assert json.loads(ev.stdout)["perplexity"] == want.perplexity


# -- the vocabulary's checksum --------------------------------------------------------------


def test_vocab_files_carry_a_checksum_and_an_altered_one_is_refused(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run_copy / "vocab.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert len(data[CHECKSUM]) == 64
    assert Vocab.load(path).tokens == data["tokens"]
    data["tokens"][3], data["tokens"][4] = data["tokens"][4], data["tokens"][3]  # swap two
    path.write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")
    with pytest.raises(RunError, match="does not match its checksum"):
        Vocab.load(path)
    for argv in (["eval", run_copy, DATA / "run_v0_1_0.corpus.txt"], ["generate", run_copy]):
        code, _, err = run_main([str(a) for a in argv], capsys)
        assert code == 2
        assert_one_sentence(err, str(path), "checksum")


def test_label_files_carry_a_checksum_too(tmp_path: Path) -> None:
    labels = LabelVocab(["B-NP", "I-NP", "O"])
    labels.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json").tokens == ["B-NP", "I-NP", "O"]
    data = json.loads((tmp_path / "labels.json").read_text())
    data["tokens"] = ["I-NP", "B-NP", "O"]
    (tmp_path / "labels.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match=r"labels\.json"):
        LabelVocab.load(tmp_path / "labels.json")


def test_a_vocabulary_without_a_checksum_still_loads_and_resumes(tmp_path: Path) -> None:
    """Runs written by rnnkit 0.1 have no checksum: nothing to check, they load as before."""
    run = tmp_path / "run"
    shutil.copytree(DATA / "run_v0_1_0", run)
    assert CHECKSUM not in json.loads((run / "vocab.json").read_text())
    assert len(Vocab.load(run / "vocab.json")) > 0
    config = json.loads((run / "config.json").read_text())
    config["data"]["corpus"] = str(DATA / "run_v0_1_0.corpus.txt")
    (run / "config.json").write_text(json.dumps(config))
    result = rnnkit.train(resume=run, max_steps=1, progress=False, threads=1)
    assert result.step >= 1
