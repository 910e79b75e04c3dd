"""Skip (residual) connections in the language model: layer k >= 1 outputs
f_k(a^(k-1)) + a^(k-1). The stack equals a hand-written loop of the equations, one token at a
time equals a whole window, a carried state equals one long window, and runs saved before the
option existed still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.models import ModelConfig, RNNLanguageModel, State
from rnnkit.training.checkpoint import BEST, VOCAB, load_run, save_weights, write_config


def skip_model(cell: str = "rnn", g: str = "tanh", layers: int = 3, **kw: Any) -> RNNLanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=7, cell=cell, nonlinearity=g, hidden_size=5, num_layers=layers, skip=True, **kw
    )
    model = RNNLanguageModel(cfg).double().eval()
    with torch.no_grad():  # weights large enough for every nonlinearity to matter
        for p in model.parameters():
            p.uniform_(-0.7, 0.7)
    return model


def cell_by_hand(cell: str, g: str, x: Tensor, h: Tensor, c: Tensor, w: tuple) -> tuple:
    """One step of one layer, as the torch documentation writes the cells."""
    W_ax, W_aa, b_ih, b_hh = w
    gi, gh = x @ W_ax.T + b_ih, h @ W_aa.T + b_hh
    if cell == "rnn":  # a_t = g1(W_aa a_{t-1} + W_ax x_t + b_a)
        return (torch.tanh if g == "tanh" else torch.relu)(gi + gh), c
    if cell == "gru":
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r, u = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - u) * n + u * h, c
    i, f, gg, o = (gi + gh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
    return torch.sigmoid(o) * torch.tanh(c), c


def skip_by_hand(
    model: RNNLanguageModel, tokens: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Layer by layer: a^(0) = f_0(x); a^(k) = f_k(a^(k-1)) + a^(k-1); each layer's own state
    h^(k) (and c^(k)) carried. Returns the top a (B, T, H) and the final h, c (L, B, H)."""
    cfg = model.config
    a = model.inputs(tokens)
    hs, cs = [], []
    for k in range(cfg.num_layers):
        w = model.layer_weights(k)
        h, c = h0[k], c0[k]
        outs = []
        for t in range(tokens.shape[1]):
            h, c = cell_by_hand(cfg.cell, cfg.nonlinearity, a[:, t], h, c, w)
            outs.append(h)
        f = torch.stack(outs, 1)
        a = f if k == 0 else f + a
        hs.append(h)
        cs.append(c)
    return a, torch.stack(hs), torch.stack(cs)


CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


@pytest.mark.parametrize(("cell", "g"), CASES)
@pytest.mark.parametrize("one_hot", [False, True])
def test_skip_features_equal_the_equations(cell: str, g: str, one_hot: bool) -> None:
    model = skip_model(cell, g, one_hot=one_hot)
    assert model.rnn is None and model.layers is not None and len(model.layers) == 3
    tokens = torch.randint(0, 7, (3, 8))
    h0 = torch.randn(3, 3, 5, dtype=torch.float64)  # a carried state, not only zeros
    c0 = torch.randn(3, 3, 5, dtype=torch.float64)
    state: State = (h0, c0) if cell == "lstm" else h0
    with torch.no_grad():
        a, final = model.features(tokens, state)
        expected, h, c = skip_by_hand(model, tokens, h0, c0 if cell == "lstm" else h0)
    torch.testing.assert_close(a, expected, rtol=1e-12, atol=1e-12)
    got_h = final[0] if isinstance(final, tuple) else final
    torch.testing.assert_close(got_h, h, rtol=1e-12, atol=1e-12)  # each layer's own h^(k)
    if isinstance(final, tuple):
        torch.testing.assert_close(final[1], c, rtol=1e-12, atol=1e-12)
    # the skip is really there: the same weights without it give other features
    plain = RNNLanguageModel(ModelConfig(**{**model.config.to_dict(), "skip": False})).double()
    for k in range(3):
        for mine, theirs in zip(model.layer_weights(k), plain.layer_weights(k)):
            theirs.data.copy_(mine)
    assert not torch.allclose(plain.eval().features(tokens, state)[0], a)


