"""The recurrent core's padded path: each sequence computed exactly as torch's packed
sequences compute it (the reference), for every cell, direction and depth."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.models.core import RecurrentCore


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_padded_path_equals_packed_sequences(cell: str, bidirectional: bool, layers: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 9, 5, dtype=torch.float64)
    lengths = torch.tensor([9, 1, 4, 9, 7, 2])
    core = RecurrentCore(cell, 5, 4, layers, bidirectional).double().eval()
    out, final = core(x, lengths)
    assert core.rnn is not None
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref_packed, state = core.rnn(packed)
    ref, _ = pad_packed_sequence(ref_packed, batch_first=True, total_length=9)
    h = state[0] if isinstance(state, tuple) else state
    dirs = 2 if bidirectional else 1
    ref_final = h[-dirs:].transpose(0, 1).reshape(6, -1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-12)
    # and the gradient flows the same way
    out.sum().backward()
    grads = [p.grad.clone() for p in core.parameters()]  # type: ignore[union-attr]
    core.zero_grad()
    ref.sum().backward()
    for g, p in zip(grads, core.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=1e-10)
