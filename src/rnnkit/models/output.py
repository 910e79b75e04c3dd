"""Output layers: from the recurrent features a_t to a distribution over the vocabulary.

The output layer owns the loss and the log-probabilities, so another softmax (class-based,
adaptive) can replace it without touching the rest of the model. Every method is exact:
probabilities are normalised over the whole vocabulary.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FullSoftmax(nn.Module):
    """y_t = softmax(W_ya a_t + b_y).

    ``linear.weight`` is W_ya with shape (V, H), ``linear.bias`` is b_y with shape (V,).
    Inputs ``h`` have shape (..., H); targets have the matching shape (...).
    """

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, vocab_size)

    def logits(self, h: Tensor) -> Tensor:
        """Unnormalised log-probabilities, shape (..., V)."""
        return self.linear(h)

    def log_probs(self, h: Tensor) -> Tensor:
        """log y_t over the whole vocabulary, shape (..., V), in nats."""
        return F.log_softmax(self.linear(h), dim=-1)

    def log_prob(self, h: Tensor, targets: Tensor) -> Tensor:
        """log y_t[target] for each position, shape (...), in nats."""
        logits = self.linear(h)
        flat = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        )
        return -flat.view(targets.shape)

    def loss(self, h: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """Cross-entropy averaged over positions (targets equal to ``ignore_index`` skipped)."""
        logits = self.linear(h)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=ignore_index,
        )


def make_head(kind: str, hidden_size: int, vocab_size: int) -> FullSoftmax:
    """Build the output layer named by ``kind`` (only ``full`` for now)."""
    if kind == "full":
        return FullSoftmax(hidden_size, vocab_size)
    raise ValueError(f"unknown output layer {kind!r}")


__all__ = ["FullSoftmax", "make_head"]
