"""Greedy decoding, sampling and beam search for any model seen one output step at a time.

Every decoder (a language model, a translator's decoder, a one-to-many generator) offers
:class:`Decoder`'s two methods, and the three searches below run all its inputs as one batch:
each step is one call of ``decoder.step`` on a (rows,) tensor of tokens, where rows are the
inputs still running (times K beams for beam search). An input that is done leaves the batch
(``decoder.select`` drops its rows), so a long input does not keep the short ones' rows alive.

Batch invariance: every choice is made per input row (no padding, no masks shared between
inputs, ties broken by the lower candidate index), so the result of an input does not depend on
the batch size or on which inputs share the batch: the same hypotheses (token lists), with
scores equal up to the decoder's own rounding. A CPU GEMM row is not bitwise the same across
batch sizes (MKL picks kernels by M), so a float32 decoder's scores may differ at ~1e-6
(tolerance 1e-4); a float64 decoder's within 1e-9. :func:`sample` draws one uniform number
per running row per step, so its samples depend on the batch: the same seed and the same
batch give the same samples.

Scores are natural-log probabilities under the decoder (banned ids are excluded from the
choice, not renormalised away). Beam search follows fairseq/OpenNMT: the top 2K candidates
of each input over its K x V continuations; those ending in eos among the first K become
finished hypotheses, the best K others continue; an input is done when it holds K finished
hypotheses that no live beam can beat any more (log-probabilities only fall, so a live beam's
best possible normalised score is its score / length_penalty(max_len)), or when it reaches
its ``max_len`` (its live beams then finish as they stand). Finished hypotheses are ranked by
score / :func:`length_penalty` (GNMT, Wu et al. 2016). The stopping rule makes the answer the
one the K beams would give if run to ``max_len``: fairseq's "done at K finished" stops earlier
and can return a less probable sentence than greedy decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import torch
from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.models.output import draw


class Decoder(Protocol):
    """A model seen one output step at a time."""

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N,) int64: each row's previous output; returns log-probabilities (N, V)
        (float32 or float64, natural log, normalised over V) and the new state."""
        ...

    def select(self, state: Any, index: Tensor) -> Any:
        """The state of rows ``index`` ((N',) int64, in that order): reorders beams and drops
        finished rows."""
        ...


@dataclass
class Hypothesis:
    """One output sequence of one input."""

    tokens: list[int]  # the generated ids, without the start token; ends with eos unless cut
    score: float  # sum of the natural-log probabilities of `tokens` (eos included)
    normalized: float  # score / length_penalty(len(tokens), alpha): what beams are ranked by


# -- settings -------------------------------------------------------------------------------


def check_sampling(
    temperature: float | None, top_k: int | None, top_p: float | None, greedy: bool
) -> None:
    """ConfigError for an out-of-range or conflicting sampling setting."""
    if greedy and (temperature is not None or top_k is not None or top_p is not None):
        raise ConfigError(
            "--greedy conflicts with --temperature, --top-k and --top-p; use one or the others."
        )
    if temperature is not None and not 0 < temperature < math.inf:
        raise ConfigError(f"--temperature must be a positive finite number, not {temperature}.")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, not {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], not {top_p}.")


def check_search(beam: int | None, n_best: int | None, alpha: float | None) -> None:
    """ConfigError for a beam size, n-best size or length penalty that cannot work."""
    if beam is not None and beam < 1:
        raise ConfigError(f"--beam must be at least 1, not {beam}.")
    if n_best is not None and n_best < 1:
        raise ConfigError(f"--n-best must be at least 1, not {n_best}.")
    if n_best is not None and n_best > (beam or 1):
        raise ConfigError(
            f"--n-best ({n_best}) must not exceed --beam ({beam or 1}); a beam of K keeps at "
            "most K hypotheses."
        )
    if alpha is not None and not alpha >= 0:
        raise ConfigError(f"--alpha must not be negative, not {alpha}.")
    if alpha is not None and not alpha < math.inf:
        raise ConfigError(f"--alpha must be finite, not {alpha}.")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the top k and outside the smallest nucleus of mass p."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above
        drop_sorted = before >= top_p  # never drops the top token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@overload
