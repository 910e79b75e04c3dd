"""Counting n-grams and interpolated modified Kneser-Ney estimation, as KenLM's ``lmplz`` does.

The steps and their conventions (Chen and Goodman 1998; Heafield et al. 2013):

1. **Counting.** Every sentence is ``<s> w_1 .. w_n </s>``. The n-grams of order ``k`` are the
   windows of ``k`` tokens that end at a predicted token (``w_i`` or ``</s>``) and do not reach
   before ``<s>``. ``<s>`` itself is never counted as a unigram.
2. **Adjusted counts** ``a``: the highest order keeps raw counts; so does every n-gram that
   starts with ``<s>`` (it cannot be extended to the left). Any other lower-order n-gram gets
   its continuation count, the number of distinct words seen to its left (``<s>`` included).
   ``a(<s>) = 0``, and ``<unk>`` is always in the vocabulary (count 0 when the text has none).
3. **Discounts**, three per order from the counts of counts ``n_1 .. n_4`` of the adjusted
   counts: ``Y = n_1 / (n_1 + 2 n_2)``, ``D_j = j - (j + 1) Y n_{j+1} / n_j`` for j = 1, 2, 3+.
4. **Initial probabilities** per context ``h``: ``u(w | h) = (a(h w) - D(a(h w))) / sum_x a(h x)``
   and ``gamma(h) = (D_1 N_1(h) + D_2 N_2(h) + D_3 N_3+(h)) / sum_x a(h x)``.
5. **Interpolation**: ``p(w | h) = u(w | h) + gamma(h) p(w | h[1:])``, down to the unigrams,
   which are interpolated with the uniform distribution over the vocabulary without ``<s>``
   (``<unk>`` included): ``p(w) = u(w) + gamma() / (|V| - 1)``. ``p(<s>)`` is written as 1
   (log10 0), as ``lmplz`` does; it is never predicted.
6. The back-off weight of a context ``h`` is ``gamma(h)``; n-grams that are no context get 1.

A ``<unk>`` present in the training text is counted like a word (and is a context like any
other word), which is what ``lmplz`` computes when ``<unk>`` is renamed to a plain word.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rnnkit.errors import ConfigError, DataError
from rnnkit.ngram.corpus import (
    BOS_ID,
    EncodedText,
    frame,
    new_vocab,
    read_training_text,
)
from rnnkit.ngram.model import NgramModel

#: lmplz's --discount_fallback default.
DEFAULT_FALLBACK = (0.5, 1.0, 1.5)


@dataclass
class OrderCounts:
    """The n-grams of one order: sorted keys (see :mod:`rnnkit.ngram.model`) and their counts.

    ``suffix`` is the id of each n-gram's suffix (its last ``k - 1`` words) at order ``k - 1``
    (empty for unigrams); ``bos_initial`` marks n-grams that start with ``<s>``.
    """

    keys: np.ndarray
    raw: np.ndarray
    suffix: np.ndarray
    bos_initial: np.ndarray
    adjusted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


@dataclass(frozen=True)
class Estimate:
    """What estimation found besides the model: counts per order, counts of counts, discounts."""

    counts: list[int]
    counts_of_counts: list[list[int]]
    discounts: list[tuple[float, float, float]]
    fallback_orders: list[int]
    num_sentences: int
    num_words: int


def _unique_inverse(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True, return_counts=True)`` with int32 outputs and less
    memory (``key`` is consumed: the caller must not use it afterwards)."""
    n = key.shape[0]
    order = np.argsort(key)
    key = key[order]
    new = np.empty(n, dtype=bool)
    if n:
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
    uniq = key[new]
    del key
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n)).astype(np.int32)
    group = np.cumsum(new, dtype=np.int32)
    group -= 1
    del new
    inverse = np.empty(n, dtype=np.int32)
    inverse[order] = group
    return uniq, inverse, counts


