"""A back-off n-gram model held in sorted NumPy arrays, and scoring with it.

Storage (one table per order ``k = 1..N``): an n-gram ``w_1 .. w_k`` has an id, its index in
the order-``k`` table. Its key is ``id(w_1 .. w_{k-1}) * V + w_k`` (the id of its prefix at
order ``k - 1`` times the vocabulary size, plus the id of its last word); for unigrams the key is
the word id itself. Keys are sorted, so lookups are :func:`numpy.searchsorted`, and every prefix
of a stored n-gram is stored too (an ARPA file that lacks one gets a *blank* entry, with a NaN
probability, that only serves as a prefix).

Probabilities follow the ARPA back-off rule, as KenLM computes them::

    log10 p(w | h) = log10 p*(h w)                     if h w is stored (and not blank)
                   = log10 b(h) + log10 p(w | h[1:])    otherwise (b(h) = 1 when h is not stored)

Scores follow KenLM's convention: each sentence is ``<s> w_1 .. w_n </s>``; ``<s>`` is context
only, ``w_1 .. w_n`` and ``</s>`` are predicted. A word outside the vocabulary is scored as
``<unk>`` and counted as an OOV, as is a literal ``<unk>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnkit.ngram.corpus import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    UNK,
    UNK_ID,
    EncodedText,
    encode_sentences,
    frame,
)


@dataclass(frozen=True)
class SentenceScores:
    """Scores of a list of sentences (``</s>`` included as the last token of each).

    ``token_log10``: float64, the log10 probability of every predicted token, sentence after
    sentence; ``offsets``: int64 of length ``num_sentences + 1``, sentence ``s`` owns
    ``token_log10[offsets[s]:offsets[s+1]]``; ``oov``: bool, per token, True where the word is
    not in the vocabulary (scored as ``<unk>``).
    """

    token_log10: np.ndarray
    offsets: np.ndarray
    oov: np.ndarray

    @property
    def num_sentences(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def num_tokens(self) -> int:
        """Predicted tokens, ``</s>`` included."""
        return int(self.token_log10.shape[0])

    @property
    def num_oov(self) -> int:
        return int(self.oov.sum())

    @property
    def total_log10(self) -> float:
        return float(self.token_log10.sum())

    def sentence_log10(self) -> np.ndarray:
        """log10 probability of each sentence (float64), ``</s>`` included."""
        sums = np.zeros(self.num_sentences, dtype=np.float64)
        lengths = np.diff(self.offsets)
        nonempty = lengths > 0
        if self.num_tokens:
            sums[nonempty] = np.add.reduceat(self.token_log10, self.offsets[:-1][nonempty])
        return sums

    def per_sentence(self) -> list[np.ndarray]:
        """Per-token log10 probabilities, one array per sentence (views)."""
        return [
            self.token_log10[self.offsets[s] : self.offsets[s + 1]]
            for s in range(self.num_sentences)
        ]

    def perplexity(self, include_oov: bool = True) -> float:
        """``10 ** (-sum log10 p / tokens)``; without OOVs, their tokens and scores are left out."""
        if include_oov:
            total, n = self.total_log10, self.num_tokens
        else:
            keep = ~self.oov
            total, n = float(self.token_log10[keep].sum()), int(keep.sum())
        return math.inf if n == 0 else float(10.0 ** (-total / n))


class NgramModel:
    """A back-off n-gram language model (see the module docstring for the storage).

    Build one with :func:`rnnkit.ngram.train_kneser_ney` or :func:`rnnkit.ngram.read_arpa`.
    ``log10_prob[k-1]`` and ``log10_backoff[k-1]`` are float32 arrays aligned with
    ``keys[k-1]`` (uint64, sorted); the highest order's back-offs are zero.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        keys: list[np.ndarray],
        log10_prob: list[np.ndarray],
        log10_backoff: list[np.ndarray],
    ) -> None:
        self.vocab: list[str] = list(vocab)
        self.word_to_id: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        if [self.word_to_id.get(w) for w in (UNK, BOS, EOS)] != [UNK_ID, BOS_ID, EOS_ID]:
            raise ValueError("the vocabulary must start with <unk>, <s>, </s>")
        self.keys = keys
        self.log10_prob = log10_prob
        self.log10_backoff = log10_backoff

    @property
    def order(self) -> int:
        return len(self.keys)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def counts(self) -> list[int]:
        """Number of (non-blank) n-grams of each order."""
        return [int(np.count_nonzero(~np.isnan(p))) for p in self.log10_prob]

    def __repr__(self) -> str:
        return f"NgramModel(order={self.order}, counts={self.counts()})"

    # ----------------------------------------------------------------------------- scoring
    def score_sentences(self, sentences: Iterable[str | Sequence[str]]) -> SentenceScores:
        """Score sentences (strings split on whitespace, or token lists), vectorised."""
        return self.score_encoded(encode_sentences(sentences, self.word_to_id))

    def score_encoded(self, enc: EncodedText) -> SentenceScores:
        seq, pos = frame(enc)
        logp = self._score_framed(seq, pos)
        predicted = pos > 0
        token_log10 = logp[predicted]
        words = seq[predicted]
        offsets = np.zeros(enc.num_sentences + 1, dtype=np.int64)
        np.cumsum(enc.lengths + 1, out=offsets[1:])
        return SentenceScores(token_log10, offsets, words == UNK_ID)

    def score(self, sentence: str | Sequence[str]) -> float:
        """log10 probability of one sentence, ``</s>`` included (KenLM's ``score``)."""
        return float(self.score_sentences([sentence]).sentence_log10()[0])

    def _lookup(self, k: int, prefix_ids: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Ids at order ``k`` (>= 2) of n-grams given by prefix id and last word; -1 if absent."""
        table = self.keys[k - 1]
        key = prefix_ids.astype(np.uint64) * np.uint64(self.vocab_size) + words.astype(np.uint64)
        idx = np.searchsorted(table, key)
        idx[idx == table.shape[0]] = 0
        if table.shape[0] == 0:
            return np.full(key.shape[0], -1, dtype=np.int64)
        return np.where(table[idx] == key, idx, -1).astype(np.int64)

    def _score_framed(self, seq: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """log10 p of every entry of a framed stream given its left context (float64).

        ``ids[k-1][i]`` is the id of the order-``k`` n-gram ending at ``i`` (or -1): found by
        looking up its prefix, the order-``k-1`` n-gram ending at ``i - 1``.
        """
        n = seq.shape[0]
        order = self.order
        ids: list[np.ndarray] = [seq.astype(np.int64)]
        for k in range(2, order + 1):
            prev = ids[-1]
            cur = np.full(n, -1, dtype=np.int64)
            cand = np.flatnonzero(pos[1:] >= k - 1) + 1
            cand = cand[prev[cand - 1] >= 0]
            if cand.size:
                cur[cand] = self._lookup(k, prev[cand - 1], seq[cand])
            ids.append(cur)

        # Longest stored (non-blank) n-gram ending at each position.
        best = np.zeros(n, dtype=np.float64)
        best_order = np.zeros(n, dtype=np.int64)
        for k in range(1, order + 1):
            g = ids[k - 1]
            has = g >= 0
            p = np.full(n, np.nan, dtype=np.float64)
            p[has] = self.log10_prob[k - 1][g[has]]
            ok = ~np.isnan(p)
            best[ok] = p[ok]
            best_order[ok] = k

        # Back-offs of the contexts longer than (or as long as) the n-gram found.
        total = best
        for j in range(1, order):
            ctx = np.full(n, -1, dtype=np.int64)
            ctx[1:] = ids[j - 1][:-1]
            use = (ctx >= 0) & (best_order <= j) & (pos >= j)
            total[use] += self.log10_backoff[j - 1][ctx[use]]
        return total

    # -------------------------------------------------------------------- token by token
    def begin_state(self) -> tuple[int, ...]:
        """The state at the start of a sentence: the context ``<s>`` (word ids, oldest first)."""
        return (BOS_ID,)

    def score_word(self, state: tuple[int, ...], word: str) -> tuple[float, tuple[int, ...]]:
        """log10 p(word | state) and the next state, one token at a time (KenLM's BaseScore).

        ``state`` is a tuple of word ids, oldest first, from :meth:`begin_state` or a previous
        call. Use ``"</s>"`` as the last word of a sentence.
        """
        w = self.word_to_id.get(word, UNK_ID)
        ctx = state[-(self.order - 1) :] if self.order > 1 else ()
        # ids of the n-grams ctx[i:] (contexts, longest last) and ctx[i:] + w.
        log10 = math.nan
        found_len = 0
        for length in range(0, len(ctx) + 1):
            gram = (*ctx[len(ctx) - length :], w)
            gid = self._find(gram)
            if gid < 0:
                continue
            p = float(self.log10_prob[len(gram) - 1][gid])
            if not math.isnan(p):
                log10, found_len = p, length
        for length in range(found_len + 1, len(ctx) + 1):
            cid = self._find(ctx[len(ctx) - length :])
            if cid >= 0:
                log10 += float(self.log10_backoff[length - 1][cid])
        new_state = (*ctx, w)[-(self.order - 1) :] if self.order > 1 else ()
        return log10, new_state

    def _find(self, gram: Sequence[int]) -> int:
        """Id of an n-gram given as word ids, or -1 (searching prefix by prefix)."""
        gid = int(gram[0])
        for k in range(2, len(gram) + 1):
            table = self.keys[k - 1]
            key = np.uint64(gid) * np.uint64(self.vocab_size) + np.uint64(gram[k - 1])
            idx = int(np.searchsorted(table, key))
            if idx == table.shape[0] or table[idx] != key:
                return -1
            gid = idx
        return gid
