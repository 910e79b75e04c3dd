"""Kneser-Ney estimation: distributions sum to one, counts and discounts follow lmplz."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ngram_helpers import FALLBACK, TINY

from rnnkit.errors import ConfigError, DataError
from rnnkit.ngram import NgramModel, train_kneser_ney, train_kneser_ney_verbose
from rnnkit.ngram.corpus import BOS_ID
from rnnkit.ngram.kneser_ney import discounts_from


def _contexts(model: NgramModel) -> list[tuple[int, ...]]:
    """Every stored n-gram below the highest order (each may be a context), plus ()."""
    out: list[tuple[int, ...]] = [()]
    v = model.vocab_size
    grams: list[list[tuple[int, ...]]] = [[(w,) for w in range(v)]]
    for k in range(2, model.order):
        keys = model.keys[k - 1]
        prev = grams[-1]
        grams.append([(*prev[int(key) // v], int(key) % v) for key in keys])
    for level in grams[: model.order - 1]:
        out.extend(level)
    return out


def _assert_sums_to_one(model: NgramModel, extra_contexts: int = 0) -> None:
    words = [w for i, w in enumerate(model.vocab) if i != BOS_ID]
    contexts = _contexts(model)
    rng = np.random.default_rng(0)
    for _ in range(extra_contexts):  # contexts the model never saw back off all the way
        n = int(rng.integers(1, model.order)) if model.order > 1 else 0
        contexts.append(tuple(int(x) for x in rng.integers(0, model.vocab_size, n)))
    for ctx in contexts:
        if any(w == BOS_ID for w in ctx[1:]):
            continue  # <s> only ever starts a context
        total = sum(10.0 ** model.score_word(ctx, w)[0] for w in words)
        assert total == pytest.approx(1.0, abs=1e-5), (ctx, total)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one_in_every_context(order: int) -> None:
    model = train_kneser_ney(TINY, order, discount_fallback=FALLBACK)
    _assert_sums_to_one(model, extra_contexts=10)


sentences = st.lists(
    st.lists(st.sampled_from(["a", "b", "c", "d", "<unk>"]), min_size=0, max_size=8).map(" ".join),
    min_size=1,
    max_size=12,
).filter(lambda ss: any(s.strip() for s in ss))


@settings(max_examples=25, deadline=None)
@given(sentences, st.integers(min_value=1, max_value=4))
def test_sums_to_one_for_any_corpus(corpus: list[str], order: int) -> None:
    model = train_kneser_ney(corpus, order, discount_fallback=FALLBACK)
    _assert_sums_to_one(model)


@settings(max_examples=25, deadline=None)
@given(sentences, st.integers(min_value=1, max_value=4), sentences)
def test_token_by_token_equals_one_shot(corpus: list[str], order: int, test: list[str]) -> None:
    model = train_kneser_ney(corpus, order, discount_fallback=FALLBACK)
    scores = model.score_sentences(test)
    per = scores.per_sentence()
    for s, sentence in enumerate(test):
        state = model.begin_state()
        stepwise = []
        for w in [*sentence.split(), "</s>"]:
            lp, state = model.score_word(state, w)
            stepwise.append(lp)
        np.testing.assert_allclose(per[s], stepwise, atol=1e-6)
    # per-token scores sum to the sentence scores
    np.testing.assert_allclose([p.sum() for p in per], scores.sentence_log10(), atol=1e-9)


def test_counts_follow_lmplz() -> None:
    # "<s> a b </s>" and "<s> b </s>": lmplz keeps raw counts for the highest order and for
    # n-grams that start with <s>; the rest get continuation counts.
    model, info = train_kneser_ney_verbose(["a b", "b"], 2, discount_fallback=FALLBACK)
    assert model.vocab == ["<unk>", "<s>", "</s>", "a", "b"]
    # bigrams: <s> a, a b, b </s> (twice), <s> b
    assert info.counts == [5, 4]
    # unigram adjusted counts: a: {<s>} -> 1, b: {a, <s>} -> 2, </s>: {b} -> 1, <s>, <unk>: 0
    assert info.counts_of_counts[0] == [2, 1, 0, 0]
    assert info.counts_of_counts[1] == [3, 1, 0, 0]  # raw counts: b </s> twice


def test_discounts_match_chen_goodman() -> None:
    n = [100, 40, 20, 10]
    y = 100 / (100 + 80)
    expected = (1 - 2 * y * 40 / 100, 2 - 3 * y * 20 / 40, 3 - 4 * y * 10 / 20)
    assert discounts_from(n) == pytest.approx(expected)
    assert discounts_from([10, 0, 1, 1]) is None  # lmplz refuses: no count-2 n-grams


def test_unk_in_training_text_is_the_unknown_word() -> None:
    model = train_kneser_ney(TINY, 3, discount_fallback=FALLBACK)
    assert model.vocab[0] == "<unk>" and model.vocab.count("<unk>") == 1
    # an unseen word scores exactly as <unk> in the same context, and counts as an OOV
    a = model.score_sentences(["the zebra sat"])
    b = model.score_sentences(["the <unk> sat"])
    np.testing.assert_allclose(a.token_log10, b.token_log10)
    assert a.num_oov == 1 and b.num_oov == 1
    # the trained <unk> has real context: p(<unk> | the) differs from its unigram probability
    lp_ctx = model.score_word((model.word_to_id["the"],), "<unk>")[0]
    lp_uni = model.score_word((), "<unk>")[0]
    assert lp_ctx != pytest.approx(lp_uni)


def test_unk_absent_gets_the_uniform_share() -> None:
    model = train_kneser_ney(["a b", "b a", "a a b"], 1, discount_fallback=FALLBACK)
    # p(<unk>) = gamma / (|V| - 1): the only mass <unk> gets
    p_unk = 10 ** model.score_word((), "<unk>")[0]
    # gamma = (D1 n1 + D2 n2 + D3 n3+) / total = 1.5 * 3 / 10 (a: 4, b: 3, </s>: 3 are all 3+)
    assert p_unk == pytest.approx(1.5 * 3 / 10 / 4, rel=1e-6)
    assert model.log10_prob[0][BOS_ID] == 0.0  # p(<s>) written as 1, as lmplz does


def test_bad_orders_and_empty_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="order"):
        train_kneser_ney(TINY, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no words"):
        train_kneser_ney(empty, 3)
    marked = tmp_path / "marked.txt"
    marked.write_text("a b\nc </s> d\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"marked.txt:2: .*</s>"):
        train_kneser_ney(marked, 2, discount_fallback=FALLBACK)
    with pytest.raises(DataError, match="discount"):
        train_kneser_ney(TINY, 3)


def test_perplexity_conventions() -> None:
    model = train_kneser_ney(TINY, 3, discount_fallback=FALLBACK)
    s = model.score_sentences(["the cat sat", "a zebra sat on the mat", ""])
    assert s.num_tokens == 3 + 1 + 6 + 1 + 0 + 1
    assert s.num_oov == 1
    assert s.perplexity() == pytest.approx(10 ** (-s.total_log10 / s.num_tokens))
    keep = ~s.oov
    assert s.perplexity(include_oov=False) == pytest.approx(
        10 ** (-s.token_log10[keep].sum() / keep.sum())
    )
    assert math.isfinite(s.perplexity())