def length_penalty(length: int, alpha: float) -> float: ...
@overload
def length_penalty(length: Tensor, alpha: float) -> Tensor: ...
def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT's ((5 + length) / 6) ** alpha: alpha > 0 stops beams favouring short outputs
    (every token lowers the log-probability); alpha = 0 gives 1 (raw log-probabilities)."""
    if isinstance(length, Tensor):
        lp = (5 + length.double()) / 6
        return torch.ones_like(lp) if alpha == 0 else lp**alpha
    return 1.0 if alpha == 0 else ((5 + length) / 6) ** alpha


# -- greedy and sampling --------------------------------------------------------------------

# one step of a row-wise search: (previous tokens, state) -> (next tokens, their log-prob
# as float64, new state)
_Choose = Callable[[Tensor, Any], tuple[Tensor, Tensor, Any]]


def _limits(max_len: int | Tensor, n: int) -> list[int]:
    """Each input's maximum output length."""
    if isinstance(max_len, Tensor):
        limits = [int(v) for v in max_len.reshape(-1).tolist()]
        if len(limits) != n:
            raise ValueError(f"max_len holds {len(limits)} limits for {n} inputs")
        return limits
    return [int(max_len)] * n


def _ban(logp: Tensor, banned: Tensor) -> Tensor:
    return logp.index_fill(1, banned, float("-inf")) if len(banned) else logp


def _banned_ids(banned: Sequence[int], device: torch.device) -> Tensor:
    return torch.tensor(sorted(set(banned)), dtype=torch.long, device=device)


def _row_search(
    decoder: Decoder, state: Any, start: Tensor, eos: int, max_len: int | Tensor, choose: _Choose
) -> list[Hypothesis]:
    """One output per input; a row leaves the batch at eos or at its limit."""
    n = start.shape[0]
    limits = _limits(max_len, n)
    tokens: list[list[int]] = [[] for _ in range(n)]
    scores = [0.0] * n
    alive = [i for i in range(n) if limits[i] > 0]
    prev = start
    if len(alive) < n and alive:
        index = torch.tensor(alive, dtype=torch.long, device=start.device)
        state, prev = decoder.select(state, index), start[index]
    t = 0
    while alive:
        t += 1
        tok, lp, state = choose(prev, state)
        keep = []
        for j, (i, w, s) in enumerate(zip(alive, tok.tolist(), lp.tolist(), strict=True)):
            tokens[i].append(w)
            scores[i] += s
            if w != eos and t < limits[i]:
                keep.append(j)
        if len(keep) < len(alive):
            alive = [alive[j] for j in keep]
            if alive:
                index = torch.tensor(keep, dtype=torch.long, device=tok.device)
                state, tok = decoder.select(state, index), tok[index]
        prev = tok
    return [Hypothesis(tokens[i], scores[i], scores[i]) for i in range(n)]


@torch.inference_mode()
def greedy(
    decoder: Decoder,
    state: Any,
    start: Tensor,
    eos: int,
    max_len: int | Tensor,
    banned: Sequence[int] = (),
) -> list[Hypothesis]:
    """The most probable next token at every step (ties: the lower id), one output per input.

    Equals :func:`beam_search` with ``beam_size=1``; batch-invariant.
    """
    banned_ids = _banned_ids(banned, start.device)

    def choose(prev: Tensor, st: Any) -> tuple[Tensor, Tensor, Any]:
        logp, st = decoder.step(prev, st)
        logp = _ban(logp, banned_ids)
        tok = logp.argmax(dim=-1)
        return tok, logp.gather(1, tok[:, None]).squeeze(1).double(), st

    return _row_search(decoder, state, start, eos, max_len, choose)


class TwoStepSampler(Protocol):
    """A decoder that can draw the next token exactly without the whole distribution (e.g. a
    class-based softmax: the class, then the word). :func:`sample` uses it for plain sampling."""

    def sample_step(
        self, tokens: Tensor, state: Any, banned: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Any] | None:
        """(next tokens, their log-probabilities, new state), or None: use ``step`` instead."""
        ...


