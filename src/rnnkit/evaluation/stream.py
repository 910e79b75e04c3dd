"""Exact evaluation of a language model over a token stream, hidden state carried."""

from __future__ import annotations

import numpy as np
import torch

from rnnkit.models import RNNLanguageModel, State
from rnnkit.text.batching import batchify, num_windows, tail, window


def to_tensor(ids: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A (view of an) id array as a new int64 tensor on ``device``."""
    return torch.tensor(ids, dtype=torch.long, device=device)


@torch.inference_mode()
def stream_loss(
    model: RNNLanguageModel,
    ids: np.ndarray,
    batch_size: int = 16,
    bptt: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of the stream and the number of predictions.

    Every token but the first is predicted once (N - 1 predictions whatever the batch size);
    the stream is cut into ``batch_size`` rows (see :mod:`rnnkit.text.batching`) and the
    state is carried across windows within each row.
    """
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for part in (batchify(ids, batch_size), tail(ids, batch_size).reshape(1, -1)):
            if part.shape[1] < 2:
                continue
            state: State | None = None
            for i in range(num_windows(part, bptt)):
                x, y = window(part, i, bptt)
                yt = to_tensor(y, device)
                logp, state = model.log_prob(to_tensor(x, device), yt, state)
                total -= float(logp.double().sum())
                count += yt.numel()
        return total, count
    finally:
        model.train(was_training)
