"""Sampling from a language model: temperature, top-k, top-p (nucleus), greedy.

Generation keeps the hidden state and runs one recurrent step per new token; all samples
are drawn in parallel as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel
from rnnkit.models.output import ClassSoftmax, draw


def check_sampling(
    temperature: float | None, top_k: int | None, top_p: float | None, greedy: bool
) -> None:
    """ConfigError for an out-of-range or conflicting sampling setting."""
    if greedy and (temperature is not None or top_k is not None or top_p is not None):
        raise ConfigError(
            "--greedy conflicts with --temperature, --top-k and --top-p; use one or the others."
        )
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"--temperature must be positive, not {temperature}.")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, not {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], not {top_p}.")


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


@torch.inference_mode()
def sample(
    model: LanguageModel,
    context: Sequence[int],
    max_new_tokens: int,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    banned: Sequence[int] = (),
    stop_id: int | None = None,
) -> list[list[int]]:
    """Continue ``context`` (at least one token id) ``num_samples`` times.

    Returns the new token ids of each sample; a sample ends early at ``stop_id`` (which is
    included). ``banned`` ids (e.g. ``<unk>``) are never drawn.
    """
    check_sampling(temperature, top_k, top_p, greedy)
    if not context:
        raise ValueError("context must hold at least one token")
    model.eval()
    device = next(model.parameters()).device
    x = torch.tensor([list(context)] * num_samples, dtype=torch.long, device=device)
    h, state = model.features(x)
    h = h[:, -1]
    banned_ids = torch.tensor(list(banned), dtype=torch.long, device=device)
    # Plain sampling from a class-based layer draws the class, then the word: exact, and
    # H x (C + |c|) work instead of H x V. Greedy, temperature, top-k and top-p need the
    # whole distribution.
    two_step = (
        model.head
        if isinstance(model.head, ClassSoftmax)
        and not greedy
        and temperature in (None, 1.0)
        and top_k is None
        and top_p is None
        else None
    )
    out = torch.empty(num_samples, max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(num_samples, dtype=torch.bool, device=device)
    n = 0
    for n in range(1, max_new_tokens + 1):
        if two_step is not None:
            tok = _draw_two_step(two_step, h, banned_ids, generator)
        else:
            scores = model.head.logits(h).float()
            if len(banned_ids):
                scores[:, banned_ids] = float("-inf")
            if greedy:
                tok = scores.argmax(dim=-1)
            else:
                if temperature not in (None, 1.0):
                    scores = scores / temperature
                scores = filter_logits(scores, top_k, top_p)
                probs = torch.softmax(scores, dim=-1)
                tok = draw(probs, generator)
        out[:, n - 1] = tok
        if stop_id is not None:
            done |= tok == stop_id
            if bool(done.all()):
                break
        h, state = model.step(tok, state)
    result = []
    for row in out[:, :n].tolist():
        if stop_id is not None and stop_id in row:
            row = row[: row.index(stop_id) + 1]
        result.append(row)
    return result


def _draw_two_step(
    head: ClassSoftmax, h: Tensor, banned: Tensor, generator: torch.Generator | None
) -> Tensor:
    """A word per row from the class layer; a banned word is drawn again (rejection keeps
    the draw exact for the distribution without the banned words)."""
    tok = head.sample(h, generator)
    while len(banned):
        bad = torch.isin(tok, banned)
        if not bool(bad.any()):
            break
        tok[bad] = head.sample(h[bad], generator)
    return tok
