"""The CRF against brute force: log Z, the NLL and Viterbi equal what enumerating every label
sequence gives, on tiny inputs with masks of different lengths; gradients equal finite
differences (float64)."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit.models.crf import CRF


def make(L: int, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(L).double()
    with torch.no_grad():  # larger than the init, so the test sees the transitions matter
        for p in crf.parameters():
            p.uniform_(-1.0, 1.0)
    return crf


def brute_score(crf: CRF, e: torch.Tensor, y: tuple[int, ...]) -> torch.Tensor:
    """s(y) written out for one sentence: e (n, L)."""
    s = crf.start_transitions[y[0]] + e[0, y[0]]
    for t in range(1, len(y)):
        s = s + crf.transitions[y[t - 1], y[t]] + e[t, y[t]]
    return s + crf.end_transitions[y[-1]]


def batch(B: int, T: int, L: int, lengths: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, T, L, generator=g, dtype=torch.float64)
    tags = torch.randint(0, L, (B, T), generator=g)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return e, tags, mask


@pytest.mark.parametrize("L,lengths", [(1, [3, 1]), (3, [4, 2, 1, 3]), (4, [1, 3, 2])])
def test_log_partition_nll_and_viterbi_equal_brute_force(L: int, lengths: list[int]) -> None:
    crf = make(L, seed=L)
    T = max(lengths)
    e, tags, mask = batch(len(lengths), T, L, lengths, seed=L + 10)
    log_z = crf.log_partition(e, mask)
    nll = crf.nll(e, tags, mask)
    best = crf.decode(e, mask)
    for b, n in enumerate(lengths):
        seqs = list(itertools.product(range(L), repeat=n))
        scores = torch.stack([brute_score(crf, e[b, :n], y) for y in seqs])
        assert torch.allclose(log_z[b], torch.logsumexp(scores, 0), rtol=1e-12, atol=1e-12)
        gold = tuple(tags[b, :n].tolist())
        want_nll = torch.logsumexp(scores, 0) - brute_score(crf, e[b, :n], gold)
        assert torch.allclose(nll[b], want_nll, rtol=1e-12, atol=1e-12)
        assert tuple(best[b]) == seqs[int(scores.argmax())]
        assert len(best[b]) == n


def test_padding_changes_nothing() -> None:
    """A sentence alone and padded inside a longer batch gets the same NLL and path."""
    crf = make(3, seed=1)
    e, tags, mask = batch(2, 6, 3, [3, 6], seed=2)
    alone = crf.nll(e[:1, :3], tags[:1, :3], mask[:1, :3])
    e_pad = e.clone()
    e_pad[0, 3:] = 1e3  # garbage at padding must not leak in
    padded = crf.nll(e_pad, tags, mask)
    assert torch.allclose(alone, padded[:1], rtol=1e-12)
    assert crf.decode(e[:1, :3], mask[:1, :3])[0] == crf.decode(e_pad, mask)[0]


def test_probabilities_sum_to_one() -> None:
    crf = make(3, seed=4)
    e, _, mask = batch(1, 3, 3, [3], seed=5)
    total = torch.zeros(1, dtype=torch.float64)
    total += sum(
        torch.exp(-crf.nll(e, torch.tensor([y]), mask))
        for y in itertools.product(range(3), repeat=3)
    )
    assert torch.allclose(total, torch.ones(1, dtype=torch.float64), rtol=1e-12)


def test_gradient_matches_finite_differences() -> None:
    crf = make(3, seed=7)
    e, tags, mask = batch(3, 4, 3, [4, 2, 1], seed=8)
    e.requires_grad_(True)
    params = (crf.transitions, crf.start_transitions, crf.end_transitions)

    def f(e: torch.Tensor, A: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        names = {"transitions": A, "start_transitions": s, "end_transitions": t}
        return torch.func.functional_call(crf, names, (e, tags, mask)).sum()

    inputs = (e, *(p.detach().clone().requires_grad_(True) for p in params))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_bad_mask_is_refused() -> None:
    crf = make(2, seed=0)
    e, tags, _ = batch(1, 2, 2, [2], seed=0)
    with pytest.raises(ValueError, match="at least one real token"):
        crf.nll(e, tags, torch.zeros(1, 2, dtype=torch.bool))
