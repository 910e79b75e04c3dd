"""Sentence mode: each line an independent sentence, ``<s> w_1 .. w_n </s>``.

A set of sentences is one flat int32 array of word ids and an offsets array (sentence ``s``
owns ``ids[offsets[s]:offsets[s+1]]``): no Python list per sentence. For a model, sentence
``s`` is read as inputs ``<s> w_1 .. w_n`` and predicts ``w_1 .. w_n </s>`` (KenLM's
convention: ``</s>`` is predicted, ``<s>`` is context only), so it has n + 1 predictions.

Training batches (:class:`SentenceBatches`) are buckets of sentences of similar length,
padded at the end; padded targets are :data:`PAD` (the ``ignore_index`` of the loss), so
padding is never counted. A bucket longer than ``bptt`` is read in windows of ``bptt`` steps
with the state carried between them (truncated BPTT within the sentence); the state is reset
to zero at the start of every bucket. Each line is independent.

::

    sentences   "a b c" "d" "e f"            B = 2, bptt = 3, sorted by length
    bucket 0    inputs  <s> d   ~   ~        targets  d  </s> PAD PAD
                        <s> e   f   ~                 e  f    </s> PAD
    bucket 1    inputs  <s> a   b   c        targets  a  b    c   </s>
      window 0  [<s> a b]  -> [a b c]       (state reset first)
      window 1  [c]        -> [</s>]        (state carried)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rnnkit.text.vocab import Vocab

#: The target id of padding: never a token, skipped by the loss (torch's ignore_index).
PAD = -100


@dataclass
class Sentences:
    """Word ids of many sentences: flat ``ids`` (int32), ``offsets`` (int64, S + 1)."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def lengths(self) -> np.ndarray:
        """Words per sentence (markers not counted)."""
        return np.diff(self.offsets)

    @property
    def num_predictions(self) -> int:
        """Predicted tokens: the words and one ``</s>`` per sentence."""
        return int(self.ids.shape[0] + len(self))

    def sentence(self, s: int) -> np.ndarray:
        return self.ids[self.offsets[s] : self.offsets[s + 1]]

    @classmethod
    def from_stream(cls, ids: np.ndarray, eos_id: int, keep_empty: bool = False) -> Sentences:
        """Cut a stream with ``</s>`` after each line (as :func:`encode_file` makes it).

        Words after the last ``</s>`` form a last sentence; empty sentences are dropped unless
        ``keep_empty``.
        """
        ends = np.flatnonzero(ids == eos_id)
        if len(ids) and (len(ends) == 0 or ends[-1] != len(ids) - 1):
            ends = np.append(ends, len(ids))
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        if not keep_empty:
            nonempty = ends > starts
            starts, ends = starts[nonempty], ends[nonempty]
        lengths = (ends - starts).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if len(lengths) == 0:
            return cls(np.zeros(0, dtype=np.int32), offsets)
        keep = np.zeros(len(ids) + 1, dtype=np.int64)
        np.add.at(keep, starts, 1)
        np.add.at(keep, ends, -1)
        mask = np.cumsum(keep)[: len(ids)] > 0
        return cls(np.ascontiguousarray(ids[mask], dtype=np.int32), offsets)


@dataclass
class EncodedLines:
    """Lines encoded for scoring: their ``Sentences``, tokens and per-word OOV flags."""

    texts: list[str]
    sentences: Sentences
    tokens: list[list[str]]  # the words of each line as the tokeniser cut them
    oov: np.ndarray  # bool, aligned with sentences.ids: the word is not in the vocabulary


def encode_lines(lines: Iterable[str], vocab: Vocab) -> EncodedLines:
    """Tokenise and encode each line as one sentence (an empty line is an empty sentence).

    A word is an OOV when it is not in the vocabulary, or is ``<unk>`` itself (KenLM's
    convention); it is scored as ``<unk>``.
    """
    texts: list[str] = []
    tokens: list[list[str]] = []
    for line in lines:
        text = line.rstrip("\r\n")
        texts.append(text)
        tokens.append(vocab.tokenize(text))
    index, unk = vocab.index, vocab.unk_id
    flat = [w for words in tokens for w in words]
    ids = np.fromiter((index.get(w, unk) for w in flat), dtype=np.int32, count=len(flat))
    lengths = np.fromiter((len(w) for w in tokens), dtype=np.int64, count=len(tokens))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    oov = ids == unk
    return EncodedLines(texts, Sentences(ids, offsets), tokens, oov)


def padded(
    sents: Sentences, order: np.ndarray, bos_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``<s> w..`` and targets ``w.. </s>`` of sentences ``order``, (B, L) int64.

    Inputs are padded with ``eos_id`` (any real id: padded positions are never scored) and
    targets with :data:`PAD`; L is the longest sentence's length + 1.
    """
    lengths = sents.lengths[order]
    B, L = len(order), int(lengths.max(initial=0)) + 1
    x = np.full((B, L), eos_id, dtype=np.int64)
    y = np.full((B, L), PAD, dtype=np.int64)
    x[:, 0] = bos_id
    cols = np.arange(L)
    inside = cols[None, :] < lengths[:, None]  # (B, L): the word positions of the targets
    words = sents.ids[(sents.offsets[order][:, None] + cols[None, :])[inside]]
    y[inside] = words
    x[:, 1:][inside[:, :-1]] = words  # the same words, one step later, as inputs
    y[np.arange(B), lengths] = eos_id
    return x, y


class SentenceBatches:
    """Padded, length-bucketed training batches of sentences (see the module docstring).

    Buckets are fixed (sentences sorted by length, ties in a seeded random order, cut into
    groups of ``batch_size``); each epoch visits them in a new order drawn from ``seed`` and
    the epoch number, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(
        self, sents: Sentences, bos_id: int, eos_id: int, batch_size: int, bptt: int, seed: int
    ) -> None:
        self.sents, self.bos_id, self.eos_id = sents, bos_id, eos_id
        self.bptt, self.seed = bptt, seed
        tie = np.random.default_rng(seed).permutation(len(sents))
        by_length = tie[np.argsort(sents.lengths[tie], kind="stable")]
        self.buckets = [by_length[i : i + batch_size] for i in range(0, len(sents), batch_size)]
        steps = [int(sents.lengths[b].max()) + 1 for b in self.buckets]
        self.chunks = np.array([(n + bptt - 1) // bptt for n in steps], dtype=np.int64)
        self.num_windows = int(self.chunks.sum())
        self._epoch = -1
        self._starts = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _plan(self, epoch: int) -> None:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(len(self.buckets))
            self._starts = np.concatenate([[0], np.cumsum(self.chunks[self._order])])
            self._epoch = epoch

    def window(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Inputs and targets (B, T <= bptt) of window ``index`` of ``epoch``, and whether
        it starts a bucket (the state must be reset first)."""
        self._plan(epoch)
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        bucket = int(self._order[k])
        if self._cache is None or self._cache[0] != bucket:
            x, y = padded(self.sents, self.buckets[bucket], self.bos_id, self.eos_id)
            self._cache = (bucket, x, y)
        _, x, y = self._cache
        chunk = index - int(self._starts[k])
        cut = slice(chunk * self.bptt, (chunk + 1) * self.bptt)
        return x[:, cut], y[:, cut], chunk == 0


__all__ = ["PAD", "EncodedLines", "SentenceBatches", "Sentences", "encode_lines", "padded"]
