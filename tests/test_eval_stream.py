"""Long evaluation and scoring (issue 17): eval and score read a text of any size in bounded
memory, with the figures of the whole-array computation they replace, and show progress."""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from helpers import run_main
from rnnkit import api
from rnnkit.evaluation import sentences as sentences_mod
from rnnkit.evaluation.sentences import sentence_log_probs
from rnnkit.evaluation.stream import stream_log_probs
from rnnkit.text import corpus as corpus_mod
from rnnkit.text import encode_file, reading
from rnnkit.text.sentences import Sentences


def _reference_nats(run: Path, file: Path, batch_size: int, bptt: int) -> tuple[float, int]:
    """What evaluate computed before it streamed: every log-probability in one array."""
    loaded = rnnkit.load(run)
    vocab = loaded.vocab
    ids = encode_file(file, vocab).ids
    if loaded.mode == "sentence":
        bos = vocab.bos_id if vocab.bos_id is not None else vocab.eos_id
        assert bos is not None and vocab.eos_id is not None
        sents = Sentences.from_stream(ids, vocab.eos_id, keep_empty=True)
        logp = sentence_log_probs(loaded.model, sents, bos, vocab.eos_id, max(batch_size, 64))
    else:
        if vocab.level == "word":
            ids = np.concatenate([np.array([vocab.eos_id], dtype=np.int32), ids])
        logp = stream_log_probs(loaded.model, ids, batch_size=batch_size, bptt=bptt)
    return -float(logp.sum()), len(logp)


@pytest.mark.parametrize(("batch_size", "bptt"), [(1, 256), (3, 7), (16, 256)])
def test_stream_eval_is_bit_identical_to_the_whole_array(
    tiny_run: Path, tiny_corpus: Path, batch_size: int, bptt: int
) -> None:
    result = rnnkit.evaluate(tiny_run, tiny_corpus, batch_size=batch_size, bptt=bptt)
    nats, count = _reference_nats(tiny_run, tiny_corpus, batch_size, bptt)
    assert result.tokens == count
    assert result.nats == nats  # every bit: the same windows, states and summation


def test_word_stream_and_sentence_eval_are_bit_identical(word_runs: dict[str, Path]) -> None:
    for kind in ("stream", "window", "sentence"):
        result = rnnkit.evaluate(word_runs[kind], word_runs["valid"], batch_size=5, bptt=9)
        nats, count = _reference_nats(word_runs[kind], word_runs["valid"], 5, 9)
        assert (result.tokens, result.nats) == (count, nats), kind


