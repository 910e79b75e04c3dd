"""The sequence tagger: padding never changes a result, gradients equal finite differences,
the Elman core equals the NumPy reference, and both losses fall when trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models.tagger import SequenceTagger, TagBatch, TaggerConfig
from rnnkit.reference import Params, forward


def tiny(seed: int = 0, **kw: object) -> SequenceTagger:
    settings: dict = dict(vocab_size=7, num_labels=3, embedding_size=4, hidden_size=3, dropout=0.0)
    settings.update(kw)
    torch.manual_seed(seed)
    return SequenceTagger(TaggerConfig(**settings)).double()


def sentence(n: int, seed: int, chars: bool = True) -> tuple:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 7, n).tolist()
    labels = rng.integers(0, 3, n).tolist()
    feats = [rng.integers(0, 4, n).tolist()]
    cs = [rng.integers(1, 5, rng.integers(1, 5)).tolist() for _ in range(n)] if chars else None
    return words, labels, feats, cs


def make_batch(sents: list[tuple], chars: bool = True) -> TagBatch:
    """Sentences as a batch; the extra column and characters go with ``chars``."""
    return TagBatch.from_lists(
        [s[0] for s in sents],
        [s[1] for s in sents],
        [s[2] for s in sents] if chars else (),
        [s[3] for s in sents] if chars else None,
    )


FULL = dict(
    extra_vocab_sizes=[4],
    extra_embedding_size=2,
    char_features=True,
    char_vocab_size=5,
    char_embedding_size=2,
    char_hidden_size=2,
)


@pytest.mark.parametrize(
    "kw",
    [
        dict(cell="lstm", crf=True, **FULL),
        dict(cell="gru", crf=False, num_layers=2, skip=True, **FULL),
        dict(cell="rnn", crf=True, bidirectional=False, num_layers=2),
    ],
)
def test_padding_changes_nothing(kw: dict) -> None:
    model = tiny(1, **kw).eval()
    chars = bool(kw.get("char_features"))
    target = sentence(3, seed=5, chars=chars)
    alone = make_batch([target], chars)
    mixed = make_batch([sentence(6, 6, chars), target, sentence(1, 7, chars)], chars)
    with torch.no_grad():
        e_alone, e_mixed = model.emissions(alone), model.emissions(mixed)
    torch.testing.assert_close(e_mixed[1, :3], e_alone[0], rtol=1e-12, atol=1e-12)
    assert model.predict(mixed)[1] == model.predict(alone)[0]
    assert [len(p) for p in model.predict(mixed)] == [6, 3, 1]
    # the loss of the batch is the token-weighted mean of its sentences' losses
    with torch.no_grad():
        sents = (sentence(6, 6, chars), target, sentence(1, 7, chars))
        parts = [model.loss(make_batch([s], chars)) for s in sents]
        loss, n = model.loss(mixed)
    assert n == 10
    want = sum(float(part) * k for part, k in parts) / 10
    assert float(loss) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("crf", [False, True])
def test_gradient_matches_finite_differences(crf: bool) -> None:
    model = tiny(2, cell="gru", hidden_size=2, embedding_size=2, crf=crf, **FULL)
    batch = make_batch([sentence(3, 1), sentence(2, 2)])
    wrapper = LossOf(model)
    names = [n for n, _ in wrapper.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in wrapper.parameters())

    def f(*ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(wrapper, dict(zip(names, ps)), (batch,))

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6)


class LossOf(torch.nn.Module):
    """forward = the tagger's loss, so torch.func.functional_call can swap the parameters."""

    def __init__(self, model: SequenceTagger) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: TagBatch) -> torch.Tensor:
        return self.model.loss(batch)[0]


def test_elman_core_equals_numpy_reference() -> None:
    model = tiny(3, cell="rnn", bidirectional=False, num_layers=2, nonlinearity="relu")
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.6, 0.6)
    sents = [sentence(4, s, chars=False) for s in (1, 2)]
    batch = make_batch(sents, chars=False)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = Params(
        W_ax=[sd[f"core.rnn.weight_ih_l{k}"] for k in range(2)],
        W_aa=[sd[f"core.rnn.weight_hh_l{k}"] for k in range(2)],
        b_a=[sd[f"core.rnn.bias_ih_l{k}"] + sd[f"core.rnn.bias_hh_l{k}"] for k in range(2)],
        W_ya=sd["emission.weight"],
        b_y=sd["emission.bias"],
    )
    assert batch.labels is not None
    x = model.inputs(batch).detach().numpy()
    ref = forward(params, x, batch.labels.numpy(), "relu", reduction="mean")
    with torch.no_grad():
        a, _ = model.core(model.inputs(batch), batch.lengths)
        e = model.emissions(batch)
        loss, _ = model.loss(batch)
    np.testing.assert_allclose(a.numpy(), ref.a[-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(e.numpy(), ref.o, rtol=1e-10, atol=1e-12)
    assert float(loss) == pytest.approx(ref.loss, rel=1e-10)


@pytest.mark.parametrize("crf", [False, True])
def test_loss_falls_on_a_rule(crf: bool) -> None:
    """Tag a token 2 when it repeats the previous token, else its parity: needs context."""
    rng = np.random.default_rng(0)
    words = rng.integers(0, 5, (16, 6))
    words[:, 3] = words[:, 2]  # make repeats common
    labels = words % 2
    labels[:, 1:][words[:, 1:] == words[:, :-1]] = 2
    batch = TagBatch.from_lists(words.tolist(), labels.tolist())
    torch.manual_seed(0)
    model = SequenceTagger(TaggerConfig(5, 3, embedding_size=8, hidden_size=16, crf=crf))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = model.loss(batch)[0].item()
    for _ in range(40):
        opt.zero_grad()
        loss, _ = model.loss(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first
    predicted = np.array(model.eval().predict(batch))
    assert (predicted == labels).mean() > 0.95


def test_config_validation_and_round_trip() -> None:
    cfg = TaggerConfig(10, 4, crf=True, extra_vocab_sizes=[3])
    assert TaggerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"did you mean 'gru'\?\)\.$"):
        TaggerConfig(10, 4, cell="gruu")
    with pytest.raises(ConfigError, match="unknown tagger setting 'hiden_size'"):
        TaggerConfig.from_dict({"vocab_size": 3, "num_labels": 2, "hiden_size": 4})
    with pytest.raises(ConfigError, match=r"char_vocab_size must be at least 1, not 0\.$"):
        TaggerConfig(10, 4, char_features=True)
    with pytest.raises(ConfigError, match="only to --cell rnn"):
        TaggerConfig(10, 4, nonlinearity="relu")
    with pytest.raises(ConfigError, match=r"--dropout must be in \[0, 1\)"):
        TaggerConfig(10, 4, dropout=1.0)
