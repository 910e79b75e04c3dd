"""n-best lists in Mikolov's RNNLM format: parsing, rescoring, the 1-best per id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit.api
from rnnkit.cli import main
from rnnkit.errors import ConfigError, DataError
from rnnkit.evaluation.interpolation import check_interpolation_flags
from rnnkit.evaluation.rescoring import (
    best_per_id,
    ngram_scorer,
    parse_nbest,
    read_nbest,
    rescore,
)


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


ARPA = Path(__file__).resolve().parent.parent / "ngram" / "data" / "tiny_kn3.arpa"


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"lam": 0.5}, "--lambda and --tune-lambda need --ngram"),
        ({"tune_lambda": "valid.txt"}, "--lambda and --tune-lambda need --ngram"),
        ({"ngram": "m.arpa", "lam": 0.5, "tune_lambda": "valid.txt"}, "conflict: give one"),
        ({"ngram": "m.arpa", "lam": 1.5}, "--lambda must be between 0 and 1"),
        ({"ngram": "m.arpa", "model_is_arpa": True}, "need an RNN run as MODEL"),
        ({"lam": 0.5, "model_is_arpa": True}, "need an RNN run as MODEL"),
    ],
)
def test_interpolation_flags_that_do_not_go_together(flags: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_interpolation_flags(**{"ngram": None, "lam": None, "tune_lambda": None, **flags})
    assert fragment in str(info.value) and str(info.value).endswith(".")


def test_interpolation_flags_that_go_together() -> None:
    for ngram, lam, tune in [(None, None, None), ("m.arpa", None, None), ("m.arpa", 0.0, None),
                             ("m.arpa", 1.0, None), ("m.arpa", None, "valid.txt")]:  # fmt: skip
        check_interpolation_flags(ngram, lam, tune)
    check_interpolation_flags(None, None, None, model_is_arpa=True)


def test_rescore_from_files_is_rnnkit_rescore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 -3 mat the cat\n0 -3.5 the cat\n1 -2 the dog\n1 -2 dog the\n")
    result = rnnkit.api.rescore(ARPA, nbest, lm_weight=2.0)
    expected = rescore(read_nbest(nbest), ngram_scorer(ARPA), lm_weight=2.0)
    assert result.candidates == expected and result.best == best_per_id(expected)
    assert result.has_scores and result.lam is None and result.tuned_perplexity is None
    assert main(["rescore", str(ARPA), str(nbest), "--lm-weight", "2"]) == 0
    best = [f"{r.entry.sentence_id} {r.entry.text}" for r in result.best]
    assert capsys.readouterr().out.splitlines() == best
    # a model interpolated with itself is itself; the weight is reported
    mixed = rnnkit.api.rescore(ARPA, nbest, ngram=ARPA, lam=0.3, lm_weight=2.0)
    assert [r.total for r in mixed.candidates] == pytest.approx([r.total for r in expected])
    assert mixed.lam == 0.3
    # any TokenScorer is a MODEL; without the score column the text starts at the id
    flat = rnnkit.api.rescore(
        lambda sents: [np.full(len(s.split()) + 1, -1.0) for s in sents], nbest, scores="no"
    )
    assert not flat.has_scores and flat.candidates[0].entry.text == "-3 mat the cat"
    assert [r.total for r in flat.candidates] == [-5.0, -4.0, -4.0, -4.0]


def test_rescore_tunes_lambda_and_reports_it(tmp_path: Path) -> None:
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 the cat\n0 cat the\n")
    valid = tmp_path / "valid.txt"
    valid.write_text("the cat sat\nthe dog\n")
    logs: list[str] = []
    result = rnnkit.api.rescore(ARPA, nbest, ngram=ARPA, tune_lambda=valid, log=logs.append)
    assert result.lam is not None and 0.0 <= result.lam <= 1.0
    assert result.tuned_perplexity is not None and result.tuned_perplexity > 1.0
    assert len(logs) == 1 and logs[0].startswith(f"tuned --lambda {result.lam:.4f} on {valid}")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"scores": "maybe"}, ConfigError, "--scores must be auto, yes or no"),
        ({"ngram": "missing.arpa"}, DataError, "--ngram missing.arpa: no such ARPA file"),
        ({"lam": 0.5}, ConfigError, "need --ngram"),
    ],
)
def test_rescore_bad_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 the cat\n")
    with pytest.raises(error) as info:
        rnnkit.api.rescore(ARPA, nbest, **kwargs)
    assert fragment in str(info.value) and str(info.value).endswith(".")
    with pytest.raises(DataError, match="no such model file or run directory"):
        rnnkit.api.rescore(tmp_path / "missing", nbest)
