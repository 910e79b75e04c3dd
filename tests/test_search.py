"""Batched greedy, sampling and beam search (rnnkit.search) on tiny random decoders: exact
against brute force, scores equal to a forced pass, the same results in any batch."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.search import (
    Hypothesis,
    beam_search,
    check_search,
    greedy,
    length_penalty,
    sample,
)

TOL64 = 1e-9  # float64 decoder: scores across batch sizes and against a forced pass


class GRUDecoder(nn.Module):
    """Embedding + GRUCell + Linear + log_softmax with random weights; each input has its own
    initial state (row i of ``inputs``), batch first, so ``select`` is ``state[index]``."""

    def __init__(
        self, vocab: int = 12, hidden: int = 16, seed: int = 0, scale: float = 1.5, eos: float = 0.5
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.out = nn.Linear(hidden, vocab)
        for p in self.parameters():
            nn.init.normal_(p, 0, scale / math.sqrt(hidden))
        with torch.no_grad():
            self.out.bias[0] += eos  # id 0 is eos: make outputs end, some early
        self.double()
        self.rows_seen: list[int] = []

    def initial(self, n: int, seed: int = 1) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.cell.hidden_size, generator=gen, dtype=torch.float64)

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        self.rows_seen.append(tokens.shape[0])
        with torch.no_grad():
            h = self.cell(self.emb(tokens), state)
            return self.out(h).log_softmax(-1), h

    def select(self, state: Tensor, index: Tensor) -> Tensor:
        return state[index]


def forced_score(dec: GRUDecoder, state: Tensor, start: int, tokens: list[int]) -> float:
    """The sum of the decoder's log-probabilities of ``tokens``, teacher-forced one by one."""
    prev, total = torch.tensor([start]), 0.0
    for w in tokens:
        logp, state = dec.step(prev, state)
        total += float(logp[0, w])
        prev = torch.tensor([w])
    return total


def enumerate_all(V: int, eos: int, max_len: int) -> list[list[int]]:
    """Every output: non-eos tokens then eos (length <= max_len), or max_len non-eos tokens."""
    words = [w for w in range(V) if w != eos]
    seqs = [[*p, eos] for n in range(max_len) for p in itertools.product(words, repeat=n)]
    return seqs + [list(p) for p in itertools.product(words, repeat=max_len)]


def same(a: list[Hypothesis], b: list[Hypothesis], tol: float = TOL64) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    for x, y in zip(a, b, strict=True):
        assert abs(x.score - y.score) <= tol and abs(x.normalized - y.normalized) <= tol


N_INPUTS, EOS, V = 12, 0, 12
LIMITS = torch.tensor([3, 9, 5, 12, 1, 7, 10, 4, 8, 6, 11, 2])


def run_split(
    dec: GRUDecoder, order: list[int], sizes: list[int], search: Any, **kw: Any
) -> dict[int, Any]:
    """Search the inputs in ``order``, cut into batches of ``sizes``; results by input."""
    init = dec.initial(N_INPUTS)
    starts = torch.arange(N_INPUTS) % (V - 1) + 1
    out: dict[int, Any] = {}
    i = 0
    for size in sizes:
        idx = torch.tensor(order[i : i + size])
        res = search(dec, init[idx], starts[idx], EOS, LIMITS[idx], **kw)
        out.update(zip(idx.tolist(), res, strict=True))
        i += size
    return out


def test_beam_1_is_greedy() -> None:
    dec = GRUDecoder(seed=4)
    init, starts = dec.initial(N_INPUTS), torch.arange(N_INPUTS) % (V - 1) + 1
    g = greedy(dec, init, starts, EOS, LIMITS)
    b = beam_search(dec, init, starts, EOS, LIMITS, beam_size=1)
    assert [h.tokens for h in g] == [h[0].tokens for h in b]
    assert [h.score for h in g] == [h[0].score for h in b]  # the same additions, exactly
    assert any(h.tokens[-1] == EOS for h in g) and any(h.tokens[-1] != EOS for h in g)
    assert all(len(h.tokens) <= int(m) for h, m in zip(g, LIMITS, strict=True))


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_a_large_beam_finds_the_brute_force_ranking(alpha: float) -> None:
    """V = 4 and max_len 4: 121 outputs; a beam of 121 keeps them all and ranks them as
    brute force does (by score / length_penalty)."""
    dec = GRUDecoder(vocab=4, hidden=8, seed=5, scale=3.0)
    init = dec.initial(2, seed=7)
    everything = enumerate_all(4, EOS, 4)
    assert len(everything) == 121
    for row in range(2):
        scored = []
        for seq in everything:
            s = forced_score(dec, init[row : row + 1], 2, seq)
            scored.append((s / length_penalty(len(seq), alpha), seq))
        scored.sort(key=lambda x: -x[0])
        best = beam_search(dec, init[row : row + 1], torch.tensor([2]), EOS, 4, 121, 121, alpha)
        assert [h.tokens for h in best[0]] == [seq for _, seq in scored]
        assert [h.normalized for h in best[0]] == pytest.approx([s for s, _ in scored], abs=1e-9)
    # a smaller beam still finds the best one here, and the sort makes the choice matter
    short = beam_search(dec, init[:1], torch.tensor([2]), EOS, 4, 8, 1, alpha)
    assert len(short[0]) == 1


