"""Labeled text readers (TSV and one file per label) and stratified K-fold splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnkit.errors import ConfigError, DataError
from rnnkit.text.labeled import (
    LabeledText,
    read_labeled,
    read_per_label,
    read_tsv,
    stratified_folds,
)


def test_tsv_reads_labels_and_tokens(tmp_path: Path) -> None:
    p = tmp_path / "train.tsv"
    p.write_text("pos\ta fine film .\r\nneg \tdull\tand long\n", encoding="utf-8")
    got = read_tsv(p, tokenizer="whitespace")
    assert got == [
        LabeledText("pos", ("a", "fine", "film", "."), f"{p}:1"),
        LabeledText("neg", ("dull", "and", "long"), f"{p}:2"),
    ]


def test_per_label_files_take_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "rt.pos").write_text("good fun\ngreat\n", encoding="utf-8")
    (tmp_path / "rt.neg").write_text("Dull !\n", encoding="utf-8")
    got = read_labeled([tmp_path / "rt.pos", tmp_path / "rt.neg"], lowercase=True)
    assert [(ex.label, ex.tokens) for ex in got] == [
        ("pos", ("good", "fun")),
        ("pos", ("great",)),
        ("neg", ("dull", "!")),
    ]


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("pos\tgood\nneg bad\n", 2, "has no tab"),
        ("pos\tgood\n\tbad\n", 2, "empty label"),
        ("pos\tgood\nneg\t   \n", 2, "has no tokens"),
        ("pos\tgood\n\n", 2, "has no tab"),
    ],
)
def test_bad_tsv_lines_name_file_and_line(tmp_path: Path, text: str, line: int, why: str) -> None:
    p = tmp_path / "bad.tsv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=why) as info:
        read_tsv(p)
    msg = str(info.value)
    assert str(p) in msg and f"line {line}" in msg and msg.endswith(".")


def test_per_label_blank_line_has_no_tokens(tmp_path: Path) -> None:
    p = tmp_path / "x.pos"
    p.write_text("good\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 has no tokens"):
        read_per_label([p])


def test_non_utf8_file_is_refused_with_its_line(tmp_path: Path) -> None:
    p = tmp_path / "latin.neg"
    p.write_bytes("fine\nna\u00efve film\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid utf-8 \(line 2\).*--encoding") as info:
        read_per_label([p])
    assert str(p) in str(info.value)
    got = read_per_label([p], encoding="latin-1")
    assert got[1].tokens == ("na\u00efve", "film")


def test_file_without_suffix_cannot_name_a_label(tmp_path: Path) -> None:
    p = tmp_path / "nosuffix"
    p.write_text("good\n", encoding="utf-8")
    with pytest.raises(DataError, match="no suffix"):
        read_per_label([p])


def test_stratified_folds_keep_proportions_and_cover_every_index() -> None:
    labels = ["a"] * 30 + ["b"] * 12 + ["c"] * 6
    rng = np.random.default_rng(1)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    folds = stratified_folds(labels, 3, seed=4)
    assert len(folds) == 3
    every = np.sort(np.concatenate(folds))
    np.testing.assert_array_equal(every, np.arange(len(labels)))
    for fold in folds:
        assert Counter(labels[i] for i in fold) == {"a": 10, "b": 4, "c": 2}
    assert [f.tolist() for f in stratified_folds(labels, 3, seed=4)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in stratified_folds(labels, 3, seed=5)] != [f.tolist() for f in folds]


def test_stratified_fold_sizes_differ_by_at_most_one() -> None:
    labels = [0] * 7 + [1] * 5 + [2] * 4
    sizes = [len(f) for f in stratified_folds(labels, 4, seed=0)]
    assert sum(sizes) == 16 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("k", "match"), [(4, "--cv 4 .*class 'c' has 3"), (1, "at least 2")])
def test_bad_fold_counts_are_errors(k: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        stratified_folds(["a"] * 5 + ["b"] * 4 + ["c"] * 3, k, seed=0)


@pytest.mark.data
def test_rt_polarity_reads_as_utf8(data_dir: Path) -> None:
    folder = data_dir / "rt-polarity"
    got = read_labeled([folder / "rt-polarity.pos", folder / "rt-polarity.neg"])
    assert Counter(ex.label for ex in got) == {"pos": 5331, "neg": 5331}
