"""The tagging task: vocabularies from training only and their round trip, deterministic
bucketed batches, validation figures, prediction, and resume from saved vocabularies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.errors import DataError
from rnnkit.tasks.tag import TagTask

TRAIN = (
    "He PRP B-NP\nreckons VBZ B-VP\nthe DT B-NP\ncurrent JJ I-NP\ndeficit NN I-NP\n. . O\n\n"
    "Rockwell NNP B-NP\nsaid VBD B-VP\n. . O\n\n"
    "The DT B-NP\npound NN I-NP\nfell VBD B-VP\n\n"
    "Sales NNS B-NP\nrose VBD B-VP\nsharply RB B-ADVP\n. . O\n\n"
    "It PRP B-NP\nsaid VBD B-VP\n\n"
)
VALID = "The DT B-NP\ndeficit NN I-NP\nrose VBD B-VP\n. . O\n\nHe PRP B-NP\nfell VBD B-VP\n\n"
SETTINGS = dict(embedding_size=4, hidden_size=4, cell="gru")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text(TRAIN, encoding="utf-8")
    valid.write_text(VALID, encoding="utf-8")
    return train, valid


def prepare(files: tuple[Path, Path], **kw: object) -> TagTask:
    args: dict = dict(feature_columns=[1], char_features=True, batch_size=2, seed=3)
    args.update(kw)
    return TagTask.prepare(*files, **args)


def test_chunking_task_and_vocabularies(files: tuple[Path, Path], tmp_path: Path) -> None:
    task = prepare(files, lowercase=True)
    assert (task.name, task.unit, task.metric, task.direction) == ("tag", "token", "f1", "max")
    v = task.vocabs
    assert v.labels.tokens == ["B-ADVP", "B-NP", "B-VP", "I-NP", "O"]
    assert "he" in v.words and "He" not in v.words and v.words.tokens[0] == "<unk>"
    assert v.chars is not None and "H" in v.chars  # characters keep their case
    run = tmp_path / "run"
    run.mkdir()
    task.save_vocabularies(run)
    assert sorted(p.name for p in run.iterdir()) == [
        "chars.json",
        "column1.json",
        "labels.json",
        "vocab.json",
    ]
    loaded = TagTask.load_vocabularies(run)
    assert loaded.words.tokens == v.words.tokens and loaded.words.lowercase
    assert loaded.labels.tokens == v.labels.tokens
    assert list(loaded.columns) == [1] and loaded.columns[1].tokens == v.columns[1].tokens
    resumed = TagTask.from_vocabularies(loaded, *files, batch_size=2, seed=3)
    assert resumed.data_settings() == task.data_settings()
    for epoch in (0, 1):
        for i in range(task.num_batches(epoch)):
            a, b = task.batch(epoch, i), resumed.batch(epoch, i)
            assert a.chars is not None and b.chars is not None
            assert torch.equal(a.words, b.words) and torch.equal(a.chars, b.chars)


def test_batches_cover_every_sentence_once_and_depend_on_the_epoch(
    files: tuple[Path, Path],
) -> None:
    task = prepare(files)
    assert task.num_batches(0) == 3  # 5 sentences, 2 per batch
    seen = []
    for i in range(3):
        b = task.batch(0, i)
        seen += [tuple(row[:n]) for row, n in zip(b.words.tolist(), b.lengths.tolist())]
        assert torch.equal(b.words, task.batch(0, i).words)  # the same on every call
    assert sorted(seen) == sorted(tuple(e.words) for e in task.train)
    epochs = [[task.batch(e, i).lengths.tolist() for i in range(3)] for e in range(4)]
    assert any(x != epochs[0] for x in epochs[1:])


def test_validate_evaluate_and_predict(files: tuple[Path, Path]) -> None:
    task = prepare(files)
    torch.manual_seed(0)
    model = task.build_model({**SETTINGS, "crf": True})
    assert model.config.extra_vocab_sizes == [len(task.vocabs.columns[1])]
    model.train()
    scores = task.validate(model)
    assert model.training  # validation leaves the mode as it found it
    assert set(scores) == {"loss", "accuracy", "precision", "recall", "f1"}
    assert 0.0 <= scores["f1"] <= 1.0 and np.isfinite(scores["loss"])
    loss, tokens, carry = task.loss(model, task.batch(0, 0), None)
    assert loss.requires_grad and tokens > 0 and carry is None
    ev = task.evaluate_file(model, files[1])
    assert ev["tokens"] == 6 and ev["sentences"] == 2
    assert ev["f1"] == pytest.approx(scores["f1"]) and ev["loss"] == pytest.approx(scores["loss"])
    tagged = task.predict_file(model, files[1])
    assert [w for w, _ in tagged] == [["The", "deficit", "rose", "."], ["He", "fell"]]
    assert all(
        len(w) == len(lab) and set(lab) <= set(task.vocabs.labels.tokens) for w, lab in tagged
    )


def test_pos_tagging_uses_accuracy(files: tuple[Path, Path]) -> None:
    task = TagTask.prepare(*files, label_column=1, batch_size=4)
    assert task.metric == "accuracy" and task.feature_columns == []
    model = task.build_model(SETTINGS)
    assert set(task.validate(model)) == {"loss", "accuracy"}


def test_unseen_validation_label_is_an_error(files: tuple[Path, Path]) -> None:
    files[1].write_text("The DT B-NP\nup RP B-PRT\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"label 'B-PRT' in .*valid.txt' line 2 never occurs"):
        prepare(files)


def test_unseen_label_can_be_scored_as_a_mistake(files: tuple[Path, Path]) -> None:
    files[1].write_text("The DT B-NP\nup RP B-PRT\n\nHe PRP B-NP\nfell VBD B-VP\n", "utf-8")
    task = prepare(files, unseen_labels="score")
    model = task.build_model(SETTINGS)
    with torch.no_grad():  # the loss is the second sentence's alone
        want, n = model.loss(task.collate(task.valid[1:]))
    scores = task.validate(model)
    assert scores["loss"] == pytest.approx(want.item(), rel=1e-6) and n == 2
    assert scores["recall"] <= 3 / 4  # B-PRT is a gold chunk no prediction can match
