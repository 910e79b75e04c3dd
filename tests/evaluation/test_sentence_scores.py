"""Sentence scores: exact, batched equals unbatched, per-token sums, KenLM's convention."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.evaluation.sentences import markers, score_lines, sentence_log_probs, token_scorer
from rnnkit.text.sentences import encode_lines

LINES = ["the cat sees the fish", "", "she likes a zebra today", "they eats " * 30, "it"]


@pytest.fixture(scope="module", params=["sentence", "stream", "window"])
def run(request: pytest.FixtureRequest, word_runs: dict[str, Path]) -> rnnkit.api.LoadedRun:
    return rnnkit.load(word_runs[request.param])


def test_one_sentence_by_hand(run: rnnkit.api.LoadedRun) -> None:
    vocab = run.vocab
    bos, eos = markers(vocab)
    words = ["the", "cat", "sees", "the", "fish"]
    ids = [bos] + [vocab.id(w) for w in words] + [eos]
    with torch.no_grad():
        logp = torch.log_softmax(run.model(torch.tensor([ids[:-1]]))[0][0].double(), -1)
    expect = sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)) / math.log(10)
    got = score_lines(run.model, vocab, [" ".join(words)])
    assert got.num_tokens == len(words) + 1  # </s> predicted, <s> not
    assert got.sentence_log10()[0] == pytest.approx(expect, abs=1e-4)


def test_batched_equals_unbatched_and_order_does_not_matter(run: rnnkit.api.LoadedRun) -> None:
    enc = encode_lines(LINES, run.vocab)
    bos, eos = markers(run.vocab)
    one = sentence_log_probs(run.model, enc.sentences, bos, eos, batch_size=1)
    many = sentence_log_probs(run.model, enc.sentences, bos, eos, batch_size=4, max_tokens=16)
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-5)
    rev = score_lines(run.model, run.vocab, LINES[::-1]).sentence_log10()
    fwd = score_lines(run.model, run.vocab, LINES).sentence_log10()
    np.testing.assert_allclose(rev[::-1], fwd, atol=1e-5)


def test_per_token_scores_sum_to_the_sentence_score(run: rnnkit.api.LoadedRun) -> None:
    result = score_lines(run.model, run.vocab, LINES)
    for rec in result.records(per_token=True):
        tokens = rec["per_token"]
        assert len(tokens) == rec["tokens"] and tokens[-1]["token"] == "</s>"
        assert sum(t["log10_prob"] for t in tokens) == pytest.approx(rec["log10_prob"], abs=1e-9)
        assert sum(t["oov"] for t in tokens) == rec["oovs"]
    assert [r["oovs"] for r in result.records()] == [0, 0, 1, 0, 0]  # "zebra"
    assert [r["tokens"] for r in result.records()][:2] == [6, 1]  # an empty line is <s> </s>


def test_perplexity_including_and_excluding_oovs(run: rnnkit.api.LoadedRun) -> None:
    r = score_lines(run.model, run.vocab, LINES)
    logp, oov = r.scores.token_log10, r.scores.oov
    assert r.perplexity == pytest.approx(10 ** (-logp.sum() / len(logp)))
    assert r.perplexity_excl_oov == pytest.approx(10 ** (-logp[~oov].sum() / (~oov).sum()))


def test_token_scorer_for_rescoring(run: rnnkit.api.LoadedRun) -> None:
    scorer = token_scorer(run.model, run.vocab)
    arrays = scorer(LINES)
    sums = score_lines(run.model, run.vocab, LINES).sentence_log10()
    assert [len(a) for a in arrays] == [len(s.split()) + 1 for s in LINES]
    np.testing.assert_allclose([a.sum() for a in arrays], sums, atol=1e-9)
