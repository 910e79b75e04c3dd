"""The language model computes exactly the seeds' equations."""

from __future__ import annotations

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import ModelConfig, RNNLanguageModel


def elman_by_hand(model: RNNLanguageModel, tokens: torch.Tensor) -> torch.Tensor:
    """a_t = g1(W_aa a_{t-1} + W_ax x_t + b_a), y_t = softmax(W_ya a_t + b_y), a_0 = 0."""
    cfg = model.config
    g1 = torch.tanh if cfg.nonlinearity == "tanh" else torch.relu
    x = model.inputs(tokens)  # (B, T, E)
    B, T, _ = x.shape
    for k in range(cfg.num_layers):
        W_ax = getattr(model.rnn, f"weight_ih_l{k}")
        W_aa = getattr(model.rnn, f"weight_hh_l{k}")
        b_a = getattr(model.rnn, f"bias_ih_l{k}") + getattr(model.rnn, f"bias_hh_l{k}")
        a = torch.zeros(B, cfg.hidden_size, dtype=x.dtype)
        outs = []
        for t in range(T):
            a = g1(a @ W_aa.T + x[:, t] @ W_ax.T + b_a)
            outs.append(a)
        x = torch.stack(outs, dim=1)
    W_ya, b_y = model.head.linear.weight, model.head.linear.bias
    return torch.softmax(x @ W_ya.T + b_y, dim=-1)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("one_hot", [False, True])
def test_elman_equals_the_equations(nonlinearity: str, num_layers: int, one_hot: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=7,
        hidden_size=5,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        one_hot=one_hot,
    )
    model = RNNLanguageModel(cfg).double().eval()
    tokens = torch.randint(0, 7, (3, 9))
    logits, _ = model(tokens)
    expected = elman_by_hand(model, tokens)
    torch.testing.assert_close(torch.softmax(logits, -1), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_distributions_sum_to_one_and_log_prob_matches(cell: str) -> None:
    torch.manual_seed(1)
    model = RNNLanguageModel(
        ModelConfig(vocab_size=11, cell=cell, hidden_size=6, num_layers=2)
    ).double()
    model.eval()
    tokens = torch.randint(0, 11, (2, 7))
    targets = torch.randint(0, 11, (2, 7))
    a, _ = model.features(tokens)
    logp = model.head.log_probs(a)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 7, dtype=torch.float64))
    picked, _ = model.log_prob(tokens, targets)
    torch.testing.assert_close(picked, logp.gather(-1, targets[..., None]).squeeze(-1))
    loss, _ = model.loss(tokens, targets)
    torch.testing.assert_close(loss, -picked.mean())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_state_carried_across_calls_equals_one_call(cell: str) -> None:
    torch.manual_seed(2)
    model = RNNLanguageModel(ModelConfig(vocab_size=9, cell=cell, hidden_size=4)).double().eval()
    tokens = torch.randint(0, 9, (2, 10))
    whole, _ = model(tokens)
    first, state = model(tokens[:, :4])
    second, _ = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_tied_weights_share_one_tensor() -> None:
    model = RNNLanguageModel(ModelConfig(vocab_size=10, hidden_size=8, tie_weights=True))
    assert model.head.linear.weight is model.embedding.weight  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(hidden_size=8, embedding_size=4, tie_weights=True),
            "--tie-weights needs --embedding-size equal",
        ),
        (dict(tie_weights=True, one_hot=True), "conflicts with --one-hot"),
        (dict(cell="lstm", nonlinearity="relu"), "applies only to --cell rnn"),
        (dict(cell="lsmt"), "did you mean 'lstm'"),
        (dict(dropout=1.5), "--dropout must be in"),
        (dict(weight_dropout=1.0), "--weight-dropout must be in"),
        (dict(arch="window", weight_dropout=0.5), "--arch rnn only"),
    ],
)
def test_bad_model_settings_are_one_clear_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(vocab_size=10, **kwargs)


@pytest.mark.parametrize(
    ("cell", "nonlinearity", "layers"),
    [("rnn", "tanh", 1), ("rnn", "relu", 2), ("gru", "tanh", 2), ("lstm", "tanh", 2)],
)
def test_one_token_step_equals_the_fused_forward(cell: str, nonlinearity: str, layers: int) -> None:
    """Generation's single-step cell path computes what the fused nn.RNN/GRU/LSTM does."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=11, cell=cell, nonlinearity=nonlinearity, hidden_size=8, num_layers=layers
    )
    model = RNNLanguageModel(cfg).double().eval()
    tokens = torch.randint(0, 11, (3, 6))
    h_all, _ = model.features(tokens)
    _, state = model.features(tokens[:, :1])
    for t in range(1, 6):
        h, state = model.step(tokens[:, t], state)
        torch.testing.assert_close(h, h_all[:, t])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_weight_dropout_drops_entries_of_w_aa_while_training_only(num_layers: int) -> None:
    """DropConnect: training computes the equations with W_aa * mask / (1 - p), one mask per
    layer and call; evaluation is the plain Elman network; gradients reach the weights."""
    torch.manual_seed(0)
    p = 0.4
    cfg = ModelConfig(vocab_size=7, hidden_size=5, num_layers=num_layers, weight_dropout=p)
    model = RNNLanguageModel(cfg)
    plain = RNNLanguageModel(ModelConfig(vocab_size=7, hidden_size=5, num_layers=num_layers))
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 7, (3, 6))

    model.eval()
    torch.testing.assert_close(model(tokens)[0], plain(tokens)[0])

    model.train()
    torch.manual_seed(1)
    masks = [torch.nn.functional.dropout(torch.ones(5, 5), p) for _ in range(num_layers)]
    assert any((m == 0).any() for m in masks)  # the test draws a real mask
    torch.manual_seed(1)
    got = torch.log_softmax(model(tokens)[0], -1)
    with torch.no_grad():
        for k, m in enumerate(masks):
            getattr(plain.rnn, f"weight_hh_l{k}").mul_(m)
    expected = torch.log(elman_by_hand(plain, tokens))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    got.sum().backward()
    grad = model.rnn.weight_hh_l0.grad
    assert grad is not None
    # a dropped entry of W_aa takes no part in the forward pass, so it gets no gradient
    assert torch.all(grad[masks[0] == 0] == 0) and grad.abs().sum() > 0


def test_locked_dropout_uses_one_mask_for_every_time_step() -> None:
    """Variational dropout: each (sequence, feature) is kept or dropped for the whole window,
    kept values scaled by 1 / (1 - p); evaluation leaves the input alone."""
    torch.manual_seed(0)
    p = 0.5
    cfg = ModelConfig(vocab_size=7, hidden_size=16, dropout=p, locked_dropout=True)
    model = RNNLanguageModel(cfg)
    x = torch.ones(4, 9, 16)
    model.train()
    dropped = model.drop(x)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # same mask at every t
    assert set(dropped.unique().tolist()) == {0.0, 1 / (1 - p)}
    assert not torch.equal(dropped[0], dropped[1])  # a mask of its own for each sequence
    model.eval()
    assert torch.equal(model.drop(x), x)
    # standard dropout draws a mask per time step
    plain = RNNLanguageModel(ModelConfig(vocab_size=7, hidden_size=16, dropout=p)).train()
    out = plain.drop(x)
    assert not torch.equal(out, out[:, :1].expand_as(out))


def test_locked_dropout_is_for_recurrent_models_only() -> None:
    with pytest.raises(ConfigError, match="--arch rnn only"):
        ModelConfig(vocab_size=7, arch="window", dropout=0.2, locked_dropout=True)
