"""Stream batching: every token after the first is predicted exactly once, whatever B."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rnnkit.text.batching import batchify, num_windows, tail, window


@given(st.integers(2, 300), st.integers(1, 12), st.integers(1, 20))
def test_each_token_after_the_first_is_a_target_exactly_once(n: int, batch: int, bptt: int) -> None:
    ids = np.arange(n, dtype=np.int32)
    cols = batchify(ids, batch)
    targets: list[int] = []
    for i in range(num_windows(cols, bptt)):
        x, y = window(cols, i, bptt)
        assert x.shape == y.shape and x.shape[1] <= bptt
        assert np.array_equal(y, x + 1)  # the target is the next token of the stream
        targets.extend(y.ravel().tolist())
    rest = tail(ids, batch)
    targets.extend(rest[1:].tolist())
    assert sorted(targets) == list(range(1, n))


def test_windows_are_views_not_copies() -> None:
    ids = np.arange(100, dtype=np.int32)
    x, _ = window(batchify(ids, 4), 1, 5)
    assert np.shares_memory(x, ids)
