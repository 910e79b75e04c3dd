"""Chunk precision, recall and F1 counted exactly as conlleval (CoNLL-2000's Perl script).

Each label is split at its first hyphen into a tag and a type (``B-NP`` -> ``B``, ``NP``;
``O`` -> ``O``, ``""``). A chunk starts and ends where conlleval's ``startOfChunk`` and
``endOfChunk`` say, which covers IOB1, IOB2 (CoNLL-2000's B-/I-), IOE and the bracket tags,
and reads improper sequences as conlleval does: ``I-NP`` after ``O`` starts a chunk, and a
type change (``B-NP I-VP``) ends one chunk and starts another. A guessed chunk is correct
when it starts and ends where a gold chunk does, with the same type.

Sentences are processed as conlleval processes a file with a blank line after each sentence:
the blank line is an ``O`` token that closes open chunks and is not counted as a token.
Figures are fractions in [0, 1] (conlleval prints them times 100); a ratio with a zero
denominator is 0, as there. Token accuracy counts tokens whose whole label is right.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def split_label(label: str) -> tuple[str, str]:
    """(tag, type), split at the first hyphen: ``B-NP`` -> (B, NP), ``I-A-B`` -> (I, A-B),
    ``O`` -> (O, "")."""
    tag, sep, type_ = label.partition("-")
    return (tag, type_) if sep else (label, "")


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk ended between the previous token and this one (conlleval's rules)."""
    end = (prev_tag, tag) in _ENDS
    if prev_tag not in ("O", ".") and prev_type != type_:
        end = True
    return end or prev_tag in ("[", "]")  # bracket chunks have length 1


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk started at this token (conlleval's rules)."""
    start = (prev_tag, tag) in _STARTS
    if tag not in ("O", ".") and prev_type != type_:
        start = True
    return start or tag in ("[", "]")


_ENDS = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
_STARTS = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}


def is_chunk_labels(labels: Iterable[str]) -> bool:
    """Whether a label set is chunk labels: any label starting ``B-`` or ``I-``."""
    return any(label.startswith(("B-", "I-")) for label in labels)


@dataclass
class ChunkCounts:
    """conlleval's counters, fed sentence by sentence with :meth:`add`."""

    tokens: int = 0
    correct_tags: int = 0
    found_correct: int = 0  # gold chunks
    found_guessed: int = 0  # predicted chunks
    correct_chunks: int = 0
    found_correct_by_type: Counter[str] = field(default_factory=Counter)
    found_guessed_by_type: Counter[str] = field(default_factory=Counter)
    correct_chunks_by_type: Counter[str] = field(default_factory=Counter)
    # conlleval's running state, carried from sentence to sentence as through a file
    _in_correct: bool = False
    _last_correct: tuple[str, str] = ("O", "")
    _last_guessed: tuple[str, str] = ("O", "")

    def add(self, gold: Sequence[str], guessed: Sequence[str]) -> None:
        """One sentence: its gold and predicted labels, then the blank line after it."""
        if len(gold) != len(guessed):
            raise ValueError(f"{len(gold)} gold labels but {len(guessed)} predicted")
        for g, p in zip(gold, guessed):
            self._step(split_label(g), split_label(p), boundary=False)
        self._step(("O", ""), ("O", ""), boundary=True)

    def _step(self, correct: tuple[str, str], guessed: tuple[str, str], boundary: bool) -> None:
        (c, ct), (g, gt) = correct, guessed
        (lc, lct), (lg, lgt) = self._last_correct, self._last_guessed
        end_c, end_g = end_of_chunk(lc, c, lct, ct), end_of_chunk(lg, g, lgt, gt)
        start_c, start_g = start_of_chunk(lc, c, lct, ct), start_of_chunk(lg, g, lgt, gt)
        if self._in_correct:
            if end_c and end_g and lgt == lct:
                self._in_correct = False
                self.correct_chunks += 1
                self.correct_chunks_by_type[lct] += 1
            elif end_c != end_g or gt != ct:
                self._in_correct = False
        if start_c and start_g and gt == ct:
            self._in_correct = True
        if start_c:
            self.found_correct += 1
            self.found_correct_by_type[ct] += 1
        if start_g:
            self.found_guessed += 1
            self.found_guessed_by_type[gt] += 1
        if not boundary:
            self.correct_tags += c == g and ct == gt
            self.tokens += 1
        self._last_correct, self._last_guessed = correct, guessed

    def _final(self) -> tuple[int, Counter[str]]:
        """The counts of correct chunks after conlleval's end-of-input check."""
        by_type = Counter(self.correct_chunks_by_type)
        if self._in_correct:  # a chunk still open at the end of the input
            by_type[self._last_correct[1]] += 1
            return self.correct_chunks + 1, by_type
        return self.correct_chunks, by_type

    def scores(self) -> dict[str, float]:
        """accuracy, precision, recall, f1 over all chunks (fractions), and the three counts."""
        correct, _ = self._final()
        p, r, f = _prf(correct, self.found_guessed, self.found_correct)
        return {
            "accuracy": self.correct_tags / self.tokens if self.tokens else 0.0,
            "precision": p,
            "recall": r,
            "f1": f,
            "gold_chunks": float(self.found_correct),
            "predicted_chunks": float(self.found_guessed),
            "correct_chunks": float(correct),
        }

    def by_type(self) -> dict[str, dict[str, float]]:
        """{type: {precision, recall, f1, predicted}} for every type seen in gold or guesses."""
        _, correct = self._final()
        types = sorted(set(self.found_correct_by_type) | set(self.found_guessed_by_type))
        out = {}
        for t in types:
            guessed, gold = self.found_guessed_by_type[t], self.found_correct_by_type[t]
            p, r, f = _prf(correct[t], guessed, gold)
            out[t] = {"precision": p, "recall": r, "f1": f, "predicted": float(guessed)}
        return out


def _prf(correct: int, guessed: int, gold: int) -> tuple[float, float, float]:
    p = correct / guessed if guessed else 0.0
    r = correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def chunk_scores(
    gold: Iterable[Sequence[str]], guessed: Iterable[Sequence[str]]
) -> dict[str, float]:
    """conlleval's overall accuracy, precision, recall and F1 (fractions) over sentences."""
    counts = ChunkCounts()
    for g, p in zip(gold, guessed, strict=True):
        counts.add(g, p)
    return counts.scores()


__all__ = [
    "ChunkCounts",
    "chunk_scores",
    "end_of_chunk",
    "is_chunk_labels",
    "split_label",
    "start_of_chunk",
]
