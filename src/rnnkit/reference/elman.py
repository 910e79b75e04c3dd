"""The Elman RNN forward pass and backpropagation through time, written out in NumPy.

The seeds' equations (one layer; layer k > 0 reads layer k-1's a_t as its x_t)::

    a_0 = 0
    z_t = W_aa a_{t-1} + W_ax x_t + b_a            pre-activation
    a_t = g1(z_t)                                   g1 = tanh or ReLU
    o_t = W_ya a_t + b_y                            logits
    y_t = g2(o_t)                                   g2 = softmax (one class) or sigmoid (K bits)
    L_t = cross-entropy(y_t, target_t)              L = sum_t L_t, or the mean

Every operation below has its backward written right after its forward (micrograd's way):
``*_forward`` returns what the backward needs, ``*_backward`` takes dL/d(output) and returns
dL/d(inputs). Arrays are row vectors in a batch: x_t is (B, D), a_t is (B, H), and
``x @ W_ax.T`` is the seeds' W_ax x (see :mod:`rnnkit.reference.params` for the shapes and
the torch names).

Truncated BPTT (``truncate=k``) cuts the gradient through a_{t-1} -> a_t at the start of
every window of k steps, exactly what torch does when the state is detached between windows
(pytorch/examples' ``repackage_hidden``); the forward values are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnkit.reference.params import Array, Params

NONLINEARITIES = ("tanh", "relu")
OUTPUTS = ("softmax", "sigmoid")


# --- input: embedding lookup or one-hot ---------------------------------------------------


def one_hot(tokens: Array, size: int, dtype: Any = np.float64) -> Array:
    """x_t = e_{token_t}: (B, T) ints -> (B, T, size), as the seeds feed characters."""
    return np.eye(size, dtype=dtype)[tokens]


def embed_forward(C: Array, tokens: Array) -> Array:
    """x_t = C[token_t]: (B, T) ints -> (B, T, E)."""
    return C[tokens]


def embed_backward(dx: Array, tokens: Array, vocab_size: int) -> Array:
    """dL/dC: each row of C collects the gradient of every x_t that looked it up."""
    dC = np.zeros((vocab_size, dx.shape[-1]), dtype=dx.dtype)
    np.add.at(dC, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return dC


# --- the nonlinearity g1 ------------------------------------------------------------------


def g1_forward(z: Array, nonlinearity: str) -> Array:
    if nonlinearity == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0.0)  # relu


def g1_backward(da: Array, z: Array, a: Array, nonlinearity: str) -> Array:
    """dL/dz_t = dL/da_t * g1'(z_t); tanh' = 1 - a_t^2, relu' = [z_t > 0]."""
    if nonlinearity == "tanh":
        return da * (1.0 - a * a)
    return da * (z > 0)


# --- one recurrent step ---------------------------------------------------------------------


def step_forward(
    x: Array, a_prev: Array, W_ax: Array, W_aa: Array, b_a: Array, nonlinearity: str
) -> tuple[Array, Array]:
    """a_t = g1(W_aa a_{t-1} + W_ax x_t + b_a); returns (a_t, z_t), each (B, H)."""
    z = a_prev @ W_aa.T + x @ W_ax.T + b_a
    return g1_forward(z, nonlinearity), z


def step_backward(
    da: Array,
    x: Array,
    a_prev: Array,
    z: Array,
    a: Array,
    W_ax: Array,
    W_aa: Array,
    nonlinearity: str,
) -> tuple[Array, Array, Array, Array, Array]:
    """From dL/da_t (everything that reaches a_t) to (dx_t, da_{t-1}, dW_ax, dW_aa, db_a).

    The weight gradients are this step's contributions; BPTT sums them over t because the
    same W_ax, W_aa, b_a are used at every step.
    """
    dz = g1_backward(da, z, a, nonlinearity)  # dL/dz_t
    dW_ax = dz.T @ x  # z_t = ... + W_ax x_t      -> dL/dW_ax += dz_t x_t^T
    dW_aa = dz.T @ a_prev  # z_t = W_aa a_{t-1} + ... -> dL/dW_aa += dz_t a_{t-1}^T
    db_a = dz.sum(axis=0)  # z_t = ... + b_a        -> dL/db_a += dz_t
    dx = dz @ W_ax  # dL/dx_t = W_ax^T dz_t
    da_prev = dz @ W_aa  # dL/da_{t-1} (through this step only) = W_aa^T dz_t
    return dx, da_prev, dW_ax, dW_aa, db_a