@pytest.mark.parametrize(("cell", "g"), CASES)
def test_skip_step_equals_features_one_token_at_a_time(cell: str, g: str) -> None:
    model = skip_model(cell, g)
    tokens = torch.randint(0, 7, (3, 6))
    with torch.no_grad():
        whole, final = model.features(tokens)
        _, state = model.features(tokens[:, :1])
        for t in range(1, 6):
            h, state = model.step(tokens[:, t], state)
            torch.testing.assert_close(h, whole[:, t])
    for got, want in zip(
        torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(final)
    ):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_skip_state_carried_across_windows_equals_one_window(cell: str) -> None:
    model = skip_model(cell)
    tokens = torch.randint(0, 7, (2, 10))
    with torch.no_grad():
        whole, _ = model(tokens)
        first, state = model(tokens[:, :4])
        second, _ = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    zero = model.init_state(2)
    assert (zero[0] if isinstance(zero, tuple) else zero).shape == (3, 2, 5)


def test_skip_weight_dropout_masks_each_w_aa_while_training() -> None:
    """DropConnect with skip: one mask per layer's W_aa, drawn (in layer order) before the
    stack runs, as in the fused path; evaluation is the plain skip network."""
    p = 0.4
    model = skip_model(weight_dropout=p)
    tokens = torch.randint(0, 7, (3, 6))
    zeros = torch.zeros(3, 3, 5, dtype=torch.float64)
    model.train()
    torch.manual_seed(1)
    masks = [
        torch.nn.functional.dropout(torch.ones(5, 5, dtype=torch.float64), p) for _ in range(3)
    ]
    assert any((m == 0).any() for m in masks)
    torch.manual_seed(1)
    got, _ = model.features(tokens)
    plain = skip_model()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        for k, m in enumerate(masks):
            plain.layer_weights(k)[1].mul_(m)
        expected, _, _ = skip_by_hand(plain, tokens, zeros, zeros)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    grad = model.layer_weights(2)[1].grad
    assert grad is not None and torch.all(grad[masks[2] == 0] == 0) and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.features(tokens)[0], skip_by_hand(model, tokens, zeros, zeros)[0]
        )


def test_skip_with_one_layer_is_the_fused_model() -> None:
    model = RNNLanguageModel(ModelConfig(vocab_size=7, hidden_size=5, skip=True))
    assert model.layers is None and "rnn.weight_hh_l0" in model.state_dict()


def test_skip_is_for_recurrent_models_only() -> None:
    with pytest.raises(ConfigError, match="--arch rnn only"):
        ModelConfig(vocab_size=7, arch="window", skip=True)


def test_a_run_saved_before_skip_existed_still_loads(tmp_path: Path) -> None:
    from rnnkit.text import Vocab

    cfg = ModelConfig(vocab_size=4, hidden_size=5, num_layers=2)
    old = cfg.to_dict()
    del old["skip"]  # config.json as rnnkit wrote it before the option existed
    assert ModelConfig.from_dict(old).skip is False
    run = tmp_path / "old"
    run.mkdir()
    write_config(run, {"model": old})
    Vocab(["<unk>", "a", "b", "c"], "char").save(run / VOCAB)
    torch.manual_seed(0)
    saved = RNNLanguageModel(cfg)
    save_weights(saved, run / BEST)
    loaded = load_run(run).model
    assert isinstance(loaded, RNNLanguageModel) and loaded.rnn is not None
    for name, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_train_cli_skip_writes_it_and_resumes(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", str(tiny_corpus), "--out", str(run), "--layers", "3", "--skip",
            "--hidden", "8", "--batch-size", "4", "--bptt", "8", "--max-steps", "3",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["model"]["skip"] is True
    model = load_run(run).model
    assert isinstance(model, RNNLanguageModel) and model.layers is not None
    assert main(["train", "--resume", str(run), "--max-steps", "2", "--no-progress"]) == 0
    assert main(["generate", str(run), "--max-new-tokens", "5"]) == 0
    capsys.readouterr()
