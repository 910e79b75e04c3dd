"""rnnkit score / rnnkit.score: KenLM's convention, stdin, formats, bad input; sentence-mode
eval adds up the sentence scores; eval does not depend on its batch size."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

import rnnkit
from helpers import assert_one_sentence, run_main

LN10 = math.log(10.0)


@pytest.mark.parametrize("kind", ["stream", "window"])
def test_eval_perplexity_does_not_depend_on_the_batch_size(
    word_runs: dict[str, Path], kind: str
) -> None:
    results = [rnnkit.evaluate(word_runs[kind], word_runs["valid"], batch_size=b)
               for b in (1, 3, 16)]  # fmt: skip
    assert len({r.tokens for r in results}) == 1
    ppl = [r.perplexity for r in results]
    assert max(ppl) / min(ppl) - 1 < 0.005


def test_sentence_mode_eval_is_the_sum_of_the_sentence_scores(word_runs: dict[str, Path]) -> None:
    run, valid = word_runs["sentence"], word_runs["valid"]
    ev = [rnnkit.evaluate(run, valid, batch_size=b) for b in (1, 16)]
    scores = rnnkit.score(run, valid)
    for e in ev:
        assert e.tokens == scores.num_tokens
        assert e.nats == pytest.approx(-scores.sentence_log10().sum() * LN10, rel=1e-9)
        assert e.perplexity == pytest.approx(scores.perplexity, rel=1e-9)


def test_score_cli_text_and_jsonl_match_the_api(
    word_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, valid = word_runs["sentence"], word_runs["valid"]
    api = rnnkit.score(run, valid)
    code, out, err = run_main(["score", run, valid, "--format", "jsonl"], capsys)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == api.num_sentences == 40
    assert {"text", "log10_prob", "tokens", "oovs"} <= set(records[0])
    assert sum(r["log10_prob"] for r in records) == pytest.approx(api.total_log10)
    assert "perplexity" in err and "including OOVs" in err and "excluding OOVs" in err
    code, out, _ = run_main(["score", run, valid], capsys)
    lines = out.splitlines()
    assert len(lines) == 41 and "log10" in lines[0] and "tokens" in lines[0]
    assert f"perplexity {api.perplexity:.3f} including OOVs" in lines[-1]


def test_stdin_scores_equal_file_scores(
    word_runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, valid = word_runs["stream"], word_runs["valid"]
    code, from_file, _ = run_main(["score", run, valid, "--per-token", "--format", "jsonl"], capsys)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(valid.read_bytes())))
    code2, from_stdin, _ = run_main(["score", run, "-", "--per-token", "--format", "jsonl"], capsys)
    assert code == code2 == 0 and from_file == from_stdin


def test_per_token_text_output(word_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    f = tmp_path / "s.txt"
    f.write_text("the cat sees a zebra\n", encoding="utf-8")
    code, out, _ = run_main(["score", word_runs["sentence"], f, "--per-token"], capsys)
    lines = out.splitlines()
    assert code == 0 and "1 OOV" in lines[0]
    tokens = [line.split("\t") for line in lines[1:7]]
    assert [t[1] for t in tokens] == ["the", "cat", "sees", "a", "zebra", "</s>"]
    assert tokens[4][-1] == "OOV" and all(t[2].endswith(" log10") for t in tokens)
    total = sum(float(t[2].split()[0]) for t in tokens)
    assert total == pytest.approx(float(lines[0].split()[0]), abs=5e-4)


def test_batched_cli_equals_unbatched(word_runs: dict[str, Path], capsys) -> None:
    run, valid = word_runs["window"], word_runs["valid"]
    _, a, _ = run_main(["score", run, valid, "--batch-size", "1", "--format", "jsonl"], capsys)
    _, b, _ = run_main(["score", run, valid, "--batch-size", "7", "--format", "jsonl"], capsys)
    ra = [json.loads(line)["log10_prob"] for line in a.splitlines()]
    rb = [json.loads(line)["log10_prob"] for line in b.splitlines()]
    assert ra == pytest.approx(rb, abs=1e-5)


# -- bad input ----------------------------------------------------------------------------


def test_empty_lines_are_empty_sentences(word_runs: dict[str, Path]) -> None:
    result = rnnkit.score(word_runs["sentence"], sentences=["the cat sees it", "", "   "])
    recs = list(result.records(per_token=True))
    assert [r["tokens"] for r in recs] == [5, 1, 1]
    assert recs[1]["per_token"][0]["token"] == "</s>" and recs[1]["log10_prob"] < 0


def test_empty_file_is_refused(word_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    code, out, err = run_main(["score", word_runs["sentence"], empty], capsys)
    assert code == 2 and out == ""
    assert_one_sentence(err, "empty.txt", "is empty")


def test_lines_longer_than_any_bptt_window(
    word_runs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    long = " ".join(["the cat sees the fish"] * 100)  # 500 words; bptt is 10
    by_parts = rnnkit.score(word_runs["sentence"], sentences=[long])
    from rnnkit.evaluation.sentences import score_lines

    run = rnnkit.load(word_runs["sentence"])
    one_pass = score_lines(run.model, run.vocab, [long], batch_size=1)
    assert by_parts.total_log10 == pytest.approx(one_pass.total_log10, rel=1e-6)
    # and a sentence-mode run trains on a corpus holding such a line
    corpus = tmp_path / "c.txt"
    corpus.write_text(word_runs["train"].read_text() + long + "\n", encoding="utf-8")
    code, _, err = run_main(
        ["train", corpus, "--out", tmp_path / "r", "--level", "word", "--mode", "sentence",
         "--hidden", "8", "--bptt", "16", "--max-steps", "3", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err


def test_text_in_another_vocabulary_warns_with_the_oov_rate(
    word_runs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    other = tmp_path / "fr.txt"
    other.write_text("le chat mange le poisson\nbonjour\n", encoding="utf-8")
    code, out, err = run_main(["score", word_runs["sentence"], other], capsys)
    assert code == 0 and "6 OOVs" in out
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "100.0%" in warning[0] and "fr.txt" in warning[0]


def test_character_level_run_cannot_score_words(tiny_run: Path, tmp_path: Path, capsys) -> None:
    f = tmp_path / "s.txt"
    f.write_text("hello world\n", encoding="utf-8")
    code, out, err = run_main(["score", tiny_run, f], capsys)
    assert code == 2 and out == ""
    assert_one_sentence(err, "character-level", "--level word")


# -- generation of sentences ----------------------------------------------------------------


def test_sentence_runs_generate_sentences(word_runs: dict[str, Path]) -> None:
    run = word_runs["sentence"]
    vocab = rnnkit.load(run).vocab
    samples = rnnkit.generate(run, num_samples=5, max_new_tokens=40, seed=3)
    assert len(samples) == 5
    for s in samples:
        words = s.split()
        assert "\n" not in s and "</s>" not in words and "<s>" not in words
        assert "<unk>" not in words and all(w in vocab for w in words)
    assert samples == rnnkit.generate(run, num_samples=5, max_new_tokens=40, seed=3)
    cont = rnnkit.generate(run, "the cat", max_new_tokens=3, greedy=True)
    assert cont[0].startswith(" ") and len(cont[0].split()) <= 3


def test_vocab_size_limits_the_vocabulary(word_runs: dict[str, Path], tmp_path: Path) -> None:
    rnnkit.train(word_runs["train"], tmp_path / "r", level="word", vocab_size=10, hidden_size=8,
                 max_steps=2, progress=False)  # fmt: skip
    run = rnnkit.load(tmp_path / "r")
    assert len(run.vocab) == 10 and run.model.config.vocab_size == 10


def test_stdin_and_file_cut_lines_alike(
    word_runs: dict[str, Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = "the cat\u2028sees it\r\n\nshe likes it".encode()  # U+2028 is not a line end here
    f = tmp_path / "odd.txt"
    f.write_bytes(raw)
    _, from_file, _ = run_main(["score", word_runs["sentence"], f, "--format", "jsonl"], capsys)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))
    _, from_stdin, _ = run_main(["score", word_runs["sentence"], "-", "--format", "jsonl"], capsys)
    assert from_file == from_stdin and len(from_file.splitlines()) == 3
