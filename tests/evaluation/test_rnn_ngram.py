"""An RNN run and an ARPA model through the same commands, and their interpolation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import rnnkit
import rnnkit.api
from helpers import assert_one_sentence
from rnnkit.cli import main


@pytest.fixture(scope="module")
def kn3(word_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kn") / "kn3.arpa"
    assert main(["ngram", "train", "--order", "3", str(word_runs["train"]), "-o", str(out),
                 "--discount-fallback"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["stream", "sentence"])
def test_lambda_one_is_the_run_and_zero_is_the_ngram(
    word_runs: dict[str, Path], kn3: Path, name: str
) -> None:
    run, valid = word_runs[name], word_runs["valid"]
    alone = rnnkit.evaluate(run, valid)
    ngram = rnnkit.evaluate(kn3, valid)
    one = rnnkit.evaluate(run, valid, ngram=kn3, lam=1.0)
    zero = rnnkit.evaluate(run, valid, ngram=kn3, lam=0.0)
    assert one.tokens == zero.tokens == alone.tokens == ngram.tokens
    assert one.nats == pytest.approx(alone.nats, rel=1e-9)
    assert zero.nats == pytest.approx(ngram.nats, rel=1e-9)
    half = rnnkit.evaluate(run, valid, ngram=kn3, lam=0.5)
    # the mixture of two distributions is never worse than the worse of the two (log is concave)
    assert half.perplexity <= max(alone.perplexity, ngram.perplexity)


def test_tuned_lambda_beats_both_models_on_the_tuning_text(
    word_runs: dict[str, Path], kn3: Path
) -> None:
    run, valid = word_runs["stream"], word_runs["valid"]
    tuned = rnnkit.evaluate(run, valid, ngram=kn3, tune_lambda=valid)
    assert tuned.interpolation is not None and 0.0 <= tuned.interpolation["lambda"] <= 1.0
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        assert tuned.perplexity <= rnnkit.evaluate(run, valid, ngram=kn3, lam=lam).perplexity + 1e-9


def test_score_interpolates_sentence_by_sentence(word_runs: dict[str, Path], kn3: Path) -> None:
    run, valid = word_runs["sentence"], word_runs["valid"]
    rnn = rnnkit.score(run, valid)
    ng = rnnkit.score(kn3, valid)
    mixed = rnnkit.score(run, valid, ngram=kn3, lam=0.3)
    lam = 0.3
    for a, b, m in zip(rnn.records(), ng.records(), mixed.records()):
        assert a["tokens"] == b["tokens"] == m["tokens"]
    # per token: 10^m = 0.3 * 10^a + 0.7 * 10^b
    pa, pb, pm = rnn.scores.token_log10, ng.scores.token_log10, mixed.scores.token_log10
    assert all(
        math.isclose(10**m, lam * 10**a + (1 - lam) * 10**b, rel_tol=1e-9)
        for a, b, m in zip(pa.tolist(), pb.tolist(), pm.tolist())
    )
    # the sentence-mode run's eval equals its score totals, interpolated too
    ev = rnnkit.evaluate(run, valid, ngram=kn3, lam=0.3)
    assert -ev.nats / math.log(10) == pytest.approx(mixed.total_log10, rel=1e-9)


def test_cli_eval_and_score_accept_an_arpa_file(
    word_runs: dict[str, Path], kn3: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = word_runs["valid"]
    assert main(["eval", str(kn3), str(valid), "--format", "json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert main(["ngram", "eval", str(kn3), str(valid)]) == 0
    assert f"{ev['perplexity']:.2f}" in capsys.readouterr().out
    assert main(["score", str(kn3), str(valid), "--format", "jsonl"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {"text", "log10_prob", "tokens", "oovs"} <= set(first)


def test_rescore_with_an_rnn_run(word_runs: dict[str, Path], kn3: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    nbest = tmp_path / "nbest.txt"
    nbest.write_text(
        "1 the cat sees the fish\n1 fish the sees cat the\n2 she likes it\n2 it likes she\n"
    )
    assert main(["rescore", str(word_runs["sentence"]), str(nbest), "--ngram", str(kn3),
                 "--lambda", "0.5"]) == 0  # fmt: skip
    best = capsys.readouterr().out
    assert "the cat sees the fish" in best and "she likes it" in best


def test_rescore_reads_the_weights_asked_for(
    word_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a run killed before it validated: its best weights fall back to the last, with a note
    run = tmp_path / "run"
    shutil.copytree(word_runs["sentence"], run)
    (run / "model.safetensors").unlink()
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("1 the cat sees the fish\n1 fish the sees cat the\n", encoding="utf-8")
    assert main(["rescore", str(run), str(nbest)]) == 0
    assert "rnnkit: note:" in capsys.readouterr().err
    assert main(["rescore", str(run), str(nbest), "--weights", "last", "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    assert "note" not in err
    # the same LM scores from Python, given the run loaded with its last weights
    result = rnnkit.api.rescore(rnnkit.load(run, weights="last"), nbest)
    assert [json.loads(line)["lm_log10_prob"] for line in out.splitlines()] == [
        round(result.best[0].lm_log10, 6)
    ]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["eval", "{run}", "{valid}", "--lambda", "0.5"], "need --ngram"),
        (
            [
                "eval",
                "{run}",
                "{valid}",
                "--ngram",
                "{kn}",
                "--lambda",
                "0.5",
                "--tune-lambda",
                "{valid}",
            ],
            "conflict",
        ),
        (["eval", "{kn}", "{valid}", "--ngram", "{kn}"], "need an RNN run"),
        (
            ["eval", "{run}", "{valid}", "--ngram", "{kn}", "--lambda", "2"],
            "--lambda must be between 0 and 1",
        ),
    ],
)
def test_interpolation_flag_errors(word_runs: dict[str, Path], kn3: Path, argv: list[str], fragment: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    subs = {"{run}": str(word_runs["stream"]), "{valid}": str(word_runs["valid"]), "{kn}": str(kn3)}
    argv = [subs.get(a, a) for a in argv]
    assert main(argv) == 2
    assert_one_sentence(capsys.readouterr().err, fragment)
