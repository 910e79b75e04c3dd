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

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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
        B, T = x.shape[0], x.shape[1]
        if lengths is None:
            out, state = rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_out, state = rnn(packed)
            out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=T)
        h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
        dirs = 2 if self.bidirectional else 1
        top = h[-dirs:]  # the top layer's final state in each direction
        final = top.transpose(0, 1).reshape(B, dirs * self.hidden_size)
        return out, final


__all__ = ["RecurrentCore", "make_rnn"]