@torch.inference_mode()
def sample(
    decoder: Decoder,
    state: Any,
    start: Tensor,
    eos: int,
    max_len: int | Tensor,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    banned: Sequence[int] = (),
) -> list[Hypothesis]:
    """One sample per input from the decoder's distribution, reshaped by ``temperature``,
    ``top_k`` and ``top_p`` (see :func:`filter_logits`); scores are the decoder's own
    log-probabilities of the drawn tokens.

    Not batch-invariant: each step draws one uniform number per running row, so a sample
    depends on the rows beside it; the same seed and the same inputs give the same samples.
    """
    check_sampling(temperature, top_k, top_p, greedy=False)
    banned_ids = _banned_ids(banned, start.device)
    plain = temperature in (None, 1.0) and top_k is None and top_p is None
    fast = getattr(decoder, "sample_step", None) if plain else None

    def choose(prev: Tensor, st: Any) -> tuple[Tensor, Tensor, Any]:
        if fast is not None:
            out = fast(prev, st, banned_ids, generator)
            if out is not None:
                tok, lp, st = out
                return tok, lp.double(), st
        logp, st = decoder.step(prev, st)
        logp = _ban(logp, banned_ids)
        scores = logp if temperature in (None, 1.0) else logp / temperature
        tok = draw(torch.softmax(filter_logits(scores, top_k, top_p), dim=-1), generator)
        return tok, logp.gather(1, tok[:, None]).squeeze(1).double(), st

    return _row_search(decoder, state, start, eos, max_len, choose)


# -- beam search ----------------------------------------------------------------------------


