"""Evaluation: exact, independent of the batch size, same from the CLI and the API."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.evaluation.stream import (
    DYNAMIC_WINDOW,
    dynamic_log_probs,
    stream_log_probs,
    stream_loss,
)


def test_eval_does_not_depend_on_batch_size(tiny_run: Path) -> None:
    corpus = tiny_run.parent / "tiny.txt"
    losses = [rnnkit.evaluate(tiny_run, corpus, batch_size=b).nats_per_token for b in (1, 3, 16)]
    counts = {rnnkit.evaluate(tiny_run, corpus, batch_size=b).tokens for b in (1, 3, 16)}
    assert len(counts) == 1  # N - 1 predictions whatever the batch size
    assert max(losses) / min(losses) - 1 < 0.005


def test_stream_loss_equals_one_pass_over_the_whole_text(tiny_run: Path) -> None:
    run = rnnkit.load(tiny_run)
    ids = np.random.default_rng(0).integers(0, len(run.vocab), 300).astype(np.int32)
    total, count = stream_loss(run.model, ids, batch_size=1, bptt=37)
    x = torch.tensor(ids[None, :-1], dtype=torch.long)
    y = torch.tensor(ids[None, 1:], dtype=torch.long)
    with torch.no_grad():
        logp, _ = run.model.log_prob(x, y)
    assert count == len(ids) - 1
    assert math.isclose(total, -float(logp.double().sum()), rel_tol=1e-5)


def test_eval_cli_reports_units_and_matches_the_api(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tiny_run.parent / "tiny.txt"
    assert main(["eval", str(tiny_run), str(corpus)]) == 0
    out = capsys.readouterr().out
    for unit in ("nats/char", "bits/char", "perplexity", "chars predicted"):
        assert unit in out
    assert main(["eval", str(tiny_run), str(corpus), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    api = rnnkit.evaluate(tiny_run, corpus)
    assert record["bits_per_char"] == pytest.approx(api.bits_per_token)
    assert record["bits_per_char"] == pytest.approx(record["nats_per_char"] / math.log(2))
    assert record["perplexity"] == pytest.approx(math.exp(record["nats_per_char"]))


def test_eval_counts_unknown_characters(tiny_run: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("Speak, speak 🙂🙂\n", encoding="utf-8")
    result = rnnkit.evaluate(tiny_run, text)
    assert result.unknown == 2 and result.tokens == len("Speak, speak 🙂🙂\n") - 1


def test_builtin_corpus_ships_with_the_package() -> None:
    from rnnkit.text import resolve_corpus

    path = resolve_corpus("shakespeare")
    assert path.is_file() and path.stat().st_size == 1_115_394


# -- dynamic evaluation --------------------------------------------------------------------


def test_dynamic_evaluation_at_rate_0_is_the_static_score(tiny_run: Path) -> None:
    run = rnnkit.load(tiny_run)
    ids = np.random.default_rng(1).integers(0, len(run.vocab), 95).astype(np.int32)
    static = stream_log_probs(run.model, ids, batch_size=1, bptt=64)
    np.testing.assert_allclose(dynamic_log_probs(run.model, ids, 0.0), static, rtol=1e-5)


def test_dynamic_evaluation_scores_each_window_before_learning_from_it(tiny_run: Path) -> None:
    """A text read twice: the first window is scored by the saved model, as statically; the
    second copy is predicted better once the model has learnt from the first; the saved
    model is not changed."""
    run = rnnkit.load(tiny_run)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    half = np.random.default_rng(2).integers(0, len(run.vocab), 60).astype(np.int32)
    ids = np.concatenate([half, half])
    static = stream_log_probs(run.model, ids, batch_size=1, bptt=64)
    dynamic = dynamic_log_probs(run.model, ids, 0.1)
    w = DYNAMIC_WINDOW
    np.testing.assert_allclose(dynamic[:w], static[:w], rtol=1e-5)  # nothing learnt yet
    assert not np.allclose(dynamic[w : 2 * w], static[w : 2 * w])  # the first step changed it
    second = slice(len(half), None)  # predictions of the repeated copy
    assert dynamic[second].sum() > static[second].sum() + 10  # nats
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_dynamic_evaluation_from_the_cli(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tiny_run.parent / "tiny.txt"
    assert main(["eval", str(tiny_run), str(corpus), "--dynamic", "0.003", "--format", "json"]) == 0
    dynamic = json.loads(capsys.readouterr().out)
    static = rnnkit.evaluate(tiny_run, corpus)
    assert dynamic["tokens"] == static.tokens
    # the model keeps learning from a text it was trained on: it predicts it better still
    assert dynamic["nats_per_char"] < static.nats_per_token
    assert main(["eval", str(tiny_run), str(corpus), "--dynamic", "-1"]) == 2
    assert "--dynamic must be a learning rate" in capsys.readouterr().err


def test_dynamic_evaluation_needs_a_stream_run(word_runs: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sees it\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="sentence mode"):
        rnnkit.evaluate(word_runs["sentence"], text, dynamic=0.1)


def test_a_perplexity_beyond_float_range_is_inf_not_an_error() -> None:
    from rnnkit.api import EvalResult

    assert EvalResult("f", "word", 10, 0, 1e6).perplexity == math.inf
    assert EvalResult("f", "word", 10, 0, 10.0).perplexity == pytest.approx(math.e)


def test_dynamic_evaluation_of_an_arpa_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rnnkit.ngram import train_kneser_ney, write_arpa

    text = tmp_path / "t.txt"
    text.write_text("the cat sees it\nthe dog sees it\n", encoding="utf-8")
    arpa = tmp_path / "m.arpa"
    write_arpa(train_kneser_ney(text, order=2, discount_fallback=(0.5, 1, 1.5)), arpa)
    assert main(["eval", str(arpa), str(text), "--dynamic", "0.1"]) == 2
    assert "--dynamic adapts an RNN run" in capsys.readouterr().err
