"""Per-word linear interpolation (lambda = the RNN's weight) and tuning lambda."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.errors import ConfigError, DataError
from rnnkit.evaluation.interpolation import (
    interpolate_log10,
    interpolated_scorer,
    perplexity_from_log10,
    tune_lambda,
)

log10s = st.lists(st.floats(min_value=-12, max_value=0), min_size=1, max_size=40)


@given(log10s, st.floats(min_value=0, max_value=1))
def test_interpolation_is_the_mixture(a: list[float], lam: float) -> None:
    b = [x / 2 - 1 for x in a]
    got = interpolate_log10(np.array(a), np.array(b), lam)
    want = np.log10(lam * 10.0 ** np.array(a) + (1 - lam) * 10.0 ** np.array(b))
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_lambda_ends_and_range() -> None:
    a, b = np.array([-1.0, -2.0]), np.array([-3.0, -0.5])
    np.testing.assert_array_equal(interpolate_log10(a, b, 1.0), a)  # all RNN
    np.testing.assert_array_equal(interpolate_log10(a, b, 0.0), b)  # all n-gram
    with pytest.raises(ConfigError, match="between 0 and 1"):
        interpolate_log10(a, b, 1.2)
    with pytest.raises(DataError, match="tokenisation"):
        interpolate_log10(a, np.array([-1.0]), 0.5)


def test_tuned_lambda_minimises_perplexity() -> None:
    rng = np.random.default_rng(0)
    a = np.log10(rng.uniform(1e-4, 1, 500))
    b = np.log10(rng.uniform(1e-4, 1, 500))
    lam, ppl = tune_lambda(a, b)
    grid = np.linspace(0, 1, 1001)
    ppls = [perplexity_from_log10(interpolate_log10(a, b, g)) for g in grid]
    assert ppl <= min(ppls) + 1e-9
    assert lam == pytest.approx(grid[int(np.argmin(ppls))], abs=2e-3)
    assert ppl == pytest.approx(perplexity_from_log10(interpolate_log10(a, b, lam)))


@settings(max_examples=30, deadline=None)
@given(log10s)
def test_tuning_a_model_against_a_worse_one_gives_it_all_the_weight(a: list[float]) -> None:
    x = np.array(a)
    lam, ppl = tune_lambda(x, x - 1.0)  # the "n-gram" is 10x worse on every token
    assert lam == 1.0
    assert ppl == pytest.approx(perplexity_from_log10(x))
    lam, _ = tune_lambda(x - 1.0, x)
    assert lam == 0.0


def test_interpolated_scorer_mixes_token_by_token() -> None:
    def rnn(sentences: list[str]) -> list[np.ndarray]:
        return [np.full(len(s.split()) + 1, -1.0) for s in sentences]

    def ngram(sentences: list[str]) -> list[np.ndarray]:
        return [np.full(len(s.split()) + 1, -2.0) for s in sentences]

    mixed = interpolated_scorer(rnn, ngram, 0.25)(["a b", ""])
    assert [m.shape for m in mixed] == [(3,), (1,)]
    np.testing.assert_allclose(mixed[0], math.log10(0.25 * 0.1 + 0.75 * 0.01))

    def bad(sentences: list[str]) -> list[np.ndarray]:
        return [np.zeros(1) for _ in sentences]

    with pytest.raises(DataError, match="sentence 1"):
        interpolated_scorer(rnn, bad, 0.5)(["a b"])