def _top(scores: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The n best entries of each row, best first, ties to the lower index: torch.topk picks
    and orders equal values as its kernel likes, which would make results batch-dependent."""
    m = min(n + 1, scores.shape[1])
    vals, idx = torch.topk(scores, m, dim=1)  # one more than asked: it shows a tie at the cut
    if m > n:
        kth, after = vals[:, n - 1], vals[:, n]
        vals, idx = vals[:, :n], idx[:, :n]
        # a finite value tied across the cut: pick the lower indices by a stable sort
        spill = (after == kth) & torch.isfinite(kth)
        if bool(spill.any()):
            rows = spill.nonzero().squeeze(1)
            s_vals, s_idx = torch.sort(scores[rows], dim=1, descending=True, stable=True)
            vals[rows], idx[rows] = s_vals[:, :n], s_idx[:, :n]
    by_idx = idx.argsort(dim=1)
    vals, idx = vals.gather(1, by_idx), idx.gather(1, by_idx)
    by_val = vals.argsort(dim=1, descending=True, stable=True)
    return vals.gather(1, by_val), idx.gather(1, by_val)


_BLOCK = 32  # ids per block in _candidates' two-stage selection


def _candidates(logp: Tensor, beam_scores: Tensor, n: int, banned: Tensor) -> tuple[Tensor, Tensor]:
    """The n best continuations of each input, ``_top(cand, n)`` of cand (A, k V) =
    beam_scores[:, :, None] + logp.double() (A, k, V) with the banned ids at -inf, without
    building cand (a float64 copy and sum of every row, and a topk over k V per input).

    Two stages: each row's ids go in blocks of _BLOCK; a block's best sum is its beam's score
    plus its largest allowed log-probability, and only the n + 1 blocks of each input with the
    best such sums are opened and summed in float64. Exact: an entry of an unopened block sums
    to at most its block's best sum (rounding is monotone), which is at most each opened
    block's best sum, itself the sum of an opened entry; so n + 1 opened sums are at least as
    good. When the n-th best opened sum beats the (n + 1)-th (or is -inf: no finite candidate
    is left out), nothing unopened is among the n best. A tie there (equal log-probabilities,
    or sums that round to the same float64) falls back to the full cand for that step, where
    ties go to the lower index.
    """
    A, k = beam_scores.shape
    R, V = logp.shape
    c = _BLOCK
    C = V // c
    m = n + 1
    if 4 * m <= C:  # enough blocks for the two stages to pay
        blocks_n = C + (C * c < V)
        # the banned ids and the ids past V (the short last block), as a (blocks, c) table
        off = torch.zeros(blocks_n * c, dtype=torch.bool, device=logp.device)
        off[V:] = True
        off[banned] = True
        off2 = off.view(blocks_n, c)
        peaks = logp[:, : C * c].view(R, C, c).amax(2)
        if blocks_n > C:
            peaks = torch.cat([peaks, logp[:, C * c :].amax(1, keepdim=True)], 1)
        if len(banned):  # the blocks holding a banned id: their largest allowed entry
            hit = torch.unique(banned // c)
            hit_cols = (hit[:, None] * c + torch.arange(c, device=logp.device)).view(-1)
            sub = logp.index_select(1, hit_cols.clamp(max=V - 1))
            sub.masked_fill_(off2.index_select(0, hit).view(1, -1), -math.inf)
            peaks[:, hit] = sub.view(R, -1, c).amax(2)
        best = beam_scores[:, :, None] + peaks.view(A, k, blocks_n).double()
        opened = torch.topk(best.view(A, k * blocks_n), m, dim=1).indices  # (A, m)
        beam, block = opened // blocks_n, opened % blocks_n
        cols = (block[:, :, None] * c + torch.arange(c, device=logp.device)).view(A, m * c)
        # candidate index k V + v of each opened entry (past V: masked below)
        cand_idx = beam.repeat_interleave(c, 1) * V + cols.clamp(max=V - 1)
        vals = logp.reshape(A, k * V).gather(1, cand_idx)
        vals.masked_fill_(off2.index_select(0, block.view(-1)).view(A, m * c), -math.inf)
        sums = beam_scores.gather(1, beam).repeat_interleave(c, 1) + vals.double()
        top, pos = torch.topk(sums, m, dim=1)
        cut, after = top[:, n - 1], top[:, n]
        if bool(((cut > after) | (cut == -math.inf)).all()):
            # in ascending candidate index, so that positions break ties
            idx = cand_idx.gather(1, pos[:, :n])
            top = top[:, :n]
            by_idx = idx.argsort(dim=1)
            top, idx = top.gather(1, by_idx), idx.gather(1, by_idx)
            by_val = top.argsort(dim=1, descending=True, stable=True)
            return top.gather(1, by_val), idx.gather(1, by_val)
    cand = _ban(logp, banned).reshape(A, k, V).to(torch.float64, copy=True)
    cand.add_(beam_scores[:, :, None])
    return _top(cand.reshape(A, k * V), n)


@torch.inference_mode()
def beam_search(
    decoder: Decoder,
    state: Any,
    start: Tensor,
    eos: int,
    max_len: int | Tensor,
    beam_size: int,
    n_best: int = 1,
    alpha: float = 0.0,
    banned: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """The ``n_best`` best hypotheses of each input by normalised score, best first.

    Rows are the running inputs times K beams (input-major: row a * K + k). The first step
    expands beam 0 alone, so no two beams hold the same prefix and the hypotheses are
    distinct. A beam that has no candidate left (a tiny vocabulary) is dead: score -inf,
    never finished. Batch-invariant; see the module docstring.

    Each step is tensor work over all running inputs at once; Python touches only the
    hypotheses that finish (to record them) and the inputs that stop.
    """
    check_search(beam_size, n_best, alpha)
    K = beam_size
    n = start.shape[0]
    device = start.device
    limits = _limits(max_len, n)
    banned_ids = _banned_ids(banned, device)
    # finished hypotheses of each input, with the order they were found in (ties)
    found: list[list[tuple[Hypothesis, int]]] = [[] for _ in range(n)]
    alive = [i for i in range(n) if limits[i] > 0]
    for i in range(n):
        if limits[i] <= 0:
            found[i].append((Hypothesis([], 0.0, 0.0), 0))
    prev = start
    if len(alive) < n and alive:
        index = torch.tensor(alive, dtype=torch.long, device=device)
        state, prev = decoder.select(state, index), start[index]
    # length penalties as Python computes them; a division by a tensor (not a Python
    # number, which CUDA turns into a product by the reciprocal) gives the float s / lp
    pen = [length_penalty(j, alpha) for j in range(max(limits, default=0) + 1)]
    pen_t = torch.tensor(pen, dtype=torch.float64, device=device)
    inputs = torch.tensor(alive, dtype=torch.long, device=device)  # row a's input id
    limit = torch.tensor([limits[i] for i in alive], dtype=torch.long, device=device)
    bound = torch.tensor([pen[limits[i]] for i in alive], dtype=torch.float64, device=device)
    # each input's K best normalised finished scores so far (-inf: none yet)
    found_top = torch.full((len(alive), K), float("-inf"), dtype=torch.float64, device=device)
    beam_scores = torch.zeros(len(alive), 1, dtype=torch.float64, device=device)
    history = torch.zeros(len(alive), 1, 0, dtype=torch.long, device=device)  # (A, k, t)
    t = 0
    order = 0
    while alive:  # left at the break below, when no input runs any more
        t += 1
        A, k = beam_scores.shape
        logp, state = decoder.step(prev, state)
        V = logp.shape[-1]
        vals, idx = _candidates(logp, beam_scores, min(2 * K, k * V), banned_ids)
        src, tok = idx // V, idx % V
        valid = torch.isfinite(vals)
        is_eos = tok == eos
        # the best K candidates that do not end in eos continue (dead ones fill a short row)
        cont = is_eos.to(torch.int8).argsort(dim=1, stable=True)[:, :K]
        if cont.shape[1] < K:
            cont = torch.cat([cont, cont[:, :1].expand(A, K - cont.shape[1])], dim=1)
            live = torch.zeros(A, K, dtype=torch.bool, device=device)
            live[:, : vals.shape[1]] = True
        else:
            live = torch.ones(A, K, dtype=torch.bool, device=device)
        live &= valid.gather(1, cont) & ~is_eos.gather(1, cont)
        cont_scores = vals.gather(1, cont).masked_fill(~live, float("-inf"))
        cont_src = src.gather(1, cont).masked_fill(~live, 0)
        cont_tok = tok.gather(1, cont).masked_fill(~live, 0)
        # eos among the first K candidates: finished (in rank order), length t
        ended = (is_eos & valid)[:, :K]
        new = (vals[:, :K] / pen_t[t : t + 1]).masked_fill(~ended, float("-inf"))
        found_top = torch.cat([found_top, new], 1).topk(K, dim=1).values
        # done: no live beam, or none can enter the K best finished any more (a score only
        # falls, so a beam scoring s ends no better than s / lp(max_len)); a beam search that
        # stopped at K finished (fairseq) could return a worse sentence than greedy
        best = cont_scores.amax(1)
        done = ~live.any(1) | (best / bound <= found_top[:, K - 1])
        cut = ~done & (limit <= t)  # at max_len: the live beams finish as they stand
        keep = ~(done | cut)
        n_ended, n_cut, n_keep = torch.stack([ended.sum(), cut.sum(), keep.sum()]).tolist()
        if n_ended:
            a, r = ended.nonzero(as_tuple=True)
            s = src[a, r]
            words = torch.cat([history[a, s], tok[a, r][:, None]], 1).tolist()
            for i, w, sc in zip(inputs[a].tolist(), words, vals[a, r].tolist(), strict=True):
                found[i].append((Hypothesis(w, sc, sc / pen[t]), order))
                order += 1
        if n_cut:
            a, r = (cut[:, None] & live).nonzero(as_tuple=True)
            s = cont_src[a, r]
            words = torch.cat([history[a, s], cont_tok[a, r][:, None]], 1).tolist()
            sc_cut = cont_scores[a, r].tolist()
            for i, w, sc in zip(inputs[a].tolist(), words, sc_cut, strict=True):
                found[i].append((Hypothesis(w, sc, sc / pen[t]), order))
                order += 1
        if not n_keep:
            break
        if n_keep < A:
            kept = keep.nonzero().squeeze(1)
            cont_src, cont_tok, cont_scores = cont_src[kept], cont_tok[kept], cont_scores[kept]
            history, inputs, limit = history[kept], inputs[kept], limit[kept]
            bound, found_top = bound[kept], found_top[kept]
            rows = (kept[:, None] * k + cont_src).view(-1)
        else:
            rows = (torch.arange(0, A * k, k, device=device)[:, None] + cont_src).view(-1)
        history = torch.cat([history.gather(1, cont_src[:, :, None].expand(-1, -1, t - 1)),
                             cont_tok[:, :, None]], dim=2)  # fmt: skip
        state = decoder.select(state, rows)
        prev = cont_tok.reshape(-1)
        beam_scores = cont_scores
    return [
        [h for h, _ in sorted(f, key=lambda x: (-x[0].normalized, x[1]))][:n_best] for f in found
    ]


__all__ = [
    "Decoder",
    "Hypothesis",
    "TwoStepSampler",
    "beam_search",
    "check_sampling",
    "check_search",
    "filter_logits",
    "greedy",
    "length_penalty",
    "sample",
]
