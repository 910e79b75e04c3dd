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


def _settled(
    found: list[tuple[Hypothesis, int]], K: int, live: Tensor, limit: int, alpha: float
) -> bool:
    """True when no live beam can enter the best K finished hypotheses any more: a
    log-probability only falls as tokens are added, so a beam scoring s can end no better
    than s / length_penalty(limit) (s <= 0). Stopping at K finished (fairseq) would miss a
    better hypothesis that ends a few steps later, and beam search could lose to greedy."""
    if len(found) < K:
        return False
    kth = sorted((h.normalized for h, _ in found), reverse=True)[K - 1]
    best = float(live.max())
    return best / length_penalty(limit, alpha) <= kth


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
    beam_scores = torch.zeros(len(alive), 1, dtype=torch.float64, device=device)
    history = torch.zeros(len(alive), 1, 0, dtype=torch.long)  # (A, k, t) on the CPU
    t = 0
    order = 0
    while alive:
        t += 1
        A, k = beam_scores.shape
        logp, state = decoder.step(prev, state)
        V = logp.shape[-1]
        logp = _ban(logp, banned_ids)
        cand = (beam_scores[:, :, None] + logp.reshape(A, k, V).double()).reshape(A, k * V)
        vals_d, idx_d = _top(cand, min(2 * K, k * V))
        vals, idx = vals_d.cpu(), idx_d.cpu()
        src, tok = idx // V, idx % V
        valid = torch.isfinite(vals)
        is_eos = tok == eos
        # the best K candidates that do not end in eos continue (dead ones fill a short row)
        cont = is_eos.to(torch.int8).argsort(dim=1, stable=True)[:, :K]
        if cont.shape[1] < K:
            cont = torch.cat([cont, cont[:, :1].expand(A, K - cont.shape[1])], dim=1)
            live = torch.zeros(A, K, dtype=torch.bool)
            live[:, : vals.shape[1]] = True
        else:
            live = torch.ones(A, K, dtype=torch.bool)
        live &= valid.gather(1, cont) & ~is_eos.gather(1, cont)
        cont_scores = vals.gather(1, cont).masked_fill(~live, float("-inf"))
        cont_src = src.gather(1, cont).masked_fill(~live, 0)
        cont_tok = tok.gather(1, cont).masked_fill(~live, 0)
        # eos among the first K candidates: finished (in rank order)
        ended = (is_eos & valid)[:, :K]
        keep: list[int] = []
        for a, i in enumerate(alive):
            for r in ended[a].nonzero().view(-1).tolist():
                words = [*history[a, int(src[a, r])].tolist(), eos]
                s = float(vals[a, r])
                found[i].append(
                    (Hypothesis(words, s, s / length_penalty(len(words), alpha)), order)
                )
                order += 1
            if not bool(live[a].any()) or _settled(found[i], K, cont_scores[a], limits[i], alpha):
                continue
            if t >= limits[i]:  # cut at max_len: the live beams finish as they stand
                for r in live[a].nonzero().view(-1).tolist():
                    words = [*history[a, int(cont_src[a, r])].tolist(), int(cont_tok[a, r])]
                    s = float(cont_scores[a, r])
                    hyp = Hypothesis(words, s, s / length_penalty(len(words), alpha))
                    found[i].append((hyp, order))
                    order += 1
                continue
            keep.append(a)
        if not keep:
            break
        kept = torch.tensor(keep, dtype=torch.long)
        src_k, tok_k = cont_src[kept], cont_tok[kept]
        history = torch.cat([history[kept[:, None], src_k], tok_k[:, :, None]], dim=2)  # (A', K, t)
        rows = (kept[:, None] * k + src_k).view(-1).to(device)
        state = decoder.select(state, rows)
        prev = tok_k.view(-1).to(device)
        beam_scores = cont_scores[kept].to(device)
        alive = [alive[a] for a in keep]
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