def count_ngrams(
    seq: np.ndarray, pos: np.ndarray, order: int, vocab_size: int
) -> list[OrderCounts]:
    """Count n-grams of orders 1..``order`` in a framed id stream (see :func:`frame`).

    Returns one :class:`OrderCounts` per order with raw counts; adjusted counts are filled in by
    :func:`adjust_counts`.
    """
    v = np.uint64(vocab_size)
    levels: list[OrderCounts] = []
    raw1 = np.bincount(seq[pos >= 1], minlength=vocab_size).astype(np.int32)
    bos1 = np.zeros(vocab_size, dtype=bool)
    bos1[BOS_ID] = True
    levels.append(
        OrderCounts(np.arange(vocab_size, dtype=np.uint64), raw1, np.zeros(0, np.int32), bos1)
    )
    # id of the (k-1)-gram ending at each position (-1 where none)
    prev_ids: np.ndarray = seq.astype(np.int32)
    for k in range(2, order + 1):
        where = np.flatnonzero(pos >= k - 1)
        key = prev_ids[where - 1].astype(np.uint64)
        key *= v
        key += seq[where].astype(np.uint64)
        keys, inverse, raw = _unique_inverse(key)
        del key
        suffix = np.empty(keys.shape[0], dtype=np.int32)
        suffix[inverse] = prev_ids[where]
        bos = np.zeros(keys.shape[0], dtype=bool)
        bos[inverse[pos[where] == k - 1]] = True
        levels.append(OrderCounts(keys, raw, suffix, bos))
        if k < order:
            ids = np.full(seq.shape[0], -1, dtype=np.int32)
            ids[where] = inverse
            prev_ids = ids
        del where, inverse
    return levels


def adjust_counts(levels: list[OrderCounts]) -> None:
    """Fill in adjusted counts (continuation counts below the highest order; see step 2)."""
    order = len(levels)
    for k in range(1, order + 1):
        lev = levels[k - 1]
        if k == order:
            adj = lev.raw.copy()
        else:
            adj = np.bincount(levels[k].suffix, minlength=lev.raw.shape[0]).astype(np.int32)
            adj[lev.bos_initial] = lev.raw[lev.bos_initial]
        if k == 1:
            adj[BOS_ID] = 0
        lev.adjusted = adj
    for lev in levels:  # raw counts are no longer needed
        lev.raw = np.zeros(0, np.int32)
        lev.bos_initial = np.zeros(0, bool)


def counts_of_counts(adjusted: np.ndarray) -> list[int]:
    """``[n_1, n_2, n_3, n_4]``: how many n-grams have adjusted count 1, 2, 3, 4."""
    small = adjusted[(adjusted >= 1) & (adjusted <= 4)]
    return [int(x) for x in np.bincount(small, minlength=5)[1:5]]


def discounts_from(n: Sequence[int]) -> tuple[float, float, float] | None:
    """Chen and Goodman's equation (26); None where ``lmplz`` would fail (missing counts or a
    discount out of range)."""
    n1, n2, n3, n4 = (float(x) for x in n)
    if n1 == 0 or n2 == 0 or n3 == 0:
        return None
    y = n1 / (n1 + 2.0 * n2)
    d = (1.0 - 2.0 * y * n2 / n1, 2.0 - 3.0 * y * n3 / n2, 3.0 - 4.0 * y * n4 / n3)
    if any(not (0.0 <= dj <= j + 1) for j, dj in enumerate(d)):
        return None
    return d


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ConfigError(f"--order must be an integer of at least 1, got {order!r}.")


