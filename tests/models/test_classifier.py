"""The sequence classifier: padding never changes a result, gradients equal finite
differences, the Elman core equals the NumPy reference, training lowers the loss, and a
language model's weights map into it by token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import ModelConfig, RNNLanguageModel
from rnnkit.models.classifier import POOLINGS, ClassifierConfig, SequenceClassifier
from rnnkit.reference import layer_forward


def tiny(
    pooling: str = "last",
    bidirectional: bool = False,
    num_classes: int = 3,
    cell: str = "rnn",
    input: str = "tokens",
    num_layers: int = 1,
    skip: bool = False,
    seed: int = 0,
    dropout: float = 0.0,
) -> SequenceClassifier:
    torch.manual_seed(seed)
    cfg = ClassifierConfig(
        num_classes=num_classes,
        input=input,
        vocab_size=7,
        embedding_size=3,
        num_features=4,
        hidden_size=5,
        num_layers=num_layers,
        cell=cell,
        bidirectional=bidirectional,
        skip=skip,
        pooling=pooling,
        dropout=dropout,
    )
    return SequenceClassifier(cfg).double().eval()


def padded(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
    return x, torch.tensor([len(s) for s in seqs])


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@torch.no_grad()
def test_padding_never_changes_probabilities(pooling: str, bidirectional: bool, cell: str) -> None:
    model = tiny(pooling, bidirectional, cell=cell, num_layers=2, skip=cell == "lstm")
    sentence = [3, 1, 4, 1]
    alone = model.probabilities(*padded([sentence]))[0]
    others = [[2, 6, 5, 3, 5, 6, 2, 1], [5], [6, 2]]
    for k in range(len(others) + 1):
        batch = [*others[:k], sentence, *others[k:]]
        x, lengths = padded(batch)
        got = model.probabilities(x, lengths)[k]
        torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-12)
    # the padding's value does not matter either
    x, lengths = padded([others[0], sentence])
    x[1, len(sentence) :] = 6
    torch.testing.assert_close(model.probabilities(x, lengths)[1], alone, rtol=1e-12, atol=1e-12)
    assert float(alone.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_loss_gradient_equals_finite_differences(num_classes: int, pooling: str) -> None:
    model = tiny(pooling, bidirectional=True, num_classes=num_classes, input="frames")
    torch.manual_seed(1)
    frames = torch.randn(3, 4, 4, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 3])
    labels = torch.tensor([1, 0, num_classes - 1])
    names, params = zip(*model.named_parameters())

    # functional_call runs forward(); route it to loss through a tiny wrapper
    class LossOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor, n: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.m.loss(x, n, y)

    wrapper = LossOnly()
    wnames = [f"m.{n}" for n in names]

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(wrapper, dict(zip(wnames, ps)), (x, lengths, labels))

    inputs = (frames.requires_grad_(), *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@torch.no_grad()
def test_binary_head_is_sigmoid_with_both_columns() -> None:
    model = tiny("max", num_classes=2)
    x, lengths = padded([[1, 2, 3], [4, 5]])
    logits = model.logits(x, lengths)
    assert logits.shape == (2, 1)
    probs = model.probabilities(x, lengths)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, dtype=torch.float64))
    labels = torch.tensor([1, 0])
    expected = -(torch.log(probs[0, 1]) + torch.log(probs[1, 0])) / 2
    torch.testing.assert_close(model.loss(x, lengths, labels), expected)


def test_elman_core_equals_numpy_reference() -> None:
    model = tiny("last", num_layers=2)
    x, lengths = padded([[1, 2, 3, 4, 5], [6, 5]])
    emb = model.embedding(x).detach()  # type: ignore[misc]
    outputs, final = model.core(emb, lengths)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for i, n in enumerate(lengths.tolist()):
        a = emb[i : i + 1, :n].numpy()
        for k in range(2):
            b_a = sd[f"core.rnn.bias_ih_l{k}"] + sd[f"core.rnn.bias_hh_l{k}"]
            W_ax, W_aa = sd[f"core.rnn.weight_ih_l{k}"], sd[f"core.rnn.weight_hh_l{k}"]
            a, _ = layer_forward(a, np.zeros((1, 5)), W_ax, W_aa, b_a, "tanh")
        np.testing.assert_allclose(outputs[i, :n].detach().numpy(), a[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(final[i].detach().numpy(), a[0, -1], rtol=1e-10, atol=1e-12)
        assert not outputs[i, n:].any()


def test_a_few_optimizer_steps_lower_the_loss() -> None:
    # label = whether token 1 occurs in the sentence: needs the whole sequence
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 7, rng.integers(2, 7))) for _ in range(32)]
    labels = torch.tensor([int(1 in s) for s in seqs])
    x, lengths = padded([[int(t) for t in s] for s in seqs])
    model = tiny("max", cell="gru", num_classes=2, dropout=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = float(model.loss(x, lengths, labels).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(x, lengths, labels)
        loss.backward()
        opt.step()
    assert float(model.loss(x, lengths, labels).detach()) < 0.5 * first


def lm_state(cell: str = "rnn", hidden: int = 5, emb: int = 3, layers: int = 1) -> dict:
    torch.manual_seed(3)
    lm = RNNLanguageModel(
        ModelConfig(vocab_size=4, cell=cell, hidden_size=hidden, embedding_size=emb,
                    num_layers=layers)
    )  # fmt: skip
    return {k: v.double() for k, v in lm.state_dict().items()}


def test_init_from_lm_maps_embedding_rows_by_token() -> None:
    state = lm_state(layers=2)
    lm_tokens = ["<unk>", "good", "bad", "film"]
    own = ["<unk>", "film", "plot", "good", "x", "y", "z"]  # 7 rows, "bad" absent
    model = tiny("last")
    before = model.embedding.weight.detach().clone()  # type: ignore[union-attr]
    summary = model.init_from_lm(state, lm_tokens, own)
    w = model.embedding.weight.detach()  # type: ignore[union-attr]
    lm_w = state["embedding.weight"]
    for i, token in enumerate(own):
        if token in lm_tokens:
            torch.testing.assert_close(w[i], lm_w[lm_tokens.index(token)])
        else:
            torch.testing.assert_close(w[i], before[i])
    torch.testing.assert_close(model.core.rnn.weight_hh_l0, state["rnn.weight_hh_l0"])  # type: ignore[union-attr]
    assert "3 of 7 embedding rows" in summary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(cell="gru"), "cell is gru"), (dict(hidden=6), "hidden size is 6"),
     (dict(emb=4), "embedding size is 4")],
)  # fmt: skip
def test_init_from_lm_refuses_disagreeing_models(kwargs: dict, message: str) -> None:
    model = tiny("last")
    with pytest.raises(ConfigError, match=message):
        model.init_from_lm(lm_state(**kwargs), ["<unk>", "a", "b", "c"], ["<unk>"] * 7)


@pytest.mark.parametrize(
    ("settings", "flag"),
    [(dict(pooling="avg"), "--pooling"), (dict(cell="rnnn"), "--cell"),
     (dict(num_classes=1), "at least 2 classes"), (dict(colour=1), "unknown classifier")],
)  # fmt: skip
def test_config_errors_are_one_sentence(settings: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag) as info:
        ClassifierConfig.from_dict({"vocab_size": 5, **settings})
    assert str(info.value).endswith(".")


def test_config_round_trips() -> None:
    cfg = ClassifierConfig(vocab_size=9, pooling="attention", bidirectional=True)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
