"""The interface every language model of rnnkit offers (recurrent or fixed-window).

A language model reads token ids (B, T) and a carried ``state`` and returns features (B, T, H)
and the new state; its output layer ``head`` turns features into the loss and the
log-probabilities. Training, evaluation, scoring and generation use nothing else, so the
Elman/GRU/LSTM model and the fixed-window model of Bengio et al. are interchangeable.

The state's batch dimension is dimension 1 (as torch's recurrent layers have it), so
:func:`~rnnkit.models.select_state` and :func:`~rnnkit.models.cat_states` work on any model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models.config import ModelConfig
from rnnkit.models.output import OutputLayer

State = Tensor | tuple[Tensor, Tensor]


class LanguageModel(nn.Module):
    """Shared methods; subclasses define ``features`` and ``init_state``."""

    config: ModelConfig
    head: OutputLayer

    def features(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The features h_t (B, T, H) the output layer reads, and the final state."""
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The state before any token has been read."""
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits (B, T, V) of the next token at each position, and the final state."""
        h, state = self.features(tokens, state)
        return self.head.logits(h), state

    def loss(
        self,
        tokens: Tensor,
        targets: Tensor,
        state: State | None = None,
        ignore_index: int = -100,
    ) -> tuple[Tensor, State]:
        """Cross-entropy (nats) averaged over positions whose target is not ``ignore_index``."""
        h, state = self.features(tokens, state)
        return self.head.loss(h, targets, ignore_index=ignore_index), state

    def log_prob(
        self, tokens: Tensor, targets: Tensor, state: State | None = None
    ) -> tuple[Tensor, State]:
        """log P(target_t | tokens_<=t) in nats for each position, (B, T), and the state."""
        h, state = self.features(tokens, state)
        return self.head.score(h, targets), state

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One new token per sequence, (B,) ids: the features (B, H) and the new state.

        Generation calls this once per token; models may override it with a faster path.
        """
        h, state = self.features(tokens[:, None], state)
        return h[:, 0], state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["LanguageModel", "State"]
