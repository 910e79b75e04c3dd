"""Gradient clipping and the SGD step, on :class:`~rnnkit.reference.params.Params`.

Clipping by norm rescales the whole gradient when its global L2 norm exceeds ``max_norm``
(Pascanu, Mikolov and Bengio 2013), keeping its direction; clipping by value clamps every
entry to [-clip, clip] (Mikolov's RNNLM toolkit clips this way), which can change the
direction. Both work in place, like torch's ``clip_grad_norm_`` and ``clip_grad_value_``.
"""

from __future__ import annotations

import numpy as np

from rnnkit.reference.params import Params


def grad_norm(grads: Params) -> float:
    """The global L2 norm over every gradient array: sqrt(sum of squares)."""
    return float(np.sqrt(sum(float(np.sum(g * g)) for g in grads.arrays())))


def clip_by_norm(grads: Params, max_norm: float, eps: float = 1e-6) -> float:
    """If ||g|| > max_norm, g <- g * max_norm / (||g|| + eps), in place (torch's formula).

    Returns the norm before clipping, as torch's ``clip_grad_norm_`` does.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, not {max_norm}")
    norm = grad_norm(grads)
    coef = max_norm / (norm + eps)
    if coef < 1.0:
        for g in grads.arrays():
            g *= coef
    return norm


def clip_by_value(grads: Params, clip_value: float) -> None:
    """g <- min(max(g, -clip_value), clip_value) for every entry, in place."""
    if clip_value <= 0:
        raise ValueError(f"clip_value must be positive, not {clip_value}")
    for g in grads.arrays():
        np.clip(g, -clip_value, clip_value, out=g)


def sgd_step(params: Params, grads: Params, lr: float) -> None:
    """theta <- theta - lr * dL/dtheta for every parameter, in place."""
    for p, g in zip(params.arrays(), grads.arrays(), strict=True):
        p -= lr * g
