"""Sentence mode: sentence arrays, padded batches, bucketed training windows."""

from __future__ import annotations

import numpy as np

from rnnkit.text.sentences import PAD, SentenceBatches, Sentences, padded

EOS, BOS = 1, 2
STREAM = np.array([5, 6, 7, EOS, 8, EOS, EOS, 9, 10, EOS, 11], dtype=np.int32)


def test_from_stream_cuts_at_end_markers() -> None:
    s = Sentences.from_stream(STREAM, EOS)
    assert [s.sentence(i).tolist() for i in range(len(s))] == [[5, 6, 7], [8], [9, 10], [11]]
    kept = Sentences.from_stream(STREAM, EOS, keep_empty=True)
    assert kept.lengths.tolist() == [3, 1, 0, 2, 1]
    assert kept.num_predictions == 7 + 5  # the words and one </s> each


def test_padded_inputs_and_targets() -> None:
    s = Sentences.from_stream(STREAM, EOS)
    x, y = padded(s, np.array([1, 0]), BOS, EOS)
    assert x.tolist() == [[BOS, 8, EOS, EOS], [BOS, 5, 6, 7]]
    assert y.tolist() == [[8, EOS, PAD, PAD], [5, 6, 7, EOS]]


def test_every_target_is_trained_once_per_epoch_and_resume_sees_the_same_windows() -> None:
    rng = np.random.default_rng(0)
    lines = [[*rng.integers(3, 20, rng.integers(0, 30)).tolist(), EOS] for _ in range(57)]
    stream = np.array([t for line in lines for t in line], dtype=np.int32)
    sents = Sentences.from_stream(stream, EOS)
    for bptt in (4, 64):
        batches = SentenceBatches(sents, BOS, EOS, batch_size=8, bptt=bptt, seed=1)
        for epoch in (0, 1):
            seen: list[int] = []
            starts = 0
            for i in range(batches.num_windows):
                x, y, reset = batches.window(epoch, i)
                assert x.shape == y.shape and x.shape[1] <= bptt
                starts += reset
                seen += y[y != PAD].tolist()
            assert starts == len(batches.buckets)
            assert len(seen) == sents.num_predictions
            assert sorted(seen) == sorted(sents.ids.tolist() + [EOS] * len(sents))
        again = SentenceBatches(sents, BOS, EOS, batch_size=8, bptt=bptt, seed=1)
        a, b = batches.window(1, 3), again.window(1, 3)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
