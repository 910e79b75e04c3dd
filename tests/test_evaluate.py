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
from rnnkit.evaluation.stream import stream_loss


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
