"""Batched greedy, sampling and beam search (rnnkit.search) on tiny random decoders: exact
against brute force, scores equal to a forced pass, the same results in any batch."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import rnnkit.search as search_module
from rnnkit.errors import ConfigError
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, TranslatorDecoder
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
    assert beam_search(dec, init[:0], starts[:0], EOS, limits[:0], 3, 2) == []  # no input


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


# -- the fast candidate selection against the plain one ------------------------------------


def plain_candidates(logp: Tensor, beam_scores: Tensor, n: int, banned: Tensor) -> Any:
    """What search._candidates must equal: every continuation summed in float64, then _top."""
    A, k = beam_scores.shape
    logp = logp.index_fill(1, banned, float("-inf")) if len(banned) else logp
    cand = beam_scores[:, :, None] + logp.reshape(A, k, -1).double()
    return search_module._top(cand.reshape(A, -1), n)


def same_finite(got: tuple[Tensor, Tensor], want: tuple[Tensor, Tensor]) -> None:
    """Equal best-first lists; -inf entries (dead, never used) may name any candidate."""
    assert got[0].shape == want[0].shape
    assert torch.equal(got[0], want[0])
    fin = torch.isfinite(want[0])
    assert torch.equal(got[1][fin], want[1][fin])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("V", [40, 3001])  # the full sort; blocks of 32 ids
def test_candidates_equal_the_full_sum_and_sort(
    dtype: torch.dtype, V: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(0)
    A, k, K = 6, 5, 5
    n = 2 * K
    logits = torch.randn(A * k, V, generator=gen, dtype=torch.float64) * 4
    logits[8, -1] = logits[8].max() + 2  # the best one in the short last block
    logp = torch.log_softmax(logits, -1).to(dtype)
    logp[9, 1:] = float("-inf")  # a single possible token
    logp[10:15] = logp[10]  # input 2: equal rows ...
    banned = torch.tensor([0, 33, V - 1])
    logp[15:20, banned] = 0.0  # input 3: banned ids in three blocks beat every allowed one
    scores = -torch.rand(A, k, generator=gen, dtype=torch.float64) * 30
    scores[1, 2] = float("-inf")  # a dead beam
    scores[2] = scores[2, 0]  # ... and equal beams: each sum tied across its 5 rows
    scores[3, 1:] -= 500  # input 3's best n are its first row's
    full_sorts: list[int] = []
    plain_top = search_module._top

    def counted_top(x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        full_sorts.append(1)
        return plain_top(x, n)

    monkeypatch.setattr(search_module, "_top", counted_top)
    blocks = 4 * (n + 1) * search_module._BLOCK <= V
    cases = [(logp, scores, banned), (logp, scores, banned[:0]), (logp[:A], scores[:, :1], banned)]
    for lp, sc, ban in cases:
        got = search_module._candidates(lp, sc, n, ban)
        assert full_sorts == ([] if blocks else [1])  # no tie across the cut: no full sort
        same_finite(got, plain_candidates(lp, sc, n, ban))
        full_sorts.clear()
    tied = logp.clone()
    tied[3] = tied[3, 5]  # a row of equal values
    tied[7, 11:30] = tied[7].max()  # 19 tied best ones, across the cut at n
    for row in (3, 7):  # one beam: the row's ties are the input's
        lp = tied[row : row + 1]
        got = search_module._candidates(lp, scores[:1, :1], n, banned)
        assert full_sorts == [1]  # a tie across the cut: the full sort
        same_finite(got, plain_candidates(lp, scores[:1, :1], n, banned))
        full_sorts.clear()


def test_candidates_tied_by_rounding_go_to_the_lower_index() -> None:
    """log-probabilities 1e-16 apart are distinct, but added to a score of -1000 they round
    to the same float64: the plain sort then picks the lower indices, here the smaller
    log-probabilities, which a cut of each row to its own best would have dropped."""
    V, n = 3000, 4
    logp = torch.full((1, V), -50.0, dtype=torch.float64)
    logp[0, 100:110] = -torch.arange(10, 0, -1, dtype=torch.float64) * 1e-16  # rising
    scores = torch.tensor([[-1000.0]], dtype=torch.float64)
    banned = torch.tensor([], dtype=torch.long)
    want = plain_candidates(logp, scores, n, banned)
    assert want[1].tolist() == [[100, 101, 102, 103]]
    assert torch.topk(logp, n).indices.tolist() != [[100, 101, 102, 103]]  # can fail
    same_finite(search_module._candidates(logp, scores, n, banned), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_wide_vocabulary_search_equals_the_plain_selection(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    dec = GRUDecoder(vocab=2000, hidden=16, seed=11, scale=3.0, eos=4.0).to(dtype)
    init, starts = dec.initial(N_INPUTS).to(dtype), torch.arange(N_INPUTS) % 50 + 1
    banned = [1, 7, 1999]
    fast = beam_search(dec, init, starts, EOS, LIMITS, 5, 3, 0.6, banned)
    monkeypatch.setattr(search_module, "_candidates", plain_candidates)
    plain = beam_search(dec, init, starts, EOS, LIMITS, 5, 3, 0.6, banned)
    assert fast == plain  # the same tokens, scores and normalised scores, bit for bit
    assert any(h.tokens[-1] == EOS for hyps in fast for h in hyps)
    assert any(h.tokens[-1] != EOS for hyps in fast for h in hyps)


@pytest.mark.parametrize("attention", ["none", "general", "bahdanau"])
def test_translator_select_keeps_one_copy_of_each_source(attention: str) -> None:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=15, hidden_size=8, embedding_size=6,
                        attention=attention, bidirectional=attention != "none", dropout=0.0)  # fmt: skip
    model = Seq2Seq(cfg).double().eval()
    src = torch.randint(4, 20, (3, 5), generator=torch.Generator().manual_seed(1))
    dec = TranslatorDecoder(model)
    state = dec.select(model.encode(src, torch.tensor([5, 3, 2])), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert state.memory.shape[0] == 3 and state.context.shape[0] == 6
    # beams reordered within each source: the sources are not copied
    moved = dec.select(state, torch.tensor([1, 0, 2, 2, 5, 4]))
    assert moved.memory is state.memory and moved.keys is state.keys
    assert torch.equal(moved.context, state.context[[1, 0, 2, 2, 5, 4]])
    # a source dropped: one copy of the rest (the keys are the memory itself for dot and
    # general attention)
    dropped = dec.select(state, torch.tensor([0, 1, 4, 5]))
    assert torch.equal(dropped.memory, state.memory[[0, 2]])
    assert torch.equal(dropped.keys, state.keys[[0, 2]])
    assert torch.equal(dropped.mask, state.mask[[0, 2]])
    assert (dropped.keys is dropped.memory) == (attention == "general")
    # rows of one source apart (no search does it): one copy a row
    apart = dec.select(state, torch.tensor([0, 2, 1]))
    assert torch.equal(apart.memory, state.memory[[0, 1, 0]])
    # a search through it is batch-invariant
    lengths = torch.tensor([5, 3, 2])
    start = torch.full((3,), cfg.bos_id)
    together = beam_search(dec, model.encode(src, lengths), start, cfg.eos_id, 6, 4, 2)
    for i in range(3):
        alone = beam_search(
            dec, model.encode(src[i : i + 1, : int(lengths[i])], lengths[i : i + 1]),
            start[:1], cfg.eos_id, 6, 4, 2,
        )  # fmt: skip
        same(alone[0], together[i])
