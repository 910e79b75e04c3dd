"""The Elman RNN's parameters in the seeds' names, loaded from and saved to torch's names.

Row-vector convention, as torch: a batch of B vectors is a (B, n) array and every weight
matrix is stored (out, in), so ``x @ W_ax.T`` is the seeds' ``W_ax x``.

==========================  ==========  =========================================
seeds' name (this module)   torch name  shape
==========================  ==========  =========================================
``C``                       ``embedding.weight``       (V, E); absent for one-hot input
``W_ax[k]``                 ``rnn.weight_ih_l{k}``     (H, E) for k = 0, (H, H) above
``W_aa[k]``                 ``rnn.weight_hh_l{k}``     (H, H)
``b_a[k]``                  ``rnn.bias_ih_l{k}`` + ``rnn.bias_hh_l{k}``   (H,)
``W_ya``                    ``head.linear.weight``     (K, H)
``b_y``                     ``head.linear.bias``       (K,)
==========================  ==========  =========================================

torch keeps two biases that only ever appear as their sum; the reference keeps the sum, b_a.
Saving writes ``bias_ih = b_a`` and ``bias_hh = 0`` (the same model). The gradient of either
torch bias equals the gradient of b_a (see :func:`gradients_to_state_dict`).

This package imports NumPy and nothing else, not even the rest of rnnkit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray


@dataclass
class Params:
    """The Elman RNN's weights (or their gradients: the same structure)."""

    W_ax: list[Array]  # per layer, (H, in): input -> hidden
    W_aa: list[Array]  # per layer, (H, H): hidden -> hidden, the same at every step
    b_a: list[Array]  # per layer, (H,)
    W_ya: Array  # (K, H): hidden -> output
    b_y: Array  # (K,)
    C: Array | None = field(default=None)  # (V, E) embedding table, or None for one-hot / raw x

    @property
    def num_layers(self) -> int:
        return len(self.W_aa)

    @property
    def hidden_size(self) -> int:
        return int(self.W_aa[0].shape[0])

    @property
    def input_size(self) -> int:
        """Size of x_t, the vector the first layer reads (E, or V for one-hot)."""
        return int(self.W_ax[0].shape[1])

    @property
    def output_size(self) -> int:
        return int(self.W_ya.shape[0])

    def named(self) -> Iterator[tuple[str, Array]]:
        """(seeds' name, array) for every parameter; the arrays themselves, not copies."""
        if self.C is not None:
            yield "C", self.C
        for k in range(self.num_layers):
            yield f"W_ax[{k}]", self.W_ax[k]
            yield f"W_aa[{k}]", self.W_aa[k]
            yield f"b_a[{k}]", self.b_a[k]
        yield "W_ya", self.W_ya
        yield "b_y", self.b_y

    def arrays(self) -> list[Array]:
        return [a for _, a in self.named()]

    def map(self, fn: Any) -> Params:
        """A new Params with ``fn(array)`` applied to every array."""
        return Params(
            W_ax=[fn(w) for w in self.W_ax],
            W_aa=[fn(w) for w in self.W_aa],
            b_a=[fn(b) for b in self.b_a],
            W_ya=fn(self.W_ya),
            b_y=fn(self.b_y),
            C=None if self.C is None else fn(self.C),
        )

    def zeros_like(self) -> Params:
        return self.map(np.zeros_like)

    def copy(self) -> Params:
        return self.map(np.copy)

    def to_state_dict(self) -> dict[str, Array]:
        """torch's names -> arrays (``bias_hh`` = 0, ``bias_ih`` = b_a); load with
        ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``."""
        sd: dict[str, Array] = {}
        if self.C is not None:
            sd["embedding.weight"] = self.C.copy()
        for k in range(self.num_layers):
            sd[f"rnn.weight_ih_l{k}"] = self.W_ax[k].copy()
            sd[f"rnn.weight_hh_l{k}"] = self.W_aa[k].copy()
            sd[f"rnn.bias_ih_l{k}"] = self.b_a[k].copy()
            sd[f"rnn.bias_hh_l{k}"] = np.zeros_like(self.b_a[k])
        sd["head.linear.weight"] = self.W_ya.copy()
        sd["head.linear.bias"] = self.b_y.copy()
        return sd

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], dtype: Any = np.float64) -> Params:
        """Parameters from a trained rnnkit Elman model's state dict (NumPy arrays, or torch
        tensors converted with ``.detach().cpu().numpy()``), cast to ``dtype``.

        Raises ``KeyError`` naming the first missing entry; GRU and LSTM state dicts (whose
        ``weight_hh`` has 3H or 4H rows) raise ``ValueError``.
        """

        def get(name: str) -> Array:
            if name not in state_dict:
                raise KeyError(f"state dict has no {name!r}; is it an rnnkit Elman model?")
            return np.array(state_dict[name], dtype=dtype)

        num_layers = 0
        while f"rnn.weight_hh_l{num_layers}" in state_dict:
            num_layers += 1
        if num_layers == 0:
            raise KeyError("state dict has no 'rnn.weight_hh_l0'; is it an rnnkit Elman model?")
        W_aa = [get(f"rnn.weight_hh_l{k}") for k in range(num_layers)]
        if W_aa[0].shape[0] != W_aa[0].shape[1]:
            raise ValueError(
                f"rnn.weight_hh_l0 has shape {W_aa[0].shape}, not (H, H): a GRU or LSTM "
                "state dict, which the Elman reference cannot load."
            )
        return cls(
            W_ax=[get(f"rnn.weight_ih_l{k}") for k in range(num_layers)],
            W_aa=W_aa,
            b_a=[get(f"rnn.bias_ih_l{k}") + get(f"rnn.bias_hh_l{k}") for k in range(num_layers)],
            W_ya=get("head.linear.weight"),
            b_y=get("head.linear.bias"),
            C=get("embedding.weight") if "embedding.weight" in state_dict else None,
        )


def gradients_to_state_dict(grads: Params) -> dict[str, Array]:
    """Gradients under torch's names: both ``bias_ih`` and ``bias_hh`` get dL/db_a, because
    b_a = bias_ih + bias_hh means dL/dbias_ih = dL/dbias_hh = dL/db_a."""
    sd = grads.to_state_dict()
    for k in range(grads.num_layers):
        sd[f"rnn.bias_hh_l{k}"] = grads.b_a[k].copy()
    return sd


def init_params(
    rng: np.random.Generator,
    input_size: int,
    hidden_size: int,
    output_size: int,
    num_layers: int = 1,
    vocab_size: int | None = None,
    scale: float | None = None,
    dtype: Any = np.float64,
) -> Params:
    """Random parameters as torch initialises ``nn.RNN``: uniform in +-1/sqrt(H) (or
    +-``scale``); with ``vocab_size`` an embedding table C of shape (vocab_size, input_size).
    Biases start at zero."""
    s = 1.0 / np.sqrt(hidden_size) if scale is None else scale

    def u(*shape: int) -> Array:
        return rng.uniform(-s, s, size=shape).astype(dtype)

    ins = [input_size] + [hidden_size] * (num_layers - 1)
    return Params(
        W_ax=[u(hidden_size, n) for n in ins],
        W_aa=[u(hidden_size, hidden_size) for _ in range(num_layers)],
        b_a=[np.zeros(hidden_size, dtype=dtype) for _ in range(num_layers)],
        W_ya=u(output_size, hidden_size),
        b_y=np.zeros(output_size, dtype=dtype),
        C=None if vocab_size is None else u(vocab_size, input_size),
    )
