"""The recurrent language model: input (embedding or one-hot) -> recurrent core -> softmax.

For ``cell="rnn"`` this is the Elman RNN exactly as the seeds write it::

    a_0 = 0
    a_t = g1(W_aa a_{t-1} + W_ax x_t + b_a)        g1 = tanh (default) or ReLU
    y_t = softmax(W_ya a_t + b_y)

with the same weights at every step. torch's fused ``nn.RNN`` computes exactly this, so it
is the fast path. Its parameters map to the seeds' names as follows (layer k, row-vector
convention, so torch stores each W with shape (out, in)):

=======================  ==========  ===============================================
torch name               seeds'      shape
=======================  ==========  ===============================================
``embedding.weight``     C           (V, E); x_t = C[token_t] (absent with one_hot)
``rnn.weight_ih_l{k}``   W_ax        (H, E) for k = 0, (H, H) above
``rnn.weight_hh_l{k}``   W_aa        (H, H)
``rnn.bias_ih_l{k}``     b_a (part)  (H,); b_a = bias_ih + bias_hh
``rnn.bias_hh_l{k}``     b_a (part)  (H,)
``head.linear.weight``   W_ya        (V, H)
``head.linear.bias``     b_y         (V,)
=======================  ==========  ===============================================

With ``one_hot=True`` x_t is the one-hot vector of token_t (E = V), as in the seeds.
Layer k > 0 reads layer k-1's a_t as its x_t. GRU and LSTM (``cell="gru"|"lstm"``) replace
the recurrence behind the same interface; their gates fight the vanishing gradient.

Shapes: tokens (B, T) int64; logits (B, T, V); state (L, B, H) for rnn/gru and a pair
(h, c) of (L, B, H) tensors for lstm. The model does no I/O and prints nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.models.base import LanguageModel, State
from rnnkit.models.config import ModelConfig
from rnnkit.models.output import OutputLayer, make_head


def detach_state(state: State | None) -> State | None:
    """Cut the graph between BPTT windows, keeping the values (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()


def select_state(state: State, index: Tensor | slice) -> State:
    """The state of some sequences in the batch (batch is dimension 1)."""
    if isinstance(state, tuple):
        return (state[0][:, index], state[1][:, index])
    return state[:, index]


def cat_states(states: list[State]) -> State:
    """Join the states of several batches into one batch (batch is dimension 1)."""
    if isinstance(states[0], tuple):
        pairs = [s for s in states if isinstance(s, tuple)]
        return (torch.cat([h for h, _ in pairs], 1), torch.cat([c for _, c in pairs], 1))
    return torch.cat([s for s in states if isinstance(s, Tensor)], 1)


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by every time step of (B, T, E) input."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class RNNLanguageModel(LanguageModel):
    """An Elman, GRU or LSTM language model; see the module docstring for the equations.

    ``forward``, ``loss``, ``log_prob`` and ``num_parameters`` come from
    :class:`~rnnkit.models.base.LanguageModel` and read :meth:`features`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        V, H = config.vocab_size, config.hidden_size
        self.embedding: nn.Embedding | None = (
            None if config.one_hot else nn.Embedding(V, config.input_size)
        )
        rnn_dropout = config.dropout if config.num_layers > 1 else 0.0
        kwargs = dict(
            input_size=config.input_size,
            hidden_size=H,
            num_layers=config.num_layers,
            dropout=rnn_dropout,
            batch_first=True,
        )
        self.rnn: nn.RNNBase
        if config.cell == "rnn":
            self.rnn = nn.RNN(nonlinearity=config.nonlinearity, **kwargs)
        elif config.cell == "gru":
            self.rnn = nn.GRU(**kwargs)
        else:
            self.rnn = nn.LSTM(**kwargs)
        self.drop: nn.Module = nn.Identity()
        if config.dropout > 0:
            self.drop = (
                LockedDropout(config.dropout)
                if config.locked_dropout
                else nn.Dropout(config.dropout)
            )
        self.head: OutputLayer = make_head(config, H)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.RNN's own init (uniform +-1/sqrt(H)) for the core; a small uniform init for the
        # embedding and the output layer, as in pytorch/examples' word_language_model.
        self.rnn.reset_parameters()
        self.head.reset_parameters()
        if self.embedding is not None:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        words = self.head.word_layer()
        if self.config.tie_weights and self.embedding is not None and words is not None:
            words.weight = self.embedding.weight

    def inputs(self, tokens: Tensor) -> Tensor:
        """x_t for each token: (B, T) ids -> (B, T, E)."""
        if self.embedding is None:
            return F.one_hot(tokens, self.config.vocab_size).to(next(self.rnn.parameters()).dtype)
        return self.embedding(tokens)

    def features(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The top layer's a_t for each position, (B, T, H), and the final state."""
        x = self.drop(self.inputs(tokens))
        p = self.config.weight_dropout
        if p and self.training:
            # DropConnect: a fresh mask on each W_aa per call (per BPTT window), the same
            # at every time step, so the kernel still runs the whole window at once.
            dropped = {
                f"weight_hh_l{k}": F.dropout(getattr(self.rnn, f"weight_hh_l{k}"), p)
                for k in range(self.config.num_layers)
            }
            a, state = torch.func.functional_call(self.rnn, dropped, (x, state))
        else:
            a, state = self.rnn(x, state)
        return self.drop(a), state

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One token per sequence through torch's single-step cell kernels (generation).

        The same function as :meth:`features` on one step (a test checks it), without
        ``nn.RNN``'s per-call set-up, which is most of the time of a one-token call.
        """
        if self.training or state is None:
            return super().step(tokens, state)
        x = self.inputs(tokens)
        cell = self.config.cell
        rnn = self.rnn
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k in range(self.config.num_layers):
            w = (
                getattr(rnn, f"weight_ih_l{k}"),
                getattr(rnn, f"weight_hh_l{k}"),
                getattr(rnn, f"bias_ih_l{k}"),
                getattr(rnn, f"bias_hh_l{k}"),
            )
            if isinstance(state, tuple):
                x, c = torch.lstm_cell(x, (state[0][k], state[1][k]), *w)
                cs.append(c)
            elif cell == "gru":
                x = torch.gru_cell(x, state[k], *w)
            elif self.config.nonlinearity == "relu":
                x = torch.rnn_relu_cell(x, state[k], *w)
            else:
                x = torch.rnn_tanh_cell(x, state[k], *w)
            hs.append(x)
        new_h = torch.stack(hs)
        return x, ((new_h, torch.stack(cs)) if cs else new_h)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """a_0 = 0 for a batch (and c_0 = 0 for an LSTM)."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        w = next(self.rnn.parameters())
        zeros = torch.zeros(shape, dtype=w.dtype, device=device or w.device)
        if self.config.cell == "lstm":
            return (zeros, zeros.clone())
        return zeros