def test_the_brute_force_best_differs_with_alpha() -> None:
    """The length penalty changes the winner on this model (so the test above can fail)."""
    dec = GRUDecoder(vocab=4, hidden=8, seed=5, scale=3.0)
    init = dec.initial(2, seed=7)
    plain = beam_search(dec, init[:1], torch.tensor([2]), EOS, 4, 121, 1, 0.0)[0][0]
    long = beam_search(dec, init[:1], torch.tensor([2]), EOS, 4, 121, 1, 5.0)[0][0]
    assert plain.tokens != long.tokens


def test_scores_are_the_forced_log_probabilities() -> None:
    dec = GRUDecoder(seed=4)
    init, starts = dec.initial(N_INPUTS), torch.arange(N_INPUTS) % (V - 1) + 1
    gen = torch.Generator().manual_seed(0)
    results = {
        "greedy": [[h] for h in greedy(dec, init, starts, EOS, LIMITS)],
        "sample": [[h] for h in sample(dec, init, starts, EOS, LIMITS, generator=gen)],
        "beam": beam_search(dec, init, starts, EOS, LIMITS, 5, 3, alpha=0.6),
    }
    for name, per_input in results.items():
        for i, hyps in enumerate(per_input):
            for h in hyps:
                forced = forced_score(dec, init[i : i + 1], int(starts[i]), h.tokens)
                assert abs(h.score - forced) <= TOL64, name
                alpha = 0.6 if name == "beam" else 0.0
                assert h.normalized == pytest.approx(
                    h.score / length_penalty(len(h.tokens), alpha), abs=TOL64
                )


SPLITS = [
    (list(range(N_INPUTS)), [1] * N_INPUTS),
    (list(range(N_INPUTS)), [N_INPUTS]),
    (list(range(N_INPUTS)), [3, 3, 3, 3]),
    (list(range(N_INPUTS)), [5, 5, 2]),
    ([7, 2, 11, 0, 5, 9, 1, 4, 10, 3, 8, 6], [5, 7]),  # another order and company
]


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_results_do_not_depend_on_the_batch(kind: str) -> None:
    dec = GRUDecoder(seed=6)
    if kind == "greedy":
        runs = [run_split(dec, o, s, greedy) for o, s in SPLITS]
        for r in runs[1:]:
            for i in range(N_INPUTS):
                same([runs[0][i]], [r[i]])
    else:
        runs = [
            run_split(dec, o, s, beam_search, beam_size=5, n_best=3, alpha=0.6) for o, s in SPLITS
        ]
        for r in runs[1:]:
            for i in range(N_INPUTS):
                same(runs[0][i], r[i])
                assert len(r[i]) == 3


def test_float32_decoder_is_batch_invariant_within_1e_4() -> None:
    dec = GRUDecoder(seed=6).float()
    init = dec.initial(N_INPUTS).float()
    starts = torch.arange(N_INPUTS) % (V - 1) + 1
    alone = [
        beam_search(dec, init[i : i + 1], starts[i : i + 1], EOS, LIMITS[i : i + 1], 5, 3)[0]
        for i in range(N_INPUTS)
    ]
    together = beam_search(dec, init, starts, EOS, LIMITS, 5, 3)
    for a, b in zip(alone, together, strict=True):
        same(a, b, tol=1e-4)


def test_sampling_repeats_with_a_seed() -> None:
    dec = GRUDecoder(seed=8)
    init, starts = dec.initial(N_INPUTS), torch.arange(N_INPUTS) % (V - 1) + 1
    draws = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(5)
        draws.append(
            [
                sample(
                    dec, init[i : i + 1], starts[i : i + 1], EOS, LIMITS[i : i + 1], generator=gen
                )[0]
                for i in range(4)
            ]
        )
    assert draws[0] == draws[1]
    gen = torch.Generator().manual_seed(6)
    other = [
        sample(dec, init[i : i + 1], starts[i : i + 1], EOS, LIMITS[i : i + 1], generator=gen)[0]
        for i in range(4)
    ]
    assert other != draws[0]
    # top-k 1 is greedy
    gen = torch.Generator().manual_seed(0)
    same(
        sample(dec, init, starts, EOS, LIMITS, top_k=1, generator=gen),
        greedy(dec, init, starts, EOS, LIMITS),
    )


