"""n-best lists in Mikolov's RNNLM format, and rescoring them with any language model.

Each line of an n-best list is one candidate: the integer id of the sentence it is a candidate
for, optionally an existing score (for example the acoustic or translation model's), then the
words::

    0 -1234.5 the cat sat on the mat
    0 -1240.1 the cat sat on a mat
    1 -980.2 hello world

Rescoring adds ``lm_weight`` times the language model's log10 probability of the words
(``</s>`` included, ``<s>`` context only) to the existing score (0 when there is none) and picks
the best candidate per id. The language model is any :data:`TokenScorer` (sentences to
per-token log10 probabilities): an n-gram model, an RNN, or their interpolation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError
from rnnkit.evaluation.interpolation import TokenScorer

_INT = re.compile(r"^\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class NbestEntry:
    """One candidate: sentence id, its words (one space between), existing score, line number."""

    sentence_id: str
    text: str
    score: float | None
    line: int


@dataclass(frozen=True)
class Rescored:
    """A candidate with its language-model log10 probability and combined score."""

    entry: NbestEntry
    lm_log10: float
    num_tokens: int
    total: float


def parse_nbest(
    lines: Iterable[str], name: str = "<n-best>", has_score: bool | None = None
) -> list[NbestEntry]:
    """Parse n-best lines (see the module docstring).

    ``has_score``: whether the field after the id is an existing score; None decides from the
    lines themselves (a score column when every line has a number there). A line without an
    integer id first is a :class:`DataError` naming the line.
    """
    rows: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            raise DataError(
                f"{name}:{n}: empty line; every n-best line starts with the integer id of its "
                "sentence (Mikolov's RNNLM format: '0 the cat sat')"
            )
        if not _INT.match(fields[0]):
            raise DataError(
                f"{name}:{n}: the line has no sentence id (it starts with {fields[0][:30]!r}); "
                "every n-best line must start with the integer id of its sentence, as in "
                "Mikolov's RNNLM format: '0 the cat sat'"
            )
        rows.append((n, fields))
    if not rows:
        raise DataError(f"{name}: the n-best list is empty; give at least one candidate line")
    if has_score is None:
        has_score = all(len(f) >= 2 and _NUMBER.match(f[1]) for _, f in rows)
    entries = []
    for n, fields in rows:
        if has_score:
            if len(fields) < 2 or not _NUMBER.match(fields[1]):
                raise DataError(
                    f"{name}:{n}: expected a score after the sentence id, found "
                    f"{(fields[1] if len(fields) > 1 else 'nothing')!r}; give a number or "
                    "rescore without existing scores"
                )
            entries.append(NbestEntry(fields[0], " ".join(fields[2:]), float(fields[1]), n))
        else:
            entries.append(NbestEntry(fields[0], " ".join(fields[1:]), None, n))
    return entries


def read_nbest(path: str | os.PathLike[str], has_score: bool | None = None) -> list[NbestEntry]:
    """Read an n-best list file (UTF-8); see :func:`parse_nbest`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such n-best file; check the path") from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot be read ({exc.strerror})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: invalid UTF-8 at byte offset {exc.start}") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return parse_nbest(lines, str(p), has_score)


def rescore(
    entries: Sequence[NbestEntry],
    scorer: TokenScorer,
    lm_weight: float = 1.0,
    batch_size: int = 1024,
) -> list[Rescored]:
    """Score every candidate with ``scorer``; ``total = score + lm_weight * lm_log10``."""
    out: list[Rescored] = []
    for start in range(0, len(entries), batch_size):
        batch = entries[start : start + batch_size]
        token_scores = scorer([e.text for e in batch])
        if len(token_scores) != len(batch):
            raise ValueError("the scorer returned a different number of sentences")
        for e, toks in zip(batch, token_scores):
            lm = float(np.sum(toks, dtype=np.float64))
            base = e.score if e.score is not None else 0.0
            out.append(Rescored(e, lm, int(np.size(toks)), base + lm_weight * lm))
    return out


def best_per_id(rescored: Sequence[Rescored]) -> list[Rescored]:
    """The candidate with the highest total per sentence id, ids in order of appearance
    (the first candidate wins a tie)."""
    best: dict[str, Rescored] = {}
    for r in rescored:
        cur = best.get(r.entry.sentence_id)
        if cur is None or r.total > cur.total:
            best[r.entry.sentence_id] = r
    return list(best.values())
