"""The fixed-window LM of Bengio et al.: its equation, carried state, a distribution."""

from __future__ import annotations

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models import ModelConfig, WindowLanguageModel, make_model


def model(context: int = 3, **kw: object) -> WindowLanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=11, arch="window", context=context, hidden_size=7, **kw)  # type: ignore[arg-type]
    m = make_model(cfg)
    assert isinstance(m, WindowLanguageModel)
    return m.double().eval()


@pytest.mark.parametrize("context", [1, 2, 4])
def test_window_lm_is_bengio_equation(context: int) -> None:
    m = model(context, embedding_size=5)
    tokens = torch.randint(0, 11, (2, 9))
    logits, _ = m(tokens)
    C, Hw, d = m.embedding.weight, m.hidden.weight, m.hidden.bias
    U, b = m.head.linear.weight, m.head.linear.bias
    for i in range(2):
        for t in range(9):
            prev = [C[tokens[i, j]] if j >= 0 else torch.zeros(5, dtype=C.dtype)
                    for j in range(t - context + 1, t + 1)]  # fmt: skip
            x = torch.cat(prev)
            expect = U @ torch.tanh(Hw @ x + d) + b
            torch.testing.assert_close(logits[i, t], expect)


def test_chunked_with_carried_state_equals_one_shot() -> None:
    m = model(4)
    tokens = torch.randint(0, 11, (3, 10))
    whole, _ = m(tokens)
    a, state = m(tokens[:, :2])  # shorter than the window: the state still carries
    b, state = m(tokens[:, 2:7], state)
    c, _ = m(tokens[:, 7:], state)
    torch.testing.assert_close(torch.cat([a, b, c], 1), whole)


def test_log_probs_sum_to_one() -> None:
    m = model(2)
    h, _ = m.features(torch.randint(0, 11, (2, 5)))
    total = m.head.log_probs(h).exp().sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total))


def test_window_conflicts() -> None:
    with pytest.raises(ConfigError, match="--context must be at least 1"):
        ModelConfig(vocab_size=5, arch="window", context=0)
    with pytest.raises(ConfigError, match="leave out --cell"):
        ModelConfig(vocab_size=5, arch="window", cell="lstm")
    with pytest.raises(ConfigError, match="did you mean 'window'"):
        ModelConfig(vocab_size=5, arch="windw")
