"""Gradient checking: BPTT's gradients against central finite differences.

For every entry theta_i of every parameter,
``(L(theta + eps e_i) - L(theta - eps e_i)) / (2 eps)`` approximates dL/dtheta_i with an error
of order eps^2; in float64 with eps = 1e-6 that leaves about 1e-10 of the gradient's size, so
a correct backward agrees to a relative error far below 1e-6 and a wrong one does not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnkit.reference.params import Array, Params


def numerical_gradient(loss: Callable[[], float], array: Array, eps: float = 1e-6) -> Array:
    """Central differences of ``loss()`` with respect to every entry of ``array``, which
    ``loss`` must read (it is perturbed in place and restored)."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = loss()
        flat[i] = old - eps
        minus = loss()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic: Array, numeric: Array) -> float:
    """||a - n|| / max(||a|| + ||n||, 1e-12): 0 when they agree, 1 when opposite."""
    diff = float(np.linalg.norm(analytic - numeric))
    scale = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    return diff / max(scale, 1e-12)


def check_gradients(
    params: Params, loss: Callable[[], float], grads: Params, eps: float = 1e-6
) -> dict[str, float]:
    """Relative error of ``grads`` against finite differences of ``loss()`` (which reads
    ``params``), per parameter, by the seeds' names (``W_ax[0]``, ``W_aa[0]``, ...)."""
    analytic = dict(grads.named())
    return {
        name: relative_error(analytic[name], numerical_gradient(loss, array, eps))
        for name, array in params.named()
    }
