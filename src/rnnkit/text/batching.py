"""Stream batching for truncated BPTT, as in pytorch/examples' word_language_model.

The id stream is cut into ``batch_size`` contiguous columns (here rows, batch first)::

    ids:  a b c d e f g h i j k l m n o p q r s t u v w x      (N = 24, B = 4)

    batchify ->  a b c d e f       each row is a contiguous segment that overlaps the next
                 f g h i j k       row by one token, so every token after the first is
                 k l m n o p       predicted exactly once (N - 1 predictions, whatever B);
                 p q r s t u       "u v w x", left over, is what :func:`tail` returns

    window(0, bptt=3): inputs [[a b c], ...], targets [[b c d], ...]
    window(1, bptt=3): inputs [[d e], ...],   targets [[e f], ...]

The hidden state of row b is carried from window to window and detached (truncated BPTT).
Rows and windows are NumPy views: no copy of the corpus is made.
"""

from __future__ import annotations

import numpy as np


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """A (B, L + 1) read-only view: row b is ids[b L : b L + L + 1], L = (N - 1) // B."""
    length = (len(ids) - 1) // batch_size
    if length < 1:
        return ids[:0].reshape(0, 1)
    (stride,) = ids.strides
    return np.lib.stride_tricks.as_strided(
        ids, shape=(batch_size, length + 1), strides=(length * stride, stride), writeable=False
    )


def tail(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """The tokens :func:`batchify` leaves unpredicted, with one token of context first."""
    length = (len(ids) - 1) // batch_size
    return ids[max(0, length * batch_size) :] if length >= 1 else ids


def num_windows(columns: np.ndarray, bptt: int) -> int:
    """How many windows of at most ``bptt`` steps cover the (B, L) columns."""
    steps = columns.shape[1] - 1  # the last column is only ever a target
    return max(0, (steps + bptt - 1) // bptt)


def window(columns: np.ndarray, index: int, bptt: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of window ``index``: two (B, T) views, T <= bptt."""
    start = index * bptt
    stop = min(start + bptt, columns.shape[1] - 1)
    return columns[:, start:stop], columns[:, start + 1 : stop + 1]
