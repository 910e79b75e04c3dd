"""CoNLL-style column files: one token per line, whitespace-separated columns, a blank line
between sentences (CoNLL-2000: ``word POS chunk``).

Files are UTF-8, plain or gzip-compressed (``.gz``). Every line of a file has as many
columns as its first token line; a line with any other count is an error naming the file
and line. A ``-DOCSTART-`` line (CoNLL-2003) separates documents and is skipped like a blank
line. Column indices count from 0 and may be negative (-1 is the last column).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnkit.errors import DataError, RunError
from rnnkit.text.reading import check_readable, gunzip, open_input
from rnnkit.text.vocab import load_tokens_json, save_tokens_json


@dataclass
class Sentence:
    """One sentence's columns; token i sits on line ``line + i`` of its file (1-based)."""

    words: list[str]
    labels: list[str]  # empty when the file was read without a label column
    features: list[list[str]] = field(default_factory=list)  # one list per feature column
    line: int = 1

    def __len__(self) -> int:
        return len(self.words)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open_input(path, "column") as src, gunzip(src, path) as f:
            yield from enumerate(f, start=1)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        why = str(exc).rstrip(".") or type(exc).__name__
        raise DataError(f"cannot read column file {str(path)!r}: {why}.") from exc


def read_columns(
    path: str | os.PathLike[str],
    word_column: int = 0,
    label_column: int | None = -1,
    feature_columns: Sequence[int] = (),
) -> list[Sentence]:
    """The sentences of a column file.

    ``label_column`` None reads no labels (text to tag). Raises DataError, naming the file
    and line, for a ragged line, a column out of range, bytes that are not UTF-8, or a file
    with no tokens.
    """
    p = check_readable(path, "column")
    name = str(p)
    sentences: list[Sentence] = []
    width = 0  # columns per line, from the first token line
    cols: list[int] = []  # word, features..., label: resolved to non-negative indices
    words: list[str] = []
    labels: list[str] = []
    feats: list[list[str]] = [[] for _ in feature_columns]
    start = 0

    def flush() -> None:
        nonlocal words, labels, feats
        if words:
            sentences.append(Sentence(words, labels, feats, start))
        words, labels, feats = [], [], [[] for _ in feature_columns]

    for number, raw in _lines(p):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"column file {name!r} line {number} is not valid UTF-8; convert it to UTF-8 first."
            ) from exc
        if number == 1:
            text = text.removeprefix("\ufeff")
        parts = text.split()
        if not parts or parts[0] == "-DOCSTART-":
            flush()
            continue
        if not width:
            width = len(parts)
            wanted = [("word", word_column)]
            wanted += [("feature", c) for c in feature_columns]
            if label_column is not None:
                wanted.append(("label", label_column))
            for what, c in wanted:
                if not -width <= c < width:
                    raise DataError(
                        f"{what} column {c} is out of range in {name!r} line {number}, which "
                        f"has {width} columns (0 to {width - 1})."
                    )
            cols = [c % width for _, c in wanted]
        elif len(parts) != width:
            raise DataError(
                f"{name!r} line {number} has {len(parts)} columns but the first line has "
                f"{width}; every token line needs the same columns."
            )
        if not words:
            start = number
        words.append(parts[cols[0]])
        for k, c in enumerate(cols[1 : 1 + len(feature_columns)]):
            feats[k].append(parts[c])
        if label_column is not None:
            labels.append(parts[cols[-1]])
    flush()
    if not sentences:
        raise DataError(f"column file {name!r} has no tokens; it is empty or all blank lines.")
    return sentences


class LabelVocab:
    """The labels in id order (no ``<unk>``: a label training never saw is an error)."""

    def __init__(self, labels: Iterable[str]) -> None:
        self.tokens: list[str] = list(labels)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("labels must be unique")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, label: object) -> bool:
        return label in self.index

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sentence]) -> LabelVocab:
        """Every label of the training sentences, in sorted order (stable ids)."""
        return cls(sorted({label for s in sentences for label in s.labels}))

    def encode(
        self, sentence: Sentence, path: str | os.PathLike[str], unseen: str = "error"
    ) -> list[int]:
        """The label ids of one sentence.

        A label training never saw is a DataError naming file and line, or, with ``unseen``
        ``"score"``, the id -1 (it can still be scored as a label the model got wrong).
        """
        ids = []
        for i, label in enumerate(sentence.labels):
            k = self.index.get(label)
            if k is None and unseen == "score":
                k = -1
            elif k is None:
                raise DataError(
                    f"label {label!r} in {str(path)!r} line {sentence.line + i} never occurs "
                    "in the training file; the model cannot predict it."
                )
            ids.append(k)
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {"level": "label", "tokens": self.tokens}

    def save(self, path: str | os.PathLike[str]) -> None:
        save_tokens_json(path, self.to_dict())  # with its checksum, as Vocab.save

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelVocab:
        p = Path(path)
        data = load_tokens_json(p, "label")
        try:
            return cls(data["tokens"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{str(p)!r} is not a valid rnnkit label file.") from exc


__all__ = ["LabelVocab", "Sentence", "read_columns"]
