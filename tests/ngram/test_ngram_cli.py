"""`rnnkit ngram train|score|eval` and `rnnkit rescore`, called in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ngram_helpers import TINY

from helpers import assert_one_sentence
from rnnkit.cli import main


@pytest.fixture(scope="module")
def arpa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "kn3.arpa"
    assert (
        main(["ngram", "train", "--order", "3", "--discount-fallback", str(TINY), "-o", str(path)])
        == 0
    )
    return path


def test_train_writes_arpa_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.arpa.gz"
    assert (
        main(["ngram", "train", "-n", "2", "--discount-fallback", str(TINY), "-o", str(out)]) == 0
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2-grams:" in captured.err and "fallback" in captured.err
    assert out.read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["ngram", "train", "--order", "0", "{tiny}", "-o", "{tmp}/m.arpa"],
            "--order must be at least 1",
        ),
        (["ngram", "train", "--order", "3", "{empty}", "-o", "{tmp}/m.arpa"], "contains no words"),
        (
            ["ngram", "train", "--order", "3", "{tmp}/missing.txt", "-o", "{tmp}/m.arpa"],
            "no such file",
        ),
        (["ngram", "train", "--order", "3", "{tiny}", "-o", "{tmp}/m.arpa"], "--discount-fallback"),
        (
            [
                "ngram",
                "train",
                "-n",
                "3",
                "--fallback-discounts",
                "1",
                "1",
                "1",
                "{tiny}",
                "-o",
                "{tmp}/m",
            ],
            "needs --discount-fallback",
        ),
        (["ngram", "eval", "{bad}", "{tiny}"], "bad.arpa:3: "),
        (["ngram", "score", "{tmp}/none.arpa", "{tiny}"], "no such ARPA file"),
        (["rescore", "{arpa}", "{nbest_noid}"], "nbest.txt:2: the line has no sentence id"),
        (
            ["rescore", "{arpa}", "{nbest}", "--lambda", "0.5"],
            "--lambda and --tune-lambda need --ngram",
        ),
        (
            ["rescore", "{arpa}", "{nbest}", "--ngram", "{arpa}", "--lambda", "1.5"],
            "--lambda must be between 0 and 1",
        ),
        (["rescore", "{tmp}", "{nbest}"], "not an rnnkit run directory"),
    ],
)
def test_user_errors_exit_2_with_one_sentence(
    tmp_path: Path, arpa: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=2\nbogus\n", encoding="utf-8")
    (tmp_path / "nbest.txt").write_text("0 the cat\nthe dog sat\n", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("0 the cat\n", encoding="utf-8")
    names = {
        "tiny": str(TINY),
        "tmp": str(tmp_path),
        "empty": str(tmp_path / "empty.txt"),
        "bad": str(tmp_path / "bad.arpa"),
        "arpa": str(arpa),
        "nbest_noid": str(tmp_path / "nbest.txt"),
        "nbest": str(tmp_path / "ok.txt"),
    }
    assert main([a.format(**names) for a in argv]) == 2
    assert_one_sentence(capsys.readouterr().err, fragment)


def test_score_text_and_jsonl(
    tmp_path: Path, arpa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat\n\nthe zebra sat on the mat\n", encoding="utf-8")
    assert main(["ngram", "score", str(arpa), str(text)]) == 0
    captured = capsys.readouterr()
    rows = captured.out.strip("\n").split("\n")
    assert len(rows) == 3
    assert rows[1].split("\t")[1] == ""
    assert "perplexity" in captured.err and "1 OOV" in captured.err

    assert main(["ngram", "score", str(arpa), str(text), "--format", "jsonl", "--per-token"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tokens"] for r in recs] == [4, 1, 7]
    assert [r["oovs"] for r in recs] == [0, 0, 1]
    for r, row in zip(recs, rows):
        assert r["log10_prob"] == pytest.approx(float(row.split("\t")[0]), abs=1e-6)
        assert sum(t["log10_prob"] for t in r["per_token"]) == pytest.approx(
            r["log10_prob"], abs=1e-5
        )
    assert recs[2]["per_token"][1] == {
        "token": "zebra",
        "log10_prob": recs[2]["per_token"][1]["log10_prob"],
        "oov": True,
    }
    assert recs[2]["per_token"][-1]["token"] == "</s>"


def test_eval_reports_units(arpa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ngram", "eval", str(arpa), str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "perplexity: " in out and "tokens: 105 " in out and "OOVs: 3 tokens" in out
    assert main(["ngram", "eval", str(arpa), str(TINY), "--format", "json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["tokens"] == 105 and rec["sentences"] == 17 and rec["oovs"] == 3


def test_rescore_picks_the_best_per_id(
    tmp_path: Path, arpa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nbest = tmp_path / "nbest.txt"
    nbest.write_text(
        "0 -10.0 mat the on sat cat the\n0 -10.5 the cat sat on the mat\n1 -3 the dog\n1 -2 dog the\n",
        encoding="utf-8",
    )
    out = tmp_path / "rescored.txt"
    assert main(["rescore", str(arpa), str(nbest), "-o", str(out)]) == 0
    best = capsys.readouterr().out.splitlines()
    assert best[0] == "0 the cat sat on the mat"
    assert len(best) == 2
    rows = out.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4 and rows[1].split(" ", 2)[2] == "the cat sat on the mat"
    # --lm-weight 0 keeps the existing scores' ranking
    assert main(["rescore", str(arpa), str(nbest), "--lm-weight", "0", "--format", "jsonl"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in recs] == ["mat the on sat cat the", "dog the"]
    # interpolating a model with itself changes nothing
    assert main(["rescore", str(arpa), str(nbest), "--ngram", str(arpa), "--lambda", "0.3"]) == 0
    assert capsys.readouterr().out.splitlines() == best


def test_rescore_tunes_lambda_on_validation_text(
    tmp_path: Path, arpa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kn1 = tmp_path / "kn1.arpa"
    assert (
        main(["ngram", "train", "-n", "2", "--discount-fallback", str(TINY), "-o", str(kn1)]) == 0
    )
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 the cat sat\n0 cat the sat\n", encoding="utf-8")
    capsys.readouterr()
    assert (
        main(["rescore", str(arpa), str(nbest), "--ngram", str(kn1), "--tune-lambda", str(TINY)])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == "0 the cat sat\n"
    assert "tuned --lambda" in captured.err and "perplexity" in captured.err
    # the KN3 model fits its own training text better than the bigram model: lambda near 1
    lam = float(captured.err.split("tuned --lambda ")[1].split()[0])
    assert 0.5 < lam <= 1.0
    assert main(["rescore", str(arpa), str(nbest), "--tune-lambda", str(TINY)]) == 2
    assert_one_sentence(capsys.readouterr().err, "--tune-lambda", "need --ngram")
