"""Sampling: seeds repeat, greedy is the argmax, top-k and top-p keep what they promise; beam
search finds continuations at least as probable as greedy's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


# -- beam search (rnnkit.search through the language model) ----------------------------------


def _forced(model: Any, context: list[int], new: list[int]) -> float:
    """ln P(new | context) by one forward pass over context + new (teacher forcing)."""
    ids = torch.tensor([context + new])
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    logp = logits.double().log_softmax(-1)[0, len(context) - 1 :]
    return float(logp.gather(1, torch.tensor(new)[:, None]).sum())


def test_beam_1_is_greedy(tiny_run: Path) -> None:
    kw = dict(max_new_tokens=30, device="cpu")
    greedy = rnnkit.api.generate_scored(tiny_run, "First", greedy=True, **kw)
    assert rnnkit.api.generate_scored(tiny_run, "First", beam=1, **kw) == greedy


@pytest.mark.parametrize(("name", "prompt"), [("stream", "the cat"), ("sentence", "my friend")])
def test_a_wider_beam_is_at_least_as_probable_as_greedy(
    word_runs: dict[str, Path], name: str, prompt: str
) -> None:
    """On these prompts the beam finds a more probable continuation than greedy's; its
    scores are the model's log-probabilities, recomputed by a forced pass."""
    from rnnkit.generation import continue_context
    from rnnkit.text import encode_text

    run = rnnkit.load(word_runs[name])
    context = encode_text(prompt, run.vocab).ids.tolist()
    stop = None
    if name == "sentence":
        context, stop = [run.vocab.bos_id, *context], run.vocab.eos_id
    kw: dict[str, Any] = dict(stop_id=stop, banned=[run.vocab.unk_id])
    greedy = continue_context(run.model, context, 8, greedy=True, **kw)[0]
    beam = continue_context(run.model, context, 8, beam=8, n_best=3, **kw)
    assert len(beam) == 3 and beam[0].score > greedy.score + 0.01
    assert [h.score for h in beam] == sorted((h.score for h in beam), reverse=True)
    for h in [greedy, *beam]:
        assert h.score == pytest.approx(_forced(run.model, context, h.tokens), abs=1e-4)
        assert run.vocab.unk_id not in h.tokens
        assert len(h.tokens) == 8 or h.tokens[-1] == stop


def test_generate_cli_beam_n_best_on_a_sentence_run(
    word_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(word_runs["sentence"])
    args = ["generate", run, "--prompt", "the cat", "--max-new-tokens", "12"]
    assert main([*args, "--greedy"]) == 0
    greedy_out = capsys.readouterr().out
    assert main([*args, "--beam", "1"]) == 0
    assert capsys.readouterr().out == greedy_out
    assert main([*args, "--beam", "5", "--n-best", "3", "--alpha", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [float(line.split("= ")[1].rstrip(" -")) for line in lines[::2]]
    assert [line.split(":")[0] for line in lines[::2]] == ["--- 1", "--- 2", "--- 3"]
    assert all(line.startswith("the cat ") for line in lines[1::2])
    assert all(h < 0 for h in heads) and len(set(lines[1::2])) == 3
    # a sentence run's beam ends at </s>: shorter than the limit, without the marker
    api = rnnkit.generate(run, "the cat", max_new_tokens=12, beam=5, n_best=3, alpha=0.5)
    assert ["the cat" + t for t in api] == lines[1::2]
    assert all("</s>" not in t and len(t.split()) < 12 for t in api)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--beam", "0"], r"--beam must be at least 1, not 0\.\n"),
        (["--beam", "2", "--n-best", "3"], r"--n-best \(3\) must not exceed --beam \(2\)"),
        (["--beam", "2", "--temperature", "0.5"], r"--beam conflicts with --greedy"),
        (["--beam", "2", "--num-samples", "2"], r"--num-samples conflicts with --beam"),
        (["--beam", "2", "--alpha", "-1"], r"--alpha must not be negative, not -1\.0\.\n"),
    ],
)
def test_generate_cli_beam_errors(
    tiny_run: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["generate", str(tiny_run), *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
