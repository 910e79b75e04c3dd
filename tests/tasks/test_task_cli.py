"""The classify and tag verbs end to end: train, resume exactly, evaluate, predict, load,
and every bad input as one sentence with exit status 2, nothing saved touched."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from helpers import assert_one_sentence, run_main
from rnnkit.api import classify, tag
from rnnkit.models.classifier import SequenceClassifier
from rnnkit.models.tagger import SequenceTagger

POS = ["a fine good film", "good and fine acting", "a truly good story", "fine work"]
NEG = ["a dull bad film", "bad and dull acting", "a truly bad story", "dull work"]


def polarity(tmp_path: Path, n: int = 40) -> tuple[Path, Path]:
    rng = random.Random(0)
    pos, neg = tmp_path / "data.pos", tmp_path / "data.neg"
    pos.write_text("".join(rng.choice(POS) + "\n" for _ in range(n)), encoding="utf-8")
    neg.write_text("".join(rng.choice(NEG) + "\n" for _ in range(n)), encoding="utf-8")
    return pos, neg


CLS = ["--hidden", "8", "--batch-size", "8", "--seed", "3", "--no-progress", "--threads", "1"]


def test_classify_trains_predicts_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pos, neg = polarity(tmp_path)
    run = tmp_path / "run"
    code, out, err = run_main(
        ["classify", "train", pos, neg, "--out", run, "--epochs", "8", "--lr", "0.02", *CLS],
        capsys,
    )
    assert code == 0, err
    assert "best validation: accuracy 1.0000" in out  # the words give the class away
    text = tmp_path / "new.txt"
    text.write_text("good fine film\nbad dull film\n", encoding="utf-8")
    code, out, err = run_main(["classify", "predict", run, text], capsys)
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["pos", "neg"]
    code, out, err = run_main(["classify", "eval", run, pos, neg], capsys)
    assert code == 0 and "accuracy: 1.0000" in out, (out, err)
    loaded = rnnkit.load(run)
    assert loaded.task_name == "classify" and isinstance(loaded.model, SequenceClassifier)


def test_classify_probabilities_do_not_depend_on_batch_company(tmp_path: Path) -> None:
    pos, neg = polarity(tmp_path)
    classify.train([pos, neg], tmp_path / "r", max_steps=6, progress=False, hidden_size=8,
                   batch_size=8, bidirectional=True, pooling="attention")  # fmt: skip
    alone = [classify.predict(tmp_path / "r", [s])[1][0] for s in POS + NEG]
    together = classify.predict(tmp_path / "r", ["good", *POS, *NEG, "a " * 30])[1][1:-1]
    np.testing.assert_allclose(np.stack(alone), together, rtol=1e-6, atol=1e-7)


def test_classify_stopped_and_resumed_ends_with_the_same_weights(tmp_path: Path) -> None:
    pos, neg = polarity(tmp_path)
    kw = dict(
        progress=False, hidden_size=8, batch_size=8, epochs=3, dropout=0.3, seed=4,
        word_dropout=0.2,
    )  # fmt: skip
    classify.train([pos, neg], tmp_path / "full", **kw)
    classify.train([pos, neg], tmp_path / "part", max_steps=5, **kw)
    classify.train(resume=tmp_path / "part", progress=False)
    a, b = (load_file(str(tmp_path / n / "last.safetensors")) for n in ("full", "part"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_classify_cross_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pos, neg = polarity(tmp_path)
    code, out, err = run_main(
        ["classify", "train", pos, neg, "--cv", "3", "--out", tmp_path / "cv", "--epochs", "4",
         "--lr", "0.02", *CLS],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "3-fold cross-validation" in out
    summary = classify.read_cv(tmp_path / "cv")
    assert summary["folds"] == 3 and summary["accuracy_mean"] > 0.9
    assert all((tmp_path / "cv" / f"fold{i}" / "model.safetensors").is_file() for i in range(3))


@pytest.mark.parametrize(
    ("content", "args", "fragments"),
    [
        ("pos\tgood film\nneg bad film\n", [], ["line 2", "tab"]),
        ("pos\tgood film\n\tbad film\n", [], ["line 2", "label"]),
        ("pos\tgood film\nneg\t   \n", [], ["line 2", "no tokens"]),
        ("pos\tgood\nneg\tbad\npos\tfine\n", ["--cv", "3"], ["--cv", "neg"]),
    ],
)
def test_classify_bad_input_is_one_sentence(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    args: list[str],
    fragments: list[str],
) -> None:
    tsv = tmp_path / "data.tsv"
    tsv.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_main(["classify", "train", tsv, "--out", out, *args, *CLS], capsys)
    assert code == 2
    assert_one_sentence(err, *fragments)
    assert not (out / "config.json").exists()


def test_classify_label_never_seen_in_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pos, neg = polarity(tmp_path)
    classify.train([pos, neg], tmp_path / "r", max_steps=2, progress=False, hidden_size=8)
    other = tmp_path / "data.meh"
    other.write_text("a film\n", encoding="utf-8")
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    code, _, err = run_main(["classify", "eval", tmp_path / "r", pos, other], capsys)
    assert code == 2
    assert_one_sentence(err, "data.meh", "line 1", "'meh'")
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before


def conll(tmp_path: Path, name: str, n: int, seed: int) -> Path:
    """A toy chunking corpus: word POS chunk, determiners and adjectives start noun chunks."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        for _ in range(rng.randint(1, 3)):
            lines.append(f"{rng.choice(['the', 'a'])} DT B-NP")
            if rng.random() < 0.5:
                lines.append(f"{rng.choice(['big', 'red'])} JJ I-NP")
            lines.append(f"{rng.choice(['cat', 'dog', 'man'])} NN I-NP")
            lines.append(f"{rng.choice(['sees', 'likes'])} VBZ B-VP")
        lines.append(". . O")
        lines.append("")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TAG = ["--hidden", "8", "--batch-size", "8", "--seed", "2", "--no-progress", "--threads", "1"]