def estimate_from_encoded(
    vocab: dict[str, int] | Sequence[str],
    enc: EncodedText,
    order: int,
    *,
    discount_fallback: Sequence[float] | None = None,
    source: str = "the training text",
) -> tuple[NgramModel, Estimate]:
    """Estimate an interpolated modified Kneser-Ney model from encoded sentences.

    ``discount_fallback`` (three discounts, as ``lmplz --discount_fallback``) replaces the
    discounts of an order whose counts of counts cannot give them (small or artificial data);
    without it that is a :class:`DataError`.
    """
    _check_order(order)
    words = list(vocab) if not isinstance(vocab, dict) else sorted(vocab, key=vocab.__getitem__)
    vsize = len(words)
    seq, pos = frame(enc)
    levels = count_ngrams(seq, pos, order, vsize)
    del seq, pos
    adjust_counts(levels)

    discounts: list[np.ndarray] = []
    coc: list[list[int]] = []
    used: list[tuple[float, float, float]] = []
    fallback_orders: list[int] = []
    for k, lev in enumerate(levels, start=1):
        n = counts_of_counts(lev.adjusted)
        coc.append(n)
        d = discounts_from(n)
        if d is None:
            if discount_fallback is None:
                raise DataError(
                    f"{source}: cannot estimate Kneser-Ney discounts for {k}-grams from the "
                    f"counts of counts {n} (too little or artificial data); pass "
                    f"--discount-fallback (lmplz's default 0.5 1 1.5) or use more text."
                )
            d = (
                float(discount_fallback[0]),
                float(discount_fallback[1]),
                float(discount_fallback[2]),
            )
            fallback_orders.append(k)
        used.append(d)
        discounts.append(np.array([0.0, *d], dtype=np.float64))

    log_probs: list[np.ndarray] = []
    backoffs: list[np.ndarray] = []
    prev_p = np.zeros(0)
    for k, lev in enumerate(levels, start=1):
        adj = lev.adjusted
        disc = discounts[k - 1][np.minimum(adj, 3)]
        if k == 1:
            denom = float(adj.sum())
            uninterp = (adj - disc) / denom
            gamma0 = float(disc.sum()) / denom
            p = uninterp + gamma0 / (vsize - 1)
            p[BOS_ID] = 1.0
        else:
            prefix = (lev.keys // np.uint64(vsize)).astype(np.int64)
            n_ctx = levels[k - 2].keys.shape[0]
            denom_ctx = np.bincount(prefix, weights=adj, minlength=n_ctx)
            gnum = np.bincount(prefix, weights=disc, minlength=n_ctx)
            gamma = np.zeros(n_ctx)
            is_ctx = denom_ctx > 0
            gamma[is_ctx] = gnum[is_ctx] / denom_ctx[is_ctx]
            del gnum
            # the back-off weight of each (k-1)-gram is its gamma as a context (1 if none)
            bo = np.zeros(n_ctx, dtype=np.float32)
            # a context whose discounts are all zero (possible: lmplz accepts D = 0) backs off
            # with weight 0, log10 -inf, as its unseen words get probability 0
            with np.errstate(divide="ignore"):
                bo[is_ctx] = np.log10(gamma[is_ctx])
            backoffs.append(bo)
            p = (adj - disc) / denom_ctx[prefix]
            del denom_ctx
            p += gamma[prefix] * prev_p[lev.suffix]
            del prefix, gamma, is_ctx
        del disc
        with np.errstate(divide="ignore"):
            log_probs.append(np.minimum(0.0, np.log10(p)).astype(np.float32))
        prev_p = p
        lev.suffix = np.zeros(0, np.int32)
    backoffs.append(np.zeros(levels[-1].keys.shape[0], dtype=np.float32))

    model = NgramModel(words, [lev.keys for lev in levels], log_probs, backoffs)
    info = Estimate(
        counts=[int(lev.keys.shape[0]) for lev in levels],
        counts_of_counts=coc,
        discounts=used,
        fallback_orders=fallback_orders,
        num_sentences=enc.num_sentences,
        num_words=enc.num_words,
    )
    return model, info


def train_kneser_ney(
    text: str | os.PathLike[str] | Iterable[str],
    order: int,
    *,
    discount_fallback: Sequence[float] | None = None,
) -> NgramModel:
    """Estimate an interpolated modified Kneser-Ney model of the given order.

    ``text`` is a path to a UTF-8 file with one sentence per line, or an iterable of sentence
    strings. See :func:`train_kneser_ney_verbose` for the counts and discounts as well.
    """
    return train_kneser_ney_verbose(text, order, discount_fallback=discount_fallback)[0]


def train_kneser_ney_verbose(
    text: str | os.PathLike[str] | Iterable[str],
    order: int,
    *,
    discount_fallback: Sequence[float] | None = None,
) -> tuple[NgramModel, Estimate]:
    """:func:`train_kneser_ney`, returning the :class:`Estimate` (counts, discounts) too."""
    _check_order(order)
    if isinstance(text, str | os.PathLike):
        vocab, enc = read_training_text(text)
        source = str(text)
    else:
        vocab, enc = _encode_iterable(text)
        source = "the training sentences"
    return estimate_from_encoded(
        vocab, enc, order, discount_fallback=discount_fallback, source=source
    )


def _encode_iterable(sentences: Iterable[str]) -> tuple[dict[str, int], EncodedText]:
    vocab = new_vocab()
    tokens = [s.split() for s in sentences]
    for w in dict.fromkeys(t for sent in tokens for t in sent):
        if w not in vocab:
            vocab[w] = len(vocab)
    if any(t in ("<s>", "</s>") for sent in tokens for t in sent):
        raise DataError(
            "the training sentences contain a literal <s> or </s>; remove it, "
            "rnnkit adds the sentence markers itself."
        )
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    ids = np.array([vocab[t] for sent in tokens for t in sent], dtype=np.int32)
    if ids.size == 0:
        raise DataError("the training sentences contain no words; give at least one word.")
    return vocab, EncodedText(ids, lengths)