@pytest.mark.parametrize("kind", ["greedy", "sample", "beam"])
def test_finished_rows_leave_the_batch(kind: str) -> None:
    dec = GRUDecoder(seed=9)
    init, starts = dec.initial(N_INPUTS), torch.arange(N_INPUTS) % (V - 1) + 1
    dec.rows_seen.clear()
    if kind == "greedy":
        greedy(dec, init, starts, EOS, LIMITS)
        width = 1
    elif kind == "sample":
        sample(dec, init, starts, EOS, LIMITS, generator=torch.Generator().manual_seed(1))
        width = 1
    else:
        beam_search(dec, init, starts, EOS, LIMITS, beam_size=4)
        width = 4
    seen = dec.rows_seen
    assert seen[0] == N_INPUTS  # the first step expands beam 0 only
    assert all(b <= a for a, b in itertools.pairwise(seen[1:]))  # never grows again
    assert len(seen) <= int(LIMITS.max())
    # input 4 (max_len 1) is gone after the first step; at the end only the long ones run
    assert seen[1] <= (N_INPUTS - 1) * width
    assert seen[-1] <= 2 * width < seen[1]


def test_n_best_lists_are_sorted_distinct_and_full_and_banned_ids_never_appear() -> None:
    dec = GRUDecoder(seed=10)
    init, starts = dec.initial(N_INPUTS), torch.arange(N_INPUTS) % (V - 1) + 1
    limits = LIMITS + 2
    banned = [3, 7]
    plain = beam_search(dec, init, starts, EOS, limits, 6, 6)
    assert any(w in banned for hyps in plain for h in hyps for w in h.tokens)  # can fail
    for hyps in beam_search(dec, init, starts, EOS, limits, 6, 6, alpha=1.0, banned=banned):
        assert len(hyps) == 6
        scores = [h.normalized for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 6
        assert not any(w in banned for h in hyps for w in h.tokens)
    for hyp in greedy(dec, init, starts, EOS, limits, banned) + sample(
        dec, init, starts, EOS, limits, generator=torch.Generator().manual_seed(0), banned=banned
    ):
        assert not any(w in banned for w in hyp.tokens)


def test_max_len_zero_gives_an_empty_output() -> None:
    dec = GRUDecoder(seed=2)
    init, starts = dec.initial(3), torch.tensor([1, 2, 3])
    limits = torch.tensor([0, 4, 0])
    assert [h.tokens for h in greedy(dec, init, starts, EOS, limits)][::2] == [[], []]
    beams = beam_search(dec, init, starts, EOS, limits, 3, 2)
    assert beams[0] == [Hypothesis([], 0.0, 0.0)] and len(beams[1]) == 2


def test_length_penalty() -> None:
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(1, 1.0) == 1.0
    assert length_penalty(7, 0.5) == pytest.approx(math.sqrt(2))
    assert length_penalty(torch.tensor([1, 7]), 1.0).tolist() == [1.0, 2.0]
    assert length_penalty(torch.tensor([1, 7]), 0.0).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("beam", "n_best", "alpha", "message"),
    [
        (0, None, None, r"--beam must be at least 1, not 0\.$"),
        (3, 4, None, r"--n-best \(4\) must not exceed --beam \(3\)"),
        (None, 2, None, r"--n-best \(2\) must not exceed --beam"),
        (3, 0, None, r"--n-best must be at least 1, not 0\.$"),
        (3, 2, -0.5, r"--alpha must not be negative, not -0\.5\.$"),
    ],
)
def test_check_search(
    beam: int | None, n_best: int | None, alpha: float | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_search(beam, n_best, alpha)
    check_search(3, 3, 0.0)
    check_search(None, None, None)


TABLE = {(): [0.09, 0.90, 0.01], (1,): [0.09, 0.90, 0.01], (1, 1): [0.90, 0.05, 0.05]}


class TableDecoder:
    """P(next | output so far) from a table (eos = 0, a = 1, b = 2); the state is each
    row's sequence, a Python list."""

    def step(self, tokens: Tensor, state: list[tuple[int, ...]]) -> tuple[Tensor, Any]:
        seqs = [(*seq, w) for seq, w in zip(state, tokens.tolist(), strict=True)]
        probs = [TABLE.get(seq[1:], [0.5, 0.25, 0.25]) for seq in seqs]
        return torch.tensor(probs, dtype=torch.float64).log(), seqs

    def select(self, state: list[tuple[int, ...]], index: Tensor) -> list[tuple[int, ...]]:
        return [state[i] for i in index.tolist()]


def test_the_search_waits_until_no_live_beam_can_win() -> None:
    """After two steps the beam holds K = 2 finished outputs ([eos], [a, eos]), but the live
    [a, a] (p = 0.81) ends as [a, a, eos] (p = 0.73), the greedy choice: stopping at K
    finished (fairseq) returns [eos] (p = 0.09)."""
    dec, start = TableDecoder(), torch.tensor([1])
    best = beam_search(dec, [()], start, EOS, 5, beam_size=2, n_best=2)[0]
    assert [h.tokens for h in best] == [[1, 1, 0], [0]]
    assert best[0].score == pytest.approx(math.log(0.9 * 0.9 * 0.9))
    assert greedy(dec, [()], start, EOS, 5)[0].tokens == [1, 1, 0]
