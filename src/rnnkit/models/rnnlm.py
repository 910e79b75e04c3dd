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

With ``skip=True`` and L > 1 layers (residual connections, the seeds' third cure for vanishing
gradients) layer k >= 1 adds its input to its output::

    a^(k)_t = f_k(a^(k-1))_t + a^(k-1)_t        (a^(0) = f_0(x), the top a^(L-1) is a_t)

where f_k is layer k's own recurrence (its state h^(k)_t is what is carried), so the gradient
has a path around every layer. A fused multi-layer ``nn.RNN`` cannot add the skip, so each layer
is then a one-layer module of its own, ``layers.{k}`` (``layers.{k}.weight_ih_l0`` = W_ax of
layer k, and so on); without ``skip`` the stack is the fused ``rnn`` of the table above.

Shapes: tokens (B, T) int64; logits (B, T, V); state (L, B, H) for rnn/gru and a pair
(h, c) of (L, B, H) tensors for lstm (with or without skip: layer k's own h^(k), c^(k)).
The model does no I/O and prints nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.models.base import LanguageModel, State
from rnnkit.models.config import ModelConfig
from rnnkit.models.core import make_rnn
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


def _reset_rnn(module: nn.Module) -> None:
    # nn.RNN's own init (uniform +-1/sqrt(H)) for every recurrent module, fused or per layer
    if isinstance(module, nn.RNNBase):
        module.reset_parameters()


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
        L = config.num_layers
        self.rnn: nn.RNNBase | None = None  # the fused stack (no skip)
        self.layers: nn.ModuleList | None = None  # one module per layer (skip)
        if config.skip and L > 1:
            sizes = [config.input_size] + [H] * (L - 1)  # layer k's input size
            self.layers = nn.ModuleList(
                make_rnn(config.cell, n, H, nonlinearity=config.nonlinearity) for n in sizes
            )
        else:
            self.rnn = make_rnn(
                config.cell,
                config.input_size,
                H,
                L,
                nonlinearity=config.nonlinearity,
                dropout=config.dropout,
            )
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
        self.recurrent.apply(_reset_rnn)
        self.head.reset_parameters()
        if self.embedding is not None:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        words = self.head.word_layer()
        if self.config.tie_weights and self.embedding is not None and words is not None:
            words.weight = self.embedding.weight

    @property
    def recurrent(self) -> nn.Module:
        """The module holding every recurrent weight: ``rnn``, or ``layers`` with skip."""
        core = self.rnn if self.rnn is not None else self.layers
        assert core is not None  # one of the two is always built
        return core

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Layer k's (W_ax, W_aa, bias_ih, bias_hh), torch's ``weight_ih``, ``weight_hh``,
        ``bias_ih`` and ``bias_hh`` (b_a is the sum of the biases), with or without skip."""
        rnn: nn.Module
        if self.rnn is not None:
            rnn, suffix = self.rnn, f"_l{k}"
        else:
            assert self.layers is not None
            rnn, suffix = self.layers[k], "_l0"
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        w_ih, w_hh, b_ih, b_hh = (getattr(rnn, name + suffix) for name in names)
        return w_ih, w_hh, b_ih, b_hh

    def inputs(self, tokens: Tensor) -> Tensor:
        """x_t for each token: (B, T) ids -> (B, T, E)."""
        if self.embedding is None:
            dtype = next(self.recurrent.parameters()).dtype
            return F.one_hot(tokens, self.config.vocab_size).to(dtype)
        return self.embedding(tokens)

    def features(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The top layer's a_t for each position, (B, T, H), and the final state."""
        x = self.drop(self.inputs(tokens))
        p = self.config.weight_dropout if self.training else 0.0
        if self.layers is not None:
            a, state = self._skip_features(self.layers, x, state, p)
        elif p:
            # DropConnect: a fresh mask on each W_aa per call (per BPTT window), the same
            # at every time step, so the kernel still runs the whole window at once.
            assert self.rnn is not None
            dropped = {
                f"weight_hh_l{k}": F.dropout(getattr(self.rnn, f"weight_hh_l{k}"), p)
                for k in range(self.config.num_layers)
            }
            a, state = torch.func.functional_call(self.rnn, dropped, (x, state))
        else:
            assert self.rnn is not None
            a, state = self.rnn(x, state)
        return self.drop(a), state

    def _skip_features(
        self, layers: nn.ModuleList, x: Tensor, state: State | None, p: float
    ) -> tuple[Tensor, State]:
        """The stack layer by layer, a^(k) = f_k(a^(k-1)) + a^(k-1) for k >= 1; dropout
        (``config.dropout``) on each layer's input above the first, as the fused stack has it,
        and DropConnect masks drawn for every layer first, in the fused path's order."""
        w_hh = [self.layer_weights(k)[1] for k in range(len(layers))]
        masked = [F.dropout(w, p) for w in w_hh] if p else w_hh
        between = self.config.dropout if self.training else 0.0
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        a = x
        for k, layer in enumerate(layers):
            inp = F.dropout(a, between) if k > 0 and between else a
            init: State | None = None
            if isinstance(state, tuple):
                init = (state[0][k : k + 1], state[1][k : k + 1])
            elif state is not None:
                init = state[k : k + 1]
            if p:
                out, final = torch.func.functional_call(
                    layer, {"weight_hh_l0": masked[k]}, (inp, init)
                )
            else:
                out, final = layer(inp, init)
            a = out if k == 0 else out + a  # the skip: a path around layer k
            if isinstance(final, tuple):
                hs.append(final[0])
                cs.append(final[1])
            else:
                hs.append(final)
        new_h = torch.cat(hs)
        return a, ((new_h, torch.cat(cs)) if cs else new_h)

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One token per sequence through torch's single-step cell kernels (generation).

        The same function as :meth:`features` on one step (a test checks it), without
        ``nn.RNN``'s per-call set-up, which is most of the time of a one-token call.
        """
        if self.training or state is None:
            return super().step(tokens, state)
        x = self.inputs(tokens)
        cell = self.config.cell
        skip = self.layers is not None
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k in range(self.config.num_layers):
            w = self.layer_weights(k)
            if isinstance(state, tuple):
                h, c = torch.lstm_cell(x, (state[0][k], state[1][k]), *w)
                cs.append(c)
            elif cell == "gru":
                h = torch.gru_cell(x, state[k], *w)
            elif self.config.nonlinearity == "relu":
                h = torch.rnn_relu_cell(x, state[k], *w)
            else:
                h = torch.rnn_tanh_cell(x, state[k], *w)
            hs.append(h)
            x = h + x if skip and k > 0 else h
        new_h = torch.stack(hs)
        return x, ((new_h, torch.stack(cs)) if cs else new_h)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """a_0 = 0 for a batch (and c_0 = 0 for an LSTM)."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        w = next(self.recurrent.parameters())
        zeros = torch.zeros(shape, dtype=w.dtype, device=device or w.device)
        if self.config.cell == "lstm":
            return (zeros, zeros.clone())
        return zeros