# --- one layer over the whole sequence ----------------------------------------------------


def layer_forward(
    x: Array, a0: Array, W_ax: Array, W_aa: Array, b_a: Array, nonlinearity: str
) -> tuple[Array, Array]:
    """Run one layer over x (B, T, D) from a_0 = a0 (B, H); returns a and z, each (B, T, H)."""
    B, T, _ = x.shape
    H = W_aa.shape[0]
    a = np.empty((B, T, H), dtype=x.dtype)
    z = np.empty((B, T, H), dtype=x.dtype)
    a_prev = a0
    for t in range(T):
        a[:, t], z[:, t] = step_forward(x[:, t], a_prev, W_ax, W_aa, b_a, nonlinearity)
        a_prev = a[:, t]
    return a, z


def layer_backward(
    da_out: Array,
    x: Array,
    a0: Array,
    a: Array,
    z: Array,
    W_ax: Array,
    W_aa: Array,
    nonlinearity: str,
    truncate: int | None = None,
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """BPTT through one layer, from the last step back to the first.

    ``da_out`` (B, T, H) is dL/da_t arriving from above (the output layer, or the next layer)
    at each step; the recurrence adds dL/da_t arriving from step t+1. Returns (dx, da0,
    dW_ax, dW_aa, db_a, da) where dx (B, T, D) goes to the layer below, da0 is dL/da_0 and
    da (B, T, H) is the total dL/da_t at every step (what the diagnostics plot).
    """
    T = x.shape[1]
    dx = np.zeros_like(x)
    da = np.zeros_like(a)
    dW_ax, dW_aa = np.zeros_like(W_ax), np.zeros_like(W_aa)
    db_a = np.zeros(W_aa.shape[0], dtype=x.dtype)
    da_next = np.zeros_like(a0)  # dL/da_t from step t+1 (nothing after the last step)
    for t in reversed(range(T)):
        da[:, t] = da_out[:, t] + da_next
        a_prev = a[:, t - 1] if t > 0 else a0
        dx[:, t], da_prev, dWx, dWa, db = step_backward(
            da[:, t], x[:, t], a_prev, z[:, t], a[:, t], W_ax, W_aa, nonlinearity
        )
        dW_ax += dWx
        dW_aa += dWa
        db_a += db
        # Truncated BPTT: a window starts at t, so a_{t-1} entered it as a constant.
        da_next = np.zeros_like(da_prev) if truncate and t % truncate == 0 else da_prev
    return dx, da_next, dW_ax, dW_aa, db_a, da


# --- output layer and loss ----------------------------------------------------------------


def softmax_ce_forward(o: Array, targets: Array) -> tuple[Array, Array]:
    """y_t = softmax(o_t), L_t = -log y_t[target_t]; o (..., K), targets (...) ints.

    Returns (L_t with targets' shape, in nats; y_t). Uses log-sum-exp, so no overflow.
    """
    shifted = o - o.max(axis=-1, keepdims=True)
    log_y = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    losses = -np.take_along_axis(log_y, targets[..., None], axis=-1)[..., 0]
    return losses, np.exp(log_y)


def softmax_ce_backward(dL: Array, y: Array, targets: Array) -> Array:
    """dL/do_t = dL/dL_t * (y_t - onehot(target_t)): softmax and cross-entropy together."""
    do = y.copy()
    np.put_along_axis(do, targets[..., None], np.take_along_axis(y, targets[..., None], -1) - 1, -1)
    return do * dL[..., None]


def sigmoid_bce_forward(o: Array, targets: Array) -> tuple[Array, Array]:
    """y_t = sigmoid(o_t), L_t = -sum_k [t_k log y_k + (1 - t_k) log(1 - y_k)] (nats).

    o and targets (values in [0, 1]) are (..., K); L_t has shape (...). Computed from the
    logits as max(o, 0) - o t + log(1 + e^{-|o|}), which never takes log(0).
    """
    losses = (np.maximum(o, 0.0) - o * targets + np.log1p(np.exp(-np.abs(o)))).sum(axis=-1)
    y = np.exp(-np.logaddexp(0.0, -o))  # sigmoid, stable for large |o|
    return losses, y


def sigmoid_bce_backward(dL: Array, y: Array, targets: Array) -> Array:
    """dL/do_t = dL/dL_t * (y_t - target_t): sigmoid and binary cross-entropy together."""
    return (y - targets) * dL[..., None]


# --- the whole model ----------------------------------------------------------------------


@dataclass
class Forward:
    """Everything one forward pass computed; the backward reads it."""

    x: list[Array]  # per layer, its input x_t over time, (B, T, D_k)
    a: list[Array]  # per layer, a_t, (B, T, H)
    z: list[Array]  # per layer, z_t, (B, T, H)
    a0: Array  # (L, B, H) initial state
    o: Array  # (B, T, K) logits o_t
    y: Array  # (B, T, K) outputs y_t (probabilities)
    losses: Array  # (B, T) L_t in nats
    weights: Array  # (B, T) how much each L_t counts in L
    loss: float  # L = sum of weights * L_t, in nats
    tokens: Array | None  # (B, T) ids when the input was tokens
    targets: Array
    nonlinearity: str
    output: str

    @property
    def state(self) -> Array:
        """The final state a_T of every layer, (L, B, H): a_0 for the next window."""
        return np.stack([a[:, -1] for a in self.a])


@dataclass
class Backward:
    """The gradients of L, and dL/da_t at every step (total, through every path)."""

    grads: Params
    da: list[Array]  # per layer, (B, T, H)
    da0: Array  # (L, B, H): dL/da_0 (zero under truncation)


def _loss_weights(shape: tuple[int, ...], reduction: str | Array) -> Array:
    if isinstance(reduction, np.ndarray):
        if reduction.shape != shape:
            raise ValueError(f"loss weights have shape {reduction.shape}, expected {shape}")
        return reduction.astype(np.float64)
    if reduction == "sum":
        return np.ones(shape)
    if reduction == "mean":
        return np.full(shape, 1.0 / (shape[0] * shape[1]))
    raise ValueError(f"reduction must be 'sum', 'mean' or an array of weights, not {reduction!r}")


def forward(
    params: Params,
    inputs: Array,
    targets: Array,
    nonlinearity: str = "tanh",
    output: str = "softmax",
    a0: Array | None = None,
    reduction: str | Array = "mean",
) -> Forward:
    """The forward pass over a batch of sequences.

    ``inputs``: token ids (B, T) (looked up in ``params.C``, or one-hot when C is None) or
    real vectors x_t (B, T, D). ``targets``: class ids (B, T) for ``softmax``, or values in
    [0, 1] of shape (B, T, K) for ``sigmoid`` ((B, T) is read as K = 1). ``a0``: the initial
    state (L, B, H), zero by default. ``reduction``: L = the sum of L_t, their mean over all
    B*T positions (what torch's ``cross_entropy`` does), or an array (B, T) of weights.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be tanh or relu, not {nonlinearity!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be softmax or sigmoid, not {output!r}")
    tokens: Array | None = None
    if np.issubdtype(inputs.dtype, np.integer):
        tokens = inputs
        if params.C is not None:
            x = embed_forward(params.C, tokens)
        else:
            x = one_hot(tokens, params.input_size, params.W_ya.dtype)
    else:
        x = inputs
    B, T = x.shape[:2]
    L, H = params.num_layers, params.hidden_size
    if a0 is None:
        a0 = np.zeros((L, B, H), dtype=x.dtype)
    if output == "sigmoid" and targets.ndim == 2:
        targets = targets[..., None]

    xs, as_, zs = [], [], []
    h = x
    for k in range(L):
        xs.append(h)
        a, z = layer_forward(h, a0[k], params.W_ax[k], params.W_aa[k], params.b_a[k], nonlinearity)
        as_.append(a)
        zs.append(z)
        h = a  # the next layer's x_t is this layer's a_t

    o = h @ params.W_ya.T + params.b_y  # o_t = W_ya a_t + b_y
    if output == "softmax":
        losses, y = softmax_ce_forward(o, targets)
    else:
        losses, y = sigmoid_bce_forward(o, targets)
    weights = _loss_weights((B, T), reduction)
    return Forward(
        x=xs,
        a=as_,
        z=zs,
        a0=a0,
        o=o,
        y=y,
        losses=losses,
        weights=weights,
        loss=float((weights * losses).sum()),
        tokens=tokens,
        targets=targets,
        nonlinearity=nonlinearity,
        output=output,
    )


def backward(params: Params, fwd: Forward, truncate: int | None = None) -> Backward:
    """Backpropagation through time: the gradient of ``fwd.loss`` for every parameter.

    ``truncate=k`` cuts the recurrent gradient every k steps (windows [0, k), [k, 2k), ...),
    as detaching the state between windows of k steps does in torch. None: full BPTT.
    """
    if truncate is not None and truncate < 1:
        raise ValueError(f"truncate must be at least 1, not {truncate}")
    # L = sum_t w_t L_t, so dL/dL_t = w_t; then through g2 and the cross-entropy together.
    if fwd.output == "softmax":
        do = softmax_ce_backward(fwd.weights, fwd.y, fwd.targets)
    else:
        do = sigmoid_bce_backward(fwd.weights, fwd.y, fwd.targets)
    # o_t = W_ya a_t + b_y: sum over every position (b, t), the same W_ya at every step.
    a_top = fwd.a[-1]
    dW_ya = do.reshape(-1, do.shape[-1]).T @ a_top.reshape(-1, a_top.shape[-1])
    db_y = do.sum(axis=(0, 1))
    dh = do @ params.W_ya  # dL/da_t of the top layer, from the output at step t

    L = params.num_layers
    dW_ax: list[Array] = [np.empty(0)] * L
    dW_aa: list[Array] = [np.empty(0)] * L
    db_a: list[Array] = [np.empty(0)] * L
    das: list[Array] = [np.empty(0)] * L
    da0 = np.zeros_like(fwd.a0)
    for k in reversed(range(L)):  # top layer first; its dx is dL/da_t for the layer below
        dh, da0[k], dW_ax[k], dW_aa[k], db_a[k], das[k] = layer_backward(
            dh,
            fwd.x[k],
            fwd.a0[k],
            fwd.a[k],
            fwd.z[k],
            params.W_ax[k],
            params.W_aa[k],
            fwd.nonlinearity,
            truncate,
        )
    dC = None
    if params.C is not None and fwd.tokens is not None:
        dC = embed_backward(dh, fwd.tokens, params.C.shape[0])
    elif params.C is not None:
        dC = np.zeros_like(params.C)
    grads = Params(W_ax=dW_ax, W_aa=dW_aa, b_a=db_a, W_ya=dW_ya, b_y=db_y, C=dC)
    return Backward(grads=grads, da=das, da0=da0)


def loss_and_grads(
    params: Params,
    inputs: Array,
    targets: Array,
    nonlinearity: str = "tanh",
    output: str = "softmax",
    a0: Array | None = None,
    reduction: str | Array = "mean",
    truncate: int | None = None,
) -> tuple[float, Params, Forward]:
    """Forward and BPTT in one call: (L in nats, its gradients, the forward pass)."""
    fwd = forward(params, inputs, targets, nonlinearity, output, a0, reduction)
    return fwd.loss, backward(params, fwd, truncate).grads, fwd


def predict(
    params: Params, inputs: Array, nonlinearity: str = "tanh", output: str = "softmax"
) -> Array:
    """y_t for every step, (B, T, K): probabilities (softmax) or bit probabilities (sigmoid)."""
    B, T = inputs.shape[:2]
    dummy: Array = (
        np.zeros((B, T), dtype=np.int64)
        if output == "softmax"
        else np.zeros((B, T, params.output_size))
    )
    return forward(params, inputs, dummy, nonlinearity, output).y
