"""The kenlm package (an independent implementation) scores rnnkit's ARPA files as rnnkit does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ngram_helpers import FALLBACK, TINY

from rnnkit.ngram import read_lines, train_kneser_ney, write_arpa

kenlm = pytest.importorskip(
    "kenlm", reason="the kenlm package is not installed (pip install kenlm)"
)

TOL = 1e-4  # kenlm sums a sentence in float32


def _compare(model_path: Path, sentences: list[str]) -> None:
    from rnnkit.ngram import read_arpa

    ours = read_arpa(model_path).score_sentences(sentences)
    theirs = kenlm.Model(str(model_path))
    expected = np.array([theirs.score(s, bos=True, eos=True) for s in sentences])
    np.testing.assert_allclose(ours.sentence_log10(), expected, rtol=0, atol=TOL)
    tokens = np.concatenate([[p for p, _, _ in theirs.full_scores(s)] for s in sentences])
    np.testing.assert_allclose(ours.token_log10, tokens, rtol=0, atol=1e-5)
    oov = np.concatenate([[o for _, _, o in theirs.full_scores(s)] for s in sentences])
    np.testing.assert_array_equal(ours.oov, oov)


# kenlm loads no unigram-only model ("assumes at least a bigram model").
@pytest.mark.parametrize("order", [2, 3, 5])
def test_kenlm_agrees_on_tiny(tmp_path: Path, order: int) -> None:
    model = train_kneser_ney(TINY, order, discount_fallback=FALLBACK)
    path = tmp_path / f"tiny{order}.arpa"
    write_arpa(model, path)
    sentences = [
        *read_lines(TINY),
        "the zebra sat on the mat",
        "mat the on sat cat the",
        "",
        "<unk> <unk> dog",
        "a a a a a a a",
    ]
    _compare(path, sentences)


@pytest.mark.data
def test_kenlm_agrees_on_ptb(ptb: Path, ptb_kn5: Path) -> None:
    _compare(ptb_kn5, read_lines(ptb / "ptb.test.txt"))
