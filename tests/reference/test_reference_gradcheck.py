"""BPTT's gradients equal central finite differences (float64, relative error <= 1e-6)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rnnkit.reference import (
    Params,
    backward,
    check_gradients,
    forward,
    init_params,
    loss_and_grads,
    numerical_gradient,
)

TOL = 1e-6


def make(
    seed: int, V: int = 4, H: int = 5, L: int = 2, E: int | None = 3, K: int | None = None
) -> Params:
    rng = np.random.default_rng(seed)
    p = init_params(rng, E or V, H, K or V, num_layers=L, vocab_size=V if E else None, scale=0.6)
    for b in [*p.b_a, p.b_y]:
        b[...] = rng.uniform(-0.3, 0.3, b.shape)
    return p


def assert_matches_fd(params: Params, loss, grads: Params) -> None:  # type: ignore[no-untyped-def]
    errors = check_gradients(params, loss, grads)
    assert set(errors) == {name for name, _ in params.named()}
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("embedding", [True, False], ids=["embedding", "one_hot"])
def test_softmax_gradients_match_finite_differences(
    nonlinearity: str, reduction: str, embedding: bool
) -> None:
    rng = np.random.default_rng(1)
    params = make(2, E=3 if embedding else None)
    tokens, targets = rng.integers(0, 4, (2, 6)), rng.integers(0, 4, (2, 6))
    _, grads, fwd = loss_and_grads(params, tokens, targets, nonlinearity, reduction=reduction)
    if nonlinearity == "relu":  # a kink within eps of a pre-activation would spoil the check
        assert min(np.abs(z).min() for z in fwd.z) > 1e-4
    assert_matches_fd(
        params,
        lambda: forward(params, tokens, targets, nonlinearity, reduction=reduction).loss,
        grads,
    )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_sigmoid_bce_gradients_match_finite_differences(nonlinearity: str) -> None:
    rng = np.random.default_rng(3)
    params = make(4, L=1, E=None, V=3, K=2)
    x = rng.normal(size=(3, 5, 3))  # real-valued inputs x_t, no embedding
    targets = rng.integers(0, 2, (3, 5, 2)).astype(np.float64)
    _, grads, _ = loss_and_grads(params, x, targets, nonlinearity, output="sigmoid")
    assert_matches_fd(
        params, lambda: forward(params, x, targets, nonlinearity, output="sigmoid").loss, grads
    )


@pytest.mark.parametrize("k", [1, 2, 4])
def test_truncated_bptt_is_the_gradient_with_window_start_states_held_fixed(k: int) -> None:
    """Truncated BPTT = the gradient of sum over windows of L_w(theta; a at window start),
    with the state entering each window a constant (what detaching does)."""
    rng = np.random.default_rng(5)
    params = make(6)
    T = 7
    tokens, targets = rng.integers(0, 4, (2, T)), rng.integers(0, 4, (2, T))
    full = forward(params, tokens, targets, reduction="sum")
    grads = backward(params, full, truncate=k).grads
    starts = [np.zeros((2, 2, 5))] + [
        np.stack([a[:, s - 1] for a in full.a]) for s in range(k, T, k)
    ]

    def windowed_loss() -> float:
        return sum(
            forward(
                params, tokens[:, s : s + k], targets[:, s : s + k], a0=a0, reduction="sum"
            ).loss
            for s, a0 in zip(range(0, T, k), starts)
        )

    assert abs(windowed_loss() - full.loss) < 1e-12
    assert_matches_fd(params, windowed_loss, grads)


def test_full_bptt_initial_state_gradient() -> None:
    rng = np.random.default_rng(7)
    params = make(8)
    tokens, targets = rng.integers(0, 4, (2, 5)), rng.integers(0, 4, (2, 5))
    a0 = rng.normal(size=(2, 2, 5)) * 0.5
    fwd = forward(params, tokens, targets, a0=a0, reduction="sum")
    da0 = backward(params, fwd).da0
    numeric = numerical_gradient(
        lambda: forward(params, tokens, targets, a0=a0, reduction="sum").loss, a0
    )
    np.testing.assert_allclose(da0, numeric, rtol=1e-6, atol=1e-9)
    assert not backward(params, fwd, truncate=2).da0.any()


def test_hidden_gradients_are_total_derivatives() -> None:
    """dL_T/da_t from the backward (what the diagnostics plot) equals finite differences:
    restart the forward at step t+1 from a perturbed a_t and watch L_T."""
    rng = np.random.default_rng(9)
    params = make(10, L=2)
    T = 6
    tokens, targets = rng.integers(0, 4, (2, T)), rng.integers(0, 4, (2, T))
    weights = np.zeros((2, T))
    weights[:, -1] = 1.0  # only L_T counts
    fwd = forward(params, tokens, targets, reduction=weights)
    da = backward(params, fwd).da
    for t in range(T - 1):
        a_t = np.stack([a[:, t] for a in fwd.a])  # (L, B, H)
        rest = weights[:, t + 1 :]
        numeric = numerical_gradient(
            lambda a_t=a_t, t=t, rest=rest: (
                forward(
                    params, tokens[:, t + 1 :], targets[:, t + 1 :], a0=a_t, reduction=rest
                ).loss
            ),
            a_t,
        )
        # top layer: a_t^1 reaches L_T only through step t+1
        np.testing.assert_allclose(da[1][:, t], numeric[1], rtol=1e-6, atol=1e-10)
        # layer 0: directly, and through a_t^1 = tanh(W_aa a_{t-1}^1 + W_ax a_t^0 + b_a)
        through_top = (numeric[1] * (1 - fwd.a[1][:, t] ** 2)) @ params.W_ax[1]
        np.testing.assert_allclose(da[0][:, t], numeric[0] + through_top, rtol=1e-6, atol=1e-10)


def test_reference_imports_numpy_only() -> None:
    code = (
        "import sys, rnnkit.reference\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')"
        " or (m.startswith('rnnkit.') and not m.startswith(('rnnkit.reference', 'rnnkit.version'))))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
