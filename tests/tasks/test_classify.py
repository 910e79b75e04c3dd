"""The classification task: vocabularies from training only, deterministic length-bucketed
batches, loss/validate/evaluate/predict agree, vocabularies round-trip through a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.errors import DataError, RunError
from rnnkit.tasks.classify import ClassifyTask
from rnnkit.text.labeled import LabeledText

WORDS = {"pos": ["good", "great", "fine", "fun"], "neg": ["bad", "dull", "poor", "long"]}


def examples(n: int, seed: int) -> list[LabeledText]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = ["neg", "pos"][i % 2]
        words = [str(rng.choice(WORDS[label])) for _ in range(rng.integers(1, 9))]
        out.append(LabeledText(label, ("the", "film", "is", *words), f"ex:{i}"))
    return out


def task(**kwargs: object) -> ClassifyTask:
    valid = [*examples(10, 1), LabeledText("pos", ("unseen", "fun"), "v:11")]
    return ClassifyTask.from_examples(examples(40, 0), valid, batch_size=8, seed=3, **kwargs)  # type: ignore[arg-type]


def test_vocabulary_and_labels_come_from_training() -> None:
    t = task()
    assert t.labels == ["neg", "pos"]
    assert t.vocab is not None and "unseen" not in t.vocab
    assert t.valid_x[-1][0] == t.vocab.unk_id
    assert len(task(min_count=1000).vocab or []) == 1  # only <unk>


def test_batches_are_deterministic_cover_each_example_and_change_per_epoch() -> None:
    a, b = task(), task()
    n = a.num_batches(0)
    assert n == 5
    seen: list[tuple[int, int]] = []
    for i in range(n):
        x, lengths, labels = a.batch(0, i)
        same = b.batch(0, i)
        assert torch.equal(x, same.inputs) and torch.equal(labels, same.labels)
        assert x.shape == (len(lengths), int(lengths.max()))
        seen.extend(zip(lengths.tolist(), labels.tolist()))
    assert len(seen) == 40
    first = [a.batch(0, i).labels.tolist() for i in range(n)]
    assert first != [a.batch(1, i).labels.tolist() for i in range(n)]


def test_loss_validate_evaluate_and_predict_agree() -> None:
    t = task()
    torch.manual_seed(0)
    model = t.build_model({"hidden_size": 6, "pooling": "mean", "cell": "gru"})
    assert model.config.vocab_size == len(t.vocab or []) and model.config.num_classes == 2
    loss, count, carry = t.loss(model, t.batch(0, 0), None)
    assert loss.ndim == 0 and count == 8 and carry is None
    figures = t.validate(model)
    assert set(figures) == {"loss", "accuracy"}
    valid = [*examples(10, 1), LabeledText("pos", ("unseen", "fun"), "v:11")]
    full = t.evaluate(model, valid)
    assert full["loss"] == pytest.approx(figures["loss"]) and full["count"] == 11
    labels, probs = t.predict(model, [" ".join(ex.tokens) for ex in valid])
    assert probs.shape == (11, 2) and np.allclose(probs.sum(1), 1)
    accuracy = np.mean([p == ex.label for p, ex in zip(labels, valid)])
    assert accuracy == pytest.approx(figures["accuracy"])


def test_unknown_label_and_empty_input_are_data_errors() -> None:
    t = task()
    with pytest.raises(DataError, match="'ex' line 7 has label 'meh'"):
        t.evaluate(t.build_model({"hidden_size": 4}), [LabeledText("meh", ("x",), "ex:7")])
    with pytest.raises(DataError, match="input 2 has no tokens"):
        t.predict(t.build_model({"hidden_size": 4}), ["good", "   "])


def test_vocabularies_round_trip_through_a_run_folder(tmp_path: Path) -> None:
    t = task()
    t.save_vocabularies(tmp_path)
    saved = json.loads((tmp_path / "labels.json").read_text())
    assert saved["tokens"] == ["neg", "pos"] and len(saved["tokens_sha256"]) == 64
    loaded = ClassifyTask.load_vocabularies(tmp_path)
    assert loaded.labels == t.labels and loaded.vocab is not None
    # swapped labels would swap every prediction: refused, naming the file
    (tmp_path / "labels.json").write_text(json.dumps({**saved, "tokens": ["pos", "neg"]}))
    with pytest.raises(RunError, match=r"labels\.json.*does not match its checksum"):
        ClassifyTask.load_vocabularies(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps(["neg", "pos"]))  # as before 0.2
    assert ClassifyTask.load_vocabularies(tmp_path).labels == ["neg", "pos"]
    t.save_vocabularies(tmp_path)
    assert loaded.vocab.tokens == (t.vocab.tokens if t.vocab else None)
    torch.manual_seed(0)
    model = t.build_model({"hidden_size": 4})
    texts = ["the film is good", "dull and long"]
    np.testing.assert_array_equal(t.predict(model, texts)[1], loaded.predict(model, texts)[1])


def test_audio_task_saves_its_normalisation(tmp_path: Path) -> None:
    pytest.importorskip("librosa")
    sf = pytest.importorskip("soundfile")
    folder = tmp_path / "wav"
    folder.mkdir()
    for digit in range(2):
        for index in range(6):
            s = np.arange(400 + 40 * index) / 8000
            y = 0.2 * np.sin(2 * np.pi * (300 + 500 * digit) * s)
            sf.write(str(folder / f"{digit}_spk_{index}.wav"), y, 8000, subtype="PCM_16")
    t = ClassifyTask.from_audio_folder(folder, split="fsdd", batch_size=4, seed=0)
    assert len(t.train_x) == 2 and len(t.valid_x) == 10 and t.labels == ["0", "1"]
    model = t.build_model({"hidden_size": 4, "pooling": "attention"})
    assert model.config.input == "frames" and model.config.num_features == 20
    t.save_vocabularies(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "features.json").read_text())
    assert len(saved["mean"]) == 20 and len(saved["std"]) == 20
    loaded = ClassifyTask.load_vocabularies(tmp_path / "run")
    paths = sorted(folder.iterdir())
    np.testing.assert_allclose(t.predict(model, paths)[1], loaded.predict(model, paths)[1])


@pytest.mark.data
def test_rt_polarity_task_prepares(data_dir: Path) -> None:
    folder = data_dir / "rt-polarity"
    t = ClassifyTask.from_text_files(
        [folder / "rt-polarity.pos", folder / "rt-polarity.neg"], valid_fraction=0.1, min_count=2
    )
    assert t.labels == ["neg", "pos"] and len(t.train_x) + len(t.valid_x) == 10662
    assert len(t.valid_x) == 1066
