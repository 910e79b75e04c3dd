"""n-best lists in Mikolov's RNNLM format: parsing, rescoring, the 1-best per id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnkit.errors import DataError
from rnnkit.evaluation.rescoring import best_per_id, parse_nbest, read_nbest, rescore


def test_parse_with_and_without_scores() -> None:
    with_scores = parse_nbest(["0 -1.5 the cat", "0 -2e1 a cat", "1 3 dogs", "1 0.5"])
    assert [(e.sentence_id, e.score, e.text) for e in with_scores] == [
        ("0", -1.5, "the cat"),
        ("0", -20.0, "a cat"),
        ("1", 3.0, "dogs"),
        ("1", 0.5, ""),
    ]
    plain = parse_nbest(["0 the cat", "1 3 dogs"])  # "the" is no number: no score column
    assert [(e.score, e.text) for e in plain] == [(None, "the cat"), (None, "3 dogs")]
    forced = parse_nbest(["1 3 dogs"], has_score=False)
    assert forced[0].text == "3 dogs"


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (["0 the cat", "the dog"], "x.txt:2: the line has no sentence id (it starts with 'the')"),
        (["0 a", ""], "x.txt:2: empty line"),
        ([], "empty"),
    ],
)
def test_lines_without_ids_are_named(lines: list[str], fragment: str) -> None:
    with pytest.raises(DataError) as info:
        parse_nbest(lines, "x.txt")
    assert fragment in str(info.value)


def test_forced_scores_must_be_numbers() -> None:
    with pytest.raises(DataError, match=r"x\.txt:1: expected a score"):
        parse_nbest(["0 the cat"], "x.txt", has_score=True)


def test_read_file(tmp_path: Path) -> None:
    p = tmp_path / "nbest.txt"
    p.write_text("0 a b\n1 c\n", encoding="utf-8")
    assert [e.line for e in read_nbest(p)] == [1, 2]
    with pytest.raises(DataError, match="no such n-best file"):
        read_nbest(tmp_path / "nope.txt")


def test_rescore_combines_scores_and_picks_best() -> None:
    entries = parse_nbest(["0 -1 a", "0 -2 a b", "7 -5 c", "7 -5 c c"])

    def scorer(sentences: list[str]) -> list[np.ndarray]:  # -1 per token, </s> included
        return [np.full(len(s.split()) + 1, -1.0) for s in sentences]

    out = rescore(entries, scorer, lm_weight=2.0, batch_size=3)
    assert [r.lm_log10 for r in out] == [-2.0, -3.0, -2.0, -3.0]
    assert [r.total for r in out] == [-5.0, -8.0, -9.0, -11.0]
    best = best_per_id(out)
    assert [(b.entry.sentence_id, b.entry.text) for b in best] == [("0", "a"), ("7", "c")]
