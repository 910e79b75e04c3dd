"""Sampling: seeds repeat, greedy is the argmax, top-k and top-p keep what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.cli import main
from rnnkit.generation import filter_logits
from rnnkit.text import decode


def test_same_seed_same_samples(tiny_run: Path) -> None:
    a = rnnkit.generate(tiny_run, "First", max_new_tokens=40, num_samples=3, seed=11, device="cpu")
    b = rnnkit.generate(tiny_run, "First", max_new_tokens=40, num_samples=3, seed=11, device="cpu")
    assert a == b and len(a) == 3 and all(len(s) == 40 for s in a)


def test_greedy_equals_top_k_1_and_is_the_argmax(tiny_run: Path) -> None:
    greedy = rnnkit.generate(tiny_run, "Speak", max_new_tokens=30, greedy=True, device="cpu")
    top1 = rnnkit.generate(tiny_run, "Speak", max_new_tokens=30, top_k=1, seed=3, device="cpu")
    assert greedy == top1
    run = rnnkit.load(tiny_run)
    from rnnkit.text import encode_text

    ids = encode_text("Speak", run.vocab).ids.tolist()
    logits, _ = run.model(torch.tensor([ids]))
    assert greedy[0][0] == run.vocab.tokens[int(logits[0, -1].argmax())]


def test_generate_cli_prints_prompt_and_continuation(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["generate", str(tiny_run), "--prompt", "All:", "--max-new-tokens", "25", "--seed", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("All:")
    api = rnnkit.generate(tiny_run, "All:", max_new_tokens=25, seed=1)
    assert out == "All:" + api[0] + "\n"


@pytest.mark.parametrize(("level", "boundary"), [("char", "\n"), ("word", "</s>")])
def test_no_prompt_starts_from_a_line_boundary(
    request: pytest.FixtureRequest, level: str, boundary: str
) -> None:
    """Without a prompt the first token is drawn from the model's prediction after a line
    boundary (a newline for characters, </s> for words), and after no other token."""
    path = request.getfixturevalue("tiny_run" if level == "char" else "word_runs")
    run = rnnkit.load(path if level == "char" else path["stream"])
    vocab = run.vocab
    with torch.no_grad():  # row i: the next-token distribution after token i alone
        logits, _ = run.model(torch.arange(len(vocab))[:, None])
    after = torch.softmax(logits[:, -1].double(), dim=-1)
    n = 4000
    firsts = rnnkit.generate(run, max_new_tokens=1, num_samples=n, seed=0, allow_unk=True)
    ids = {decode([i], vocab): i for i in range(len(vocab))}  # the text of each token
    seen = torch.bincount(torch.tensor([ids[t] for t in firsts]), minlength=len(vocab)) / n
    distance = 0.5 * (after - seen).abs().sum(dim=-1)  # total variation, per start token
    assert int(distance.argmin()) == vocab.index[boundary], distance
    assert float(distance.min()) < 0.08, distance


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=2, max_size=12),
    st.integers(1, 12),
    st.floats(0.05, 1.0),
)
def test_filter_logits_keeps_top_k_and_the_nucleus(values: list[float], k: int, p: float) -> None:
    logits = torch.tensor(values, dtype=torch.float64)
    kept = torch.isfinite(filter_logits(logits, top_k=k))
    assert int(kept.sum()) >= min(k, len(values))
    assert bool(kept[logits.argmax()])
    probs = torch.softmax(logits, -1)
    nucleus = torch.isfinite(filter_logits(logits, top_p=p))
    assert float(probs[nucleus].sum()) >= p - 1e-9  # the kept mass reaches p
    # and it is the smallest such set: dropping its least likely member falls below p
    smallest = probs[nucleus].min()
    assert float(probs[nucleus].sum() - smallest) < p + 1e-9 or int(nucleus.sum()) == 1


def test_draw_follows_the_probabilities_and_never_draws_a_zero() -> None:
    from rnnkit.models.output import draw

    gen = torch.Generator().manual_seed(0)
    weights = torch.tensor([[0.2, 0.0, 1.2, 0.6, 0.0]]).repeat(40_000, 1)  # unnormalised
    counts = torch.bincount(draw(weights, gen), minlength=5).double() / 40_000
    expected = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.float64)
    assert counts[1] == 0 and counts[4] == 0
    torch.testing.assert_close(counts, expected, atol=0.01, rtol=0)