def test_past_the_exact_limit_windows_are_summed_with_compensation(
    tiny_run: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "EXACT_SUM_LIMIT", 0)  # as for a text of over 4M tokens
    result = rnnkit.evaluate(tiny_run, tiny_corpus, batch_size=3, bptt=7)
    nats, count = _reference_nats(tiny_run, tiny_corpus, 3, 7)
    assert result.tokens == count
    assert result.nats == pytest.approx(nats, rel=1e-13)


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stream_eval_holds_windows_not_the_text(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2M characters: the old whole-array evaluation held 24 MB of ids and log-probs."""
    monkeypatch.setattr(reading, "CHUNK_BYTES", 1 << 16)  # so that reading is small too
    monkeypatch.setattr(api, "EXACT_SUM_LIMIT", 1 << 16)  # a 32 MB array below 4M tokens
    big = tmp_path / "big.txt"
    big.write_text(("First Citizen: we are accounted poor citizens.\n" * 42_000)[:2_000_000])
    rnnkit.load(tiny_run)  # the model's own allocations are not the point
    peak = _peak_bytes(lambda: rnnkit.evaluate(tiny_run, big, batch_size=16, bptt=64))
    assert peak < 6_000_000, peak
    whole = _peak_bytes(lambda: stream_log_probs(rnnkit.load(tiny_run).model,
                                                 encode_file(big, rnnkit.load(tiny_run).vocab).ids,
                                                 batch_size=16, bptt=64))  # fmt: skip
    assert whole > 3 * peak  # the measure can tell the two apart


def test_score_stream_equals_score_for_a_normal_file(word_runs: dict[str, Path]) -> None:
    run, valid = word_runs["sentence"], word_runs["valid"]
    whole = rnnkit.score(run, valid)
    stream = api.score_stream(run, valid, per_token=True, progress=False)
    records = [line.record() for line in stream]
    assert records == list(whole.records(per_token=True))
    assert stream.totals.summary() == whole.summary()  # to the last bit


def test_a_very_long_line_is_scored_a_window_at_a_time(
    word_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = word_runs["stream"]
    words = [*word_runs["valid"].read_text().split(), "zebra", "<unk>"]
    line = " ".join(words[i % len(words)] for i in range(30_000))
    text = tmp_path / "one-line.txt"
    text.write_text(f"the cat sees it\n{line}\n\nshe eats\n")
    whole = rnnkit.score(run, text)
    monkeypatch.setattr(sentences_mod, "LONG_LINE_CHARS", 1000)
    monkeypatch.setattr(corpus_mod, "PIECE_CHARS", 777)  # many pieces, cut mid-window
    stream = api.score_stream(run, text, progress=False)
    got = [line.record() for line in stream]
    want = list(whole.records())
    assert [(r["text"], r["tokens"], r["oovs"]) for r in got] == [
        (r["text"], r["tokens"], r["oovs"]) for r in want
    ]
    for g, w in zip(got, want, strict=True):  # float32 kernels, other batches: ~1e-7
        assert g["log10_prob"] == pytest.approx(w["log10_prob"], rel=1e-6)
    t = stream.totals
    assert (t.num_sentences, t.num_tokens, t.num_oov) == (4, whole.num_tokens, whole.num_oov)
    assert t.perplexity == pytest.approx(whole.perplexity, rel=1e-6)
    assert t.perplexity_excl_oov == pytest.approx(whole.perplexity_excl_oov, rel=1e-6)
    # alone in its file, the line is read in the same windows as a batch of one: only the
    # order of the summation differs
    text.write_text(line + "\n")
    monkeypatch.setattr(sentences_mod, "LONG_LINE_CHARS", 1 << 20)
    alone = rnnkit.score(run, text)
    monkeypatch.setattr(sentences_mod, "LONG_LINE_CHARS", 1000)
    stream = api.score_stream(run, text, progress=False)
    (got_line,) = [line.record() for line in stream]
    assert got_line["log10_prob"] == pytest.approx(alone.total_log10, rel=1e-12)
    assert stream.totals.perplexity == pytest.approx(alone.perplexity, rel=1e-12)
    assert stream.totals.perplexity_excl_oov == pytest.approx(alone.perplexity_excl_oov, rel=1e-12)


def test_scoring_a_long_line_keeps_no_per_token_arrays(
    word_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = word_runs["stream"]
    text = tmp_path / "one-line.txt"
    text.write_text(" ".join(["the cat sees the fish"] * 60_000) + "\n")  # 300k words, 1.7 MB
    rnnkit.load(run)
    monkeypatch.setattr(reading, "CHUNK_BYTES", 1 << 16)
    monkeypatch.setattr(corpus_mod, "PIECE_CHARS", 1 << 14)

    def stream() -> None:
        assert [r.tokens for r in api.score_stream(run, text, progress=False)] == [300_001]

    peak = _peak_bytes(stream)
    assert peak < 8_000_000, peak  # the line's text twice (parts, joined) and a window
    whole = _peak_bytes(lambda: rnnkit.score(run, text))
    assert whole > 3 * peak, (whole, peak)


def test_blocks_of_lines_give_each_line_its_own_score(
    word_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, valid = word_runs["sentence"], word_runs["valid"]
    whole = list(rnnkit.score(run, valid).records())
    monkeypatch.setattr(sentences_mod, "BLOCK_CHARS", 100)  # a few lines a block
    got = [line.record() for line in api.score_stream(run, valid, progress=False)]
    assert [r["text"] for r in got] == [r["text"] for r in whole]
    for g, w in zip(got, whole, strict=True):
        assert g["log10_prob"] == pytest.approx(w["log10_prob"], rel=1e-9, abs=1e-9)
    ev = rnnkit.evaluate(run, valid)  # sentence-mode eval streams the same blocks
    assert ev.nats == pytest.approx(-sum(r["log10_prob"] for r in whole) * math.log(10), rel=1e-9)


def test_cli_score_and_eval_show_a_bar_unless_told_not_to(
    word_runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, valid = word_runs["sentence"], word_runs["valid"]
    code, out, err = run_main(["score", run, valid, "--no-progress"], capsys)
    assert code == 0 and err == "" and len(out.splitlines()) == 41
    code, out, err = run_main(["eval", run, valid, "--no-progress", "--format", "json"], capsys)
    assert code == 0 and err == "" and json.loads(out)["tokens"] > 0
    shown = rnnkit.evaluate(word_runs["stream"], valid, progress=True)
    err = capsys.readouterr().err
    assert "evaluating" in err and "reading" in err
    assert shown.tokens > 0
    list(api.score_stream(run, valid, progress=True))
    assert "scoring" in capsys.readouterr().err