def test_tag_trains_evaluates_predicts_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, valid = conll(tmp_path, "train.txt", 60, 0), conll(tmp_path, "valid.txt", 10, 1)
    run = tmp_path / "run"
    flags = ["--valid", valid, "--feature-columns", "1", "--crf", "--lr", "0.02", *TAG]
    code, out, err = run_main(["tag", "train", train, "--out", run, "--epochs", "6", *flags],
                              capsys)  # fmt: skip
    assert code == 0, err
    assert "best validation: f1" in out
    code, out, err = run_main(["tag", "eval", run, valid], capsys)
    assert code == 0 and "F1 " in out, err
    f1 = float(out.split("F1 ")[1].split()[0])
    assert f1 > 90.0  # the toy grammar is learnt
    code, out, err = run_main(["tag", "predict", run, valid], capsys)
    assert code == 0 and "\tB-NP" in out
    assert isinstance(rnnkit.load(run).model, SequenceTagger)
    # exact resume
    tag.train(train, tmp_path / "part", max_steps=7, progress=False, valid=valid,
              feature_columns=[1], crf=True, lr=0.02, hidden_size=8, batch_size=8, seed=2,
              epochs=6)  # fmt: skip
    tag.train(resume=tmp_path / "part", progress=False)
    a, b = (load_file(str(p / "last.safetensors")) for p in (run, tmp_path / "part"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_tag_bad_input_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, valid = conll(tmp_path, "train.txt", 20, 0), conll(tmp_path, "valid.txt", 5, 1)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("the DT B-NP\ncat NN\n", encoding="utf-8")
    code, _, err = run_main(["tag", "train", ragged, "--valid", valid, "--out", tmp_path / "x",
                             *TAG], capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "ragged.txt", "line 2")
    run = tmp_path / "run"
    assert tag.train(train, run, valid=valid, max_steps=2, progress=False, hidden_size=8)
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("the DT B-NP\ncat NN I-LST\n", encoding="utf-8")
    code, _, err = run_main(["tag", "eval", run, unseen], capsys)
    assert code == 2
    assert_one_sentence(err, "unseen.txt", "line 2", "I-LST")
    code, _out, err = run_main(["tag", "eval", run, unseen, "--unseen-labels", "score"], capsys)
    assert code == 0, err


def test_runs_written_before_tasks_load_and_resume(tmp_path: Path) -> None:
    """tests/data/run_v0_1_0 was written by rnnkit 0.1.0 before tasks existed (no "task" in
    config.json): it loads as a language model, and resumed it ends where a run of today's
    rnnkit with the same settings ends (to float rounding: see below)."""
    import json
    import shutil

    data = Path(__file__).resolve().parent.parent / "data"
    run = tmp_path / "old"
    shutil.copytree(data / "run_v0_1_0", run)
    corpus = tmp_path / "corpus.txt"
    shutil.copy(data / "run_v0_1_0.corpus.txt", corpus)
    config = json.loads((run / "config.json").read_text())
    assert "task" not in config
    config["data"]["corpus"] = str(corpus)
    (run / "config.json").write_text(json.dumps(config))
    loaded = rnnkit.load(run)
    assert loaded.task_name == "lm" and loaded.vocab.level == "char"
    assert rnnkit.evaluate(run, corpus, device="cpu").tokens > 0
    rnnkit.train(resume=run, progress=False)
    settings = {k: v for k, v in config["training"].items() if v is not None}
    model = {k: config["model"][k] for k in ("cell", "hidden_size")}
    rnnkit.train(corpus, tmp_path / "new", progress=False, **settings, **model)
    a, b = (load_file(str(p / "last.safetensors")) for p in (run, tmp_path / "new"))
    # 0.1.0 trained its first steps with the unfused softmax loss, whose sums run in another
    # order than today's fused one: float rounding apart, the same weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)


def test_word_dropout_is_drawn_from_the_seed_and_spares_padding(tmp_path: Path) -> None:
    from rnnkit.tasks.classify import ClassifyTask

    pos, neg = polarity(tmp_path, 200)
    make = lambda p: ClassifyTask.from_text_files([pos, neg], seed=1, word_dropout=p)  # noqa: E731
    plain, dropped, again = make(0.0), make(0.5), make(0.5)
    unk = dropped.vocab.unk_id  # type: ignore[union-attr]
    a, b, c = plain.batch(0, 1), dropped.batch(0, 1), again.batch(0, 1)
    assert torch.equal(b.inputs, c.inputs)  # the same (seed, epoch, index), the same words
    real = torch.arange(a.inputs.shape[1])[None, :] < a.lengths[:, None]
    changed = (a.inputs != b.inputs) & real
    assert torch.all(b.inputs[changed] == unk)
    assert torch.equal(a.inputs[~real], b.inputs[~real])  # padding is left alone
    assert 0.35 < changed.sum().item() / real.sum().item() < 0.65
    assert not torch.equal(dropped.batch(1, 1).inputs, b.inputs)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["classify", "train", "{tmp}/missing.tsv", "--out", "{tmp}/o"], ["missing.tsv"]),
        (["classify", "train", "--audio", "{tmp}/nowhere", "--out", "{tmp}/o"], ["nowhere"]),
        (
            [
                "tag",
                "train",
                "{tmp}/missing.txt",
                "--valid",
                "{tmp}/missing.txt",
                "--out",
                "{tmp}/o",
            ],
            ["missing.txt"],
        ),
        (["classify", "eval", "{run}", "{tmp}/t.tsv"], ["is a lm run, not a classifier"]),
        (["classify", "predict", "{run}", "{tmp}/t.tsv"], ["not a classifier"]),
        (["tag", "eval", "{run}", "{tmp}/t.tsv"], ["is a lm run, not a tagger"]),
        (["tag", "predict", "{run}", "{tmp}/t.tsv"], ["not a tagger"]),
    ],
)
def test_missing_files_and_the_wrong_kind_of_run_are_one_sentence(
    tmp_path: Path,
    tiny_run: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragments: list[str],
) -> None:
    if "--audio" in argv:
        pytest.importorskip("librosa")
    (tmp_path / "t.tsv").write_text("pos\tgood\n", encoding="utf-8")
    args = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    code, _, err = run_main(args, capsys)
    assert code == 2
    assert_one_sentence(err, *fragments)
    assert not (tmp_path / "o" / "config.json").exists()
