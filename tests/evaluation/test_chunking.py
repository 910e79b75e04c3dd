"""Chunk scores as conlleval counts them.

The expected numbers below are worked out by hand from conlleval.pl's rules (startOfChunk,
endOfChunk and the main loop's inCorrect bookkeeping), each case's reasoning in its comment.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.evaluation.chunking import (
    ChunkCounts,
    chunk_scores,
    end_of_chunk,
    is_chunk_labels,
    split_label,
    start_of_chunk,
)


def counts(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    return chunk_scores(gold, pred)


def test_split_label_keeps_hyphens_in_types() -> None:
    assert split_label("B-NP") == ("B", "NP")
    assert split_label("I-ADJ-X") == ("I", "ADJ-X")  # conlleval's /^([^-]*)-(.*)$/
    assert split_label("O") == ("O", "")


def test_improper_i_after_o_starts_a_chunk() -> None:
    # Predicted I-NP after O: startOfChunk(O, I) is true, so the guess is the chunk [1, 2] NP,
    # the same span and type as the gold B-NP I-NP; O ends both: 1 found, 1 guessed, 1 right.
    # Token 1 is wrong as a tag (I vs B): accuracy 2/3.
    s = counts([["B-NP", "I-NP", "O"]], [["I-NP", "I-NP", "O"]])
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (1, 1, 1)
    assert s["precision"] == s["recall"] == s["f1"] == 1.0
    assert s["accuracy"] == pytest.approx(2 / 3)


def test_type_change_inside_a_chunk_splits_the_guess() -> None:
    # Predicted I-VP after B-NP: the type differs, so endOfChunk and startOfChunk are both
    # true: the guess is [1] NP and [2] VP. At token 2 gold does not end (B-NP I-NP) but the
    # guess does, so inCorrect drops: 0 right of 2 guessed, 1 gold. Accuracy 1/2.
    s = counts([["B-NP", "I-NP"]], [["B-NP", "I-VP"]])
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (1, 2, 0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["accuracy"] == 0.5


def test_gold_improper_type_change_matches_proper_guess() -> None:
    # Gold B-NP I-VP is read as [1] NP [2] VP; the guess B-NP B-VP is the same two chunks:
    # at token 2 both end with last types NP == NP (correct 1), both start VP; the sentence
    # break ends both (correct 2). Accuracy 1/2: I-VP != B-VP as labels.
    s = counts([["B-NP", "I-VP"]], [["B-NP", "B-VP"]])
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (2, 2, 2)
    assert s["f1"] == 1.0
    assert s["accuracy"] == 0.5


def test_chunk_at_sentence_end_and_sentences_do_not_merge() -> None:
    # Sentence 1 ends inside a chunk; the blank line (an O) closes it: correct. Sentence 2's
    # gold I-NP follows that O, so it starts a new chunk (it is not a continuation), as the
    # guess B-NP does: correct too. 2 gold, 2 guessed, 2 right; accuracy 2/3 (I vs B).
    s = counts([["O", "B-NP"], ["I-NP"]], [["O", "B-NP"], ["B-NP"]])
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (2, 2, 2)
    assert s["f1"] == 1.0
    assert s["accuracy"] == pytest.approx(2 / 3)


def test_all_o_gives_zero_scores_and_full_accuracy() -> None:
    # No chunk anywhere: every count is 0 and conlleval's ratios default to 0.
    s = counts([["O", "O", "O"]], [["O", "O", "O"]])
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (0, 0, 0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["accuracy"] == 1.0


def test_split_chunk_is_wrong() -> None:
    # Gold [1-3] NP; guess [1-2] NP [3] NP. At token 3 the guess ends (I, B) but gold does not:
    # inCorrect drops. 0 right, 2 guessed, 1 gold.
    s = counts([["B-NP", "I-NP", "I-NP"]], [["B-NP", "I-NP", "B-NP"]])
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (1, 2, 0)


def test_per_type_counts() -> None:
    # Gold NP VP . PP; guess NP NP . PP. Token 2: both end (B, B) with last types NP == NP:
    # NP correct; they start different types, so no inCorrect. Token 4: both start PP, the
    # break ends both: PP correct. Overall 2 of 3 guessed, 2 of 3 gold: P = R = F = 2/3.
    # NP: 1 right, 2 guessed, 1 gold -> P 1/2, R 1, F 2/3. VP: 0, 0, 1 -> 0. PP: 1, 1, 1 -> 1.
    c = ChunkCounts()
    c.add(["B-NP", "B-VP", "O", "B-PP"], ["B-NP", "B-NP", "O", "B-PP"])
    s = c.scores()
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    t = c.by_type()
    assert sorted(t) == ["NP", "PP", "VP"]
    assert (t["NP"]["precision"], t["NP"]["recall"]) == (0.5, 1.0)
    assert t["NP"]["f1"] == pytest.approx(2 / 3)
    assert (t["VP"]["precision"], t["VP"]["recall"], t["VP"]["f1"]) == (0.0, 0.0, 0.0)
    assert t["PP"]["f1"] == 1.0 and t["NP"]["predicted"] == 2


def test_rules_directly() -> None:
    assert start_of_chunk("O", "I", "", "NP")
    assert start_of_chunk("B", "I", "NP", "VP")
    assert not start_of_chunk("B", "I", "NP", "NP")
    assert end_of_chunk("I", "O", "NP", "")
    assert end_of_chunk("B", "I", "NP", "VP")
    assert not end_of_chunk("O", "B", "", "NP")


def test_is_chunk_labels() -> None:
    assert is_chunk_labels(["O", "B-NP", "I-NP"])
    assert not is_chunk_labels(["NN", "DT", "-LRB-", "PRP$"])


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkCounts().add(["O"], ["O", "O"])


def spans(labels: list[str]) -> set[tuple[int, int, str]]:
    """Chunks of a proper IOB2 sequence, read independently: B-X opens, I-X continues."""
    out, start, kind = set(), None, ""
    for i, label in enumerate([*labels, "O"]):
        if start is not None and label != f"I-{kind}":
            out.add((start, i, kind))
            start = None
        if label.startswith("B-"):
            start, kind = i, label[2:]
    return out


iob2 = st.lists(st.sampled_from(["O", "B-NP", "I-NP", "B-VP", "I-VP"]), min_size=1, max_size=8).map(
    lambda xs: [
        x if not x.startswith("I-") or (i and xs[i - 1][2:] == x[2:]) else "B" + x[1:]
        for i, x in enumerate(xs)
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(iob2, iob2), min_size=1, max_size=3))
def test_proper_iob2_counts_equal_exact_span_matches(pairs: list) -> None:
    # On proper IOB2 (no I- without a B- of its type before it) conlleval's counts are the
    # exact-match span counts: a guessed chunk is right when a gold chunk has its span and type.
    pairs = [(g, p[: len(g)] + ["O"] * (len(g) - len(p))) for g, p in pairs]
    s = chunk_scores([g for g, _ in pairs], [p for _, p in pairs])
    gold = sum(len(spans(g)) for g, _ in pairs)
    guessed = sum(len(spans(p)) for _, p in pairs)
    right = sum(len(spans(g) & spans(p)) for g, p in pairs)
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (gold, guessed, right)
