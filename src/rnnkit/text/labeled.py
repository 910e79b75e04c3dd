"""Labeled text for classification: readers and stratified K-fold cross-validation.

Two formats, one example a line:

``tsv``
    ``label<TAB>text``: the label is everything before the first tab (surrounding spaces
    dropped), the text everything after it.
``per-label``
    One file per label, one sentence a line; the label is the file's suffix without the dot
    (``rt-polarity.pos`` -> ``pos``), as Pang and Lee distribute sentence polarity.

Files are read as UTF-8 by default (the rt-polarity copy in the shared data folder is valid
UTF-8); ``encoding`` reads another (``"latin-1"`` for the original 2005 release). Every line
must hold an example: a line without a tab (TSV), an empty label, or a sentence with no
tokens is a DataError naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.errors import ConfigError, DataError
from rnnkit.text.reading import check_readable, read_bytes
from rnnkit.text.tokenize import check_tokenizer, tokenize

FORMATS = ("auto", "tsv", "per-label")


@dataclass(frozen=True)
class LabeledText:
    """One example: its label, its tokens, and where it came from (``file:line``)."""

    label: str
    tokens: tuple[str, ...]
    source: str = ""


def _lines(path: Path, encoding: str) -> list[str]:
    data = read_bytes(path, "labeled text")
    try:
        text = data.decode(
            "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        )
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"labeled text file {str(path)!r} is not valid {encoding} (line {line}); "
            "convert it to UTF-8 or give its encoding (--encoding latin-1)."
        ) from exc
    except LookupError as exc:
        raise ConfigError(f"--encoding {encoding!r} is not an encoding Python knows.") from exc
    # split on "\n" only (str.splitlines would also cut at form feeds and U+2028)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it starts no new one
    return [line.removesuffix("\r") for line in lines]


def _tokens(text: str, path: Path, n: int, tokenizer: str, lowercase: bool) -> tuple[str, ...]:
    tokens = tuple(tokenize(text, tokenizer, lowercase))
    if not tokens:
        raise DataError(
            f"labeled text file {str(path)!r} line {n} has no tokens; "
            "remove empty lines or give every example its text."
        )
    return tokens


def read_tsv(
    path: str | os.PathLike[str],
    tokenizer: str = "whitespace",
    lowercase: bool = False,
    encoding: str = "utf-8",
) -> list[LabeledText]:
    """The examples of a ``label<TAB>text`` file, in file order."""
    check_tokenizer(tokenizer)
    p = check_readable(path, "labeled text")
    out = []
    for n, line in enumerate(_lines(p, encoding), 1):
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(
                f"labeled text file {str(p)!r} line {n} has no tab; "
                "write each example as label<TAB>text."
            )
        label = label.strip()
        if not label:
            raise DataError(
                f"labeled text file {str(p)!r} line {n} has an empty label before its tab."
            )
        out.append(LabeledText(label, _tokens(text, p, n, tokenizer, lowercase), f"{p}:{n}"))
    if not out:
        raise DataError(f"labeled text file {str(p)!r} is empty.")
    return out


def label_of(path: str | os.PathLike[str]) -> str:
    """The label a per-label file names by its suffix: ``rt-polarity.pos`` -> ``pos``."""
    suffix = Path(path).suffix.removeprefix(".")
    if not suffix:
        raise DataError(
            f"labeled text file {str(path)!r} has no suffix to name its label; "
            "name it like reviews.pos or give a TSV of label<TAB>text."
        )
    return suffix


def read_per_label(
    paths: Sequence[str | os.PathLike[str]],
    tokenizer: str = "whitespace",
    lowercase: bool = False,
    encoding: str = "utf-8",
) -> list[LabeledText]:
    """The examples of one file per label (label = the file's suffix), file after file."""
    check_tokenizer(tokenizer)
    out = []
    for path in paths:
        p = check_readable(path, "labeled text")
        label = label_of(p)
        lines = _lines(p, encoding)
        if not lines:
            raise DataError(f"labeled text file {str(p)!r} is empty.")
        for n, line in enumerate(lines, 1):
            out.append(LabeledText(label, _tokens(line, p, n, tokenizer, lowercase), f"{p}:{n}"))
    return out


def read_labeled(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    format: str = "auto",
    tokenizer: str = "whitespace",
    lowercase: bool = False,
    encoding: str = "utf-8",
) -> list[LabeledText]:
    """Read labeled text; ``auto`` is ``tsv`` for one file and ``per-label`` for several."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}.")
    if not paths:
        raise ConfigError("no labeled text files were given.")
    if format == "auto":
        format = "tsv" if len(paths) == 1 else "per-label"
    if format == "tsv":
        return [ex for p in paths for ex in read_tsv(p, tokenizer, lowercase, encoding)]
    return read_per_label(paths, tokenizer, lowercase, encoding)


def stratified_folds(labels: Sequence[object], k: int, seed: int = 0) -> list[np.ndarray]:
    """K disjoint folds of example indices, each with the classes in the data's proportions.

    Every index is in exactly one fold (sorted int64 arrays); fold i is the held-out part of
    split i and the others its training part. Each class's examples are shuffled with
    ``numpy.random.default_rng(seed)`` and dealt round-robin, the starting fold rotating
    from class to class so that fold sizes differ by at most one.
    """
    if k < 2:
        raise ConfigError(f"--cv must be at least 2, not {k}.")
    by_class: dict[object, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    if not by_class:
        raise ConfigError("cross-validation needs examples, and there are none.")
    smallest = min(by_class, key=lambda c: (len(by_class[c]), str(c)))
    if k > len(by_class[smallest]):
        raise ConfigError(
            f"--cv {k} needs at least {k} examples of every class, but class {smallest!r} "
            f"has {len(by_class[smallest])}; use fewer folds."
        )
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for c in sorted(by_class, key=str):  # a fixed class order: the folds depend on seed alone
        members = np.asarray(by_class[c], dtype=np.int64)[rng.permutation(len(by_class[c]))]
        for j, index in enumerate(members):
            folds[(start + j) % k].append(int(index))
        start = (start + len(members)) % k
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


__all__ = [
    "FORMATS",
    "LabeledText",
    "label_of",
    "read_labeled",
    "read_per_label",
    "read_tsv",
    "stratified_folds",
]
