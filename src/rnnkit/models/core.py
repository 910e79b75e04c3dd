"""The recurrent core every task model shares: x_t (B, T, E) -> a_t (B, T, D).

For ``cell="rnn"`` each layer is the Elman recurrence a_t = g1(W_aa a_{t-1} + W_ax x_t + b_a),
a_0 = 0, run by torch's fused kernels (``nn.RNN``, ``nn.GRU``, ``nn.LSTM``). Options:

- ``bidirectional``: a second recurrence reads the sequence backwards; a_t is the two
  directions' states side by side (D = 2H), so each output sees the whole input;
- ``skip``: residual connections between stacked layers, a_t^(k) = f_k(a^(k-1))_t + a_t^(k-1)
  for k >= 1 (the seeds' third cure for vanishing gradients: the gradient has a path around
  every layer). Each layer is then its own module, ``layers.{k}``; without ``skip`` the
  stack is one fused module, ``rnn`` (torch names ``rnn.weight_ih_l{k}`` = W_ax,
  ``rnn.weight_hh_l{k}`` = W_aa, ``rnn.bias_ih_l{k} + rnn.bias_hh_l{k}`` = b_a);
- ``lengths``: a padded batch is packed, so padding never enters a recurrence and a sequence
  gets the same outputs alone or inside any batch; outputs at padded positions are zero.

Shapes: x (B, T, E); lengths (B,) int64 (on any device); outputs (B, T, D); final (B, D), the
top layer's state after each sequence's last real step (forward direction) beside the
backward direction's state after reading the whole sequence back to step 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.errors import ConfigError


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    nonlinearity: str = "tanh",
    dropout: float = 0.0,
) -> nn.RNNBase:
    """torch's fused Elman (``rnn``), GRU or LSTM stack, batch first."""
    kwargs = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
        batch_first=True,
    )
    if cell == "rnn":
        return nn.RNN(nonlinearity=nonlinearity, **kwargs)
    if cell == "gru":
        return nn.GRU(**kwargs)
    if cell == "lstm":
        return nn.LSTM(**kwargs)
    raise ConfigError(f"--cell must be rnn, gru or lstm, not {cell!r}.")


class RecurrentCore(nn.Module):
    """A stack of Elman/GRU/LSTM layers, uni- or bidirectional, with optional skips."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        skip: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"--num-layers must be at least 1, not {num_layers}.")
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.skip = skip
        self.output_size = hidden_size * (2 if bidirectional else 1)
        self.rnn: nn.RNNBase | None = None
        self.layers: nn.ModuleList | None = None
        if skip and num_layers > 1:
            self.layers = nn.ModuleList(
                make_rnn(
                    cell,
                    input_size if k == 0 else self.output_size,
                    hidden_size,
                    1,
                    bidirectional,
                    nonlinearity,
                )
                for k in range(num_layers)
            )
            self.drop = nn.Dropout(dropout)
        else:
            self.rnn = make_rnn(
                cell, input_size, hidden_size, num_layers, bidirectional, nonlinearity, dropout
            )
            self.drop = nn.Dropout(0.0)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Outputs (B, T, D), zero at padded positions, and the final states (B, D)."""
        if self.rnn is not None:
            return self._run(self.rnn, x, lengths)
        assert self.layers is not None
        out, final = self._run(self.layers[0], x, lengths)
        for layer in self.layers[1:]:
            inner, final = self._run(layer, self.drop(out), lengths)
            out = inner + out  # the skip: a path around the layer for the gradient
        return out, final

    def _run(self, rnn: nn.Module, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        if lengths is not None:
            return self._run_padded(rnn, x, lengths.to(x.device))
        out, state = rnn(x)
        h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
        dirs = 2 if self.bidirectional else 1
        top = h[-dirs:]  # the top layer's final state in each direction
        final = top.transpose(0, 1).reshape(B, dirs * self.hidden_size)
        return out, final

    def _run_padded(self, rnn: nn.Module, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """A padded batch, each sequence computed as if alone, without packing.

        The forward direction reads padding only after a sequence's last real step, so its
        real outputs are untouched by it. The backward direction reads each sequence reversed
        *within its length* (padding stays at the end), then the outputs are put back in
        order. Every step is then the fused kernel on a dense (B, T) batch: on a CPU 2.5-4x
        faster than torch's packed sequences for the same numbers.
        """
        B, T = x.shape[0], x.shape[1]
        assert isinstance(rnn, nn.RNNBase)
        steps = torch.arange(T, device=x.device)
        real = steps[None, :] < lengths[:, None]  # (B, T)
        # position t of the reversed sequence b: len_b - 1 - t on real steps, t on padding
        rev = torch.where(real, lengths[:, None] - 1 - steps[None, :], steps[None, :])
        dirs = 2 if rnn.bidirectional else 1
        inp = x
        for k in range(rnn.num_layers):
            outs = []
            for d in range(dirs):
                sfx = "_reverse" if d else ""
                w = [getattr(rnn, f"{n}_l{k}{sfx}") for n in _PARAMS]
                xi = inp if d == 0 else _gather_steps(inp, rev)
                o = _layer(rnn, xi, w)
                outs.append(o if d == 0 else _gather_steps(o, rev))
            inp = torch.cat(outs, -1) if dirs == 2 else outs[0]
            if k < rnn.num_layers - 1 and rnn.dropout > 0:
                inp = F.dropout(inp, rnn.dropout, self.training)
        out = inp * real[..., None].to(inp.dtype)
        H = self.hidden_size
        last = out[torch.arange(B, device=x.device), lengths - 1]  # (B, D)
        final = last[:, :H] if dirs == 1 else torch.cat([last[:, :H], out[:, 0, H:]], -1)
        return out, final


_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _gather_steps(x: Tensor, index: Tensor) -> Tensor:
    """x[b, index[b, t]] for every b, t: (B, T, E)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))


def _layer(rnn: nn.RNNBase, x: Tensor, w: list[Tensor]) -> Tensor:
    """One layer, one direction, from the zero state: torch's fused op with ``rnn``'s
    weights ``w`` (the same function ``rnn`` computes for that layer and direction)."""
    h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    args = (w, True, 1, 0.0, rnn.training, False, True)  # biases, 1 layer, batch first
    if isinstance(rnn, nn.LSTM):
        return torch.lstm(x, (h0, h0), *args)[0]
    if isinstance(rnn, nn.GRU):
        return torch.gru(x, h0, *args)[0]
    op = torch.rnn_relu if rnn.nonlinearity == "relu" else torch.rnn_tanh
    return op(x, h0, *args)[0]


__all__ = ["RecurrentCore", "make_rnn"]
