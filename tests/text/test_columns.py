"""Column files: sentences, columns and every bad input as one sentence naming file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rnnkit.errors import DataError
from rnnkit.text.columns import LabelVocab, read_columns

GOOD = "Confidence NN B-NP\nin IN B-PP\n\nthe DT B-NP\npound NN I-NP\n. . O\n\n"


def write(tmp_path: Path, data: str | bytes, name: str = "f.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def one_sentence(msg: str, *fragments: str) -> None:
    assert "\n" not in msg and msg.endswith("."), msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_reads_sentences_columns_and_lines(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    s = read_columns(p, feature_columns=[1])
    assert [x.words for x in s] == [["Confidence", "in"], ["the", "pound", "."]]
    assert [x.labels for x in s] == [["B-NP", "B-PP"], ["B-NP", "I-NP", "O"]]
    assert s[1].features == [["DT", "NN", "."]]
    assert (s[0].line, s[1].line) == (1, 4)
    assert read_columns(p, label_column=1)[0].labels == ["NN", "IN"]
    assert read_columns(p, label_column=None)[0].labels == []


def test_gzip_crlf_bom_and_docstart(tmp_path: Path) -> None:
    text = "\ufeff-DOCSTART- -X- O\r\n\r\n" + GOOD.replace("\n", "\r\n")
    p = tmp_path / "f.txt.gz"
    p.write_bytes(gzip.compress(text.encode("utf-8")))
    s = read_columns(p)
    assert [x.words for x in s] == [["Confidence", "in"], ["the", "pound", "."]]
    assert s[0].line == 3


@pytest.mark.parametrize(
    ("data", "kwargs", "fragments"),
    [
        (GOOD.replace("in IN B-PP", "in B-PP"), {}, ["line 2 has 2 columns", "first line has 3"]),
        ("", {}, ["no tokens"]),
        ("\n \n\n", {}, ["no tokens"]),
        (b"a X O\ncaf\xe9 X O\n", {}, ["line 2 is not valid UTF-8"]),
        (GOOD, {"label_column": 3}, ["label column 3 is out of range", "line 1"]),
        (GOOD, {"feature_columns": [-4]}, ["feature column -4 is out of range"]),
    ],
)
def test_bad_files(tmp_path: Path, data: str | bytes, kwargs: dict, fragments: list[str]) -> None:
    p = write(tmp_path, data)
    with pytest.raises(DataError) as exc:
        read_columns(p, **kwargs)
    one_sentence(str(exc.value), repr(str(p)), *fragments)


def test_missing_file_and_bad_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_columns(tmp_path / "nope.txt")
    p = write(tmp_path, b"not gzip at all", "x.txt.gz")
    with pytest.raises(DataError) as exc:
        read_columns(p)
    one_sentence(str(exc.value), "cannot read")


def test_unseen_label_names_file_and_line(tmp_path: Path) -> None:
    labels = LabelVocab.from_sentences(read_columns(write(tmp_path, GOOD, "train.txt")))
    assert labels.tokens == ["B-NP", "B-PP", "I-NP", "O"]
    test = write(tmp_path, "a DT B-NP\n\nb NN B-NP\nc VB B-VP\n", "test.txt")
    sentences = read_columns(test)
    assert labels.encode(sentences[0], test) == [0]
    with pytest.raises(DataError) as exc:
        labels.encode(sentences[1], test)
    one_sentence(str(exc.value), "'B-VP'", repr(str(test)), "line 4", "never occurs")


def test_label_vocab_round_trips(tmp_path: Path) -> None:
    labels = LabelVocab(["O", "B-NP"])
    labels.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json").tokens == ["O", "B-NP"]
