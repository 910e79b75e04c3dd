"""The NumPy reference and rnnkit's torch Elman model agree (float64, dropout 0) on outputs,
loss and every gradient to 1e-8, for full and truncated BPTT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.models import ModelConfig, RNNLanguageModel, detach_state
from rnnkit.reference import (
    Params,
    backward,
    clip_by_norm,
    clip_by_value,
    forward,
    gradients_to_state_dict,
    loss_and_grads,
    sgd_step,
)

TOL = dict(rtol=1e-8, atol=1e-10)


def torch_model(
    V: int, H: int, L: int, nonlinearity: str, one_hot: bool, E: int | None, seed: int
) -> RNNLanguageModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=V,
        cell="rnn",
        nonlinearity=nonlinearity,
        hidden_size=H,
        num_layers=L,
        embedding_size=None if one_hot else E,
        one_hot=one_hot,
        dropout=0.0,
    )
    model = RNNLanguageModel(cfg).double()
    with torch.no_grad():  # every parameter non-zero, the biases included
        for p in model.parameters():
            p.uniform_(-0.6, 0.6)
    return model


def to_numpy(model: torch.nn.Module) -> Params:
    return Params.from_state_dict({k: v.detach().numpy() for k, v in model.state_dict().items()})


def torch_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def compare(
    V: int,
    H: int,
    L: int,
    B: int,
    T: int,
    nonlinearity: str,
    one_hot: bool,
    E: int | None,
    truncate: int | None,
    seed: int,
) -> None:
    model = torch_model(V, H, L, nonlinearity, one_hot, E, seed)
    params = to_numpy(model)
    rng = np.random.default_rng(seed)
    tokens, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))

    fwd = forward(params, tokens, targets, nonlinearity, reduction="mean")
    ref = backward(params, fwd, truncate=truncate).grads

    # torch: windows of `truncate` steps, the state detached in between; each window's mean
    # loss weighted by its share of the B*T positions, so the sum is the mean over all.
    k = truncate or T
    x, y = torch.from_numpy(tokens), torch.from_numpy(targets)
    state, total, logits = None, 0.0, []
    for s in range(0, T, k):
        xw, yw = x[:, s : s + k], y[:, s : s + k]
        out, _ = model(xw, state)
        loss, state = model.loss(xw, yw, state)
        (loss * xw.shape[1] / T).backward()
        total += float(loss.detach()) * xw.shape[1] / T
        logits.append(out.detach().numpy())
        state = detach_state(state)
    assert state is not None and isinstance(state, torch.Tensor)

    np.testing.assert_allclose(np.concatenate(logits, axis=1), fwd.o, **TOL)
    np.testing.assert_allclose(state.numpy(), fwd.state, **TOL)
    assert abs(total - fwd.loss) <= 1e-8 * max(1.0, abs(fwd.loss))
    expected = gradients_to_state_dict(ref)
    got = torch_grads(model)
    assert set(got) == set(expected)
    for name, g in got.items():
        np.testing.assert_allclose(g, expected[name], err_msg=name, **TOL)


@settings(max_examples=12, deadline=None)
@given(
    V=st.integers(2, 6),
    H=st.integers(1, 5),
    L=st.integers(1, 3),
    B=st.integers(1, 3),
    T=st.integers(1, 8),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    one_hot=st.booleans(),
    E=st.integers(1, 4),
    truncate=st.one_of(st.none(), st.integers(1, 4)),
    seed=st.integers(0, 2**16),
)
def test_reference_equals_torch(
    V: int,
    H: int,
    L: int,
    B: int,
    T: int,
    nonlinearity: str,
    one_hot: bool,
    E: int,
    truncate: int | None,
    seed: int,
) -> None:
    compare(V, H, L, B, T, nonlinearity, one_hot, E, truncate, seed)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("truncate", [None, 3])
def test_seeds_one_hot_input_equals_torch(nonlinearity: str, truncate: int | None) -> None:
    compare(4, 6, 2, 2, 9, nonlinearity, True, None, truncate, seed=11)


def test_saved_parameters_load_into_torch() -> None:
    model = torch_model(5, 4, 2, "tanh", False, 3, seed=1)
    params = to_numpy(model)
    fresh = torch_model(5, 4, 2, "tanh", False, 3, seed=2)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in params.to_state_dict().items()})
    tokens = torch.randint(0, 5, (2, 7))
    np.testing.assert_allclose(
        fresh(tokens)[0].detach().numpy(), model(tokens)[0].detach().numpy(), **TOL
    )


def test_gru_state_dict_is_refused() -> None:
    model = RNNLanguageModel(ModelConfig(vocab_size=5, cell="gru", hidden_size=4))
    with pytest.raises(ValueError, match="GRU or LSTM"):
        to_numpy(model)
    with pytest.raises(KeyError, match=r"head\.linear\.weight"):
        Params.from_state_dict(
            {"rnn.weight_hh_l0": np.zeros((3, 3))}
            | {
                f"rnn.{n}_l0": np.zeros(s)
                for n, s in [("weight_ih", (3, 2)), ("bias_ih", 3), ("bias_hh", 3)]
            }
        )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_sigmoid_binary_cross_entropy_equals_torch(nonlinearity: str) -> None:
    model = torch_model(3, 4, 2, nonlinearity, True, None, seed=5)
    params = to_numpy(model)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 3, (2, 6))
    bits = rng.integers(0, 2, (2, 6, 3)).astype(np.float64)
    _, grads, fwd = loss_and_grads(params, tokens, bits, nonlinearity, output="sigmoid")
    a, _ = model.features(torch.from_numpy(tokens))
    o = model.head.logits(a)
    loss = F.binary_cross_entropy_with_logits(o, torch.from_numpy(bits), reduction="sum") / 12
    loss.backward()
    np.testing.assert_allclose(torch.sigmoid(o).detach().numpy(), fwd.y, **TOL)
    assert abs(float(loss.detach()) - fwd.loss) <= 1e-10
    expected = gradients_to_state_dict(grads)
    for name, g in torch_grads(model).items():
        np.testing.assert_allclose(g, expected[name], err_msg=name, **TOL)


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_sgd_training_with_clipping_equals_torch(clip: str) -> None:
    """Five SGD steps with clipping: the same weights after each. torch's bias_hh is frozen at
    zero, since SGD on two biases would move their sum b_a twice as fast."""
    model = torch_model(4, 5, 2, "tanh", False, 3, seed=3)
    with torch.no_grad():
        for k in range(2):
            getattr(model.rnn, f"bias_hh_l{k}").zero_()
            getattr(model.rnn, f"bias_hh_l{k}").requires_grad_(False)
    params = to_numpy(model)
    rng = np.random.default_rng(3)
    tokens, targets = rng.integers(0, 4, (3, 8)), rng.integers(0, 4, (3, 8))
    x, y = torch.from_numpy(tokens), torch.from_numpy(targets)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(5):
        _, grads, _ = loss_and_grads(params, tokens, targets, reduction="sum")
        opt.zero_grad()
        loss, _ = model.loss(x, y)
        (loss * 24).backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        if clip == "norm":
            ref_norm = clip_by_norm(grads, 1.0)
            torch_norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            assert abs(ref_norm - float(torch_norm)) <= 1e-8 * ref_norm
        else:
            clip_by_value(grads, 0.05)
            torch.nn.utils.clip_grad_value_(trainable, 0.05)
        sgd_step(params, grads, lr=0.5)
        opt.step()
    for name, v in params.to_state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), v, err_msg=name, **TOL)
