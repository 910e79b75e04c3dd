"""The fixed-window neural language model of Bengio et al. (2003), before RNNs.

With n - 1 = ``context`` previous tokens::

    x_t = [C[w_{t-n+2}]; ...; C[w_{t-1}]; C[w_t]]         n - 1 embeddings, oldest first
    h_t = tanh(H x_t + d)
    y_t = softmax(U h_t + b)                               P(w_{t+1} | w_{t-n+2} .. w_t)

(Bengio et al.'s optional direct connections W x_t are left out.) Positions before the start
of the text read zero vectors, as an RNN starts from a_0 = 0.

=======================  ==========  ===============================================
torch name               Bengio's    shape
=======================  ==========  ===============================================
``embedding.weight``     C           (V, m)
``hidden.weight``        H           (h, (n-1) m)
``hidden.bias``          d           (h,)
``head.linear.weight``   U           (V, h)
``head.linear.bias``     b           (V,)
=======================  ==========  ===============================================

The carried state is the embeddings of the last n - 2 tokens, shape (n - 2, B, m) (batch in
dimension 1, as a recurrent state), so the model slots into the same truncated-BPTT trainer,
stream evaluation and sampler as the RNNs; it does no I/O and prints nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models.base import LanguageModel, State
from rnnkit.models.config import ModelConfig
from rnnkit.models.output import make_head


class WindowLanguageModel(LanguageModel):
    """Bengio et al.'s neural probabilistic language model; see the module docstring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        V, H, E = config.vocab_size, config.hidden_size, config.input_size
        self.embedding = nn.Embedding(V, E)
        self.hidden = nn.Linear(config.context * E, H)
        self.drop: nn.Module = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.head = make_head(config, H)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.hidden.reset_parameters()
        self.head.reset_parameters()
        words = self.head.word_layer()
        if self.config.tie_weights and words is not None:
            words.weight = self.embedding.weight

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Zero embeddings for the n - 2 positions before the text: (n - 2, B, m)."""
        w = self.embedding.weight
        shape = (self.config.context - 1, batch_size, self.config.input_size)
        return torch.zeros(shape, dtype=w.dtype, device=device or w.device)

    def features(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """h_t (B, T, h) for each position and the last n - 2 embeddings as the new state."""
        n1 = self.config.context
        emb = self.embedding(tokens)  # (B, T, m)
        B, T, m = emb.shape
        if state is None:
            state = self.init_state(B, tokens.device)
        if isinstance(state, tuple):
            raise TypeError("a window model's state is one tensor")
        full = torch.cat([state.transpose(0, 1), emb], dim=1)  # (B, n-2+T, m)
        windows = full.unfold(1, n1, 1)  # (B, T, m, n-1)
        x = windows.transpose(2, 3).reshape(B, T, n1 * m)  # oldest embedding first
        h = self.drop(torch.tanh(self.hidden(self.drop(x))))
        new_state = full[:, full.shape[1] - (n1 - 1) :].transpose(0, 1)
        return h, new_state


__all__ = ["WindowLanguageModel"]
