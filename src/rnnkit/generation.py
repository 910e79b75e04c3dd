"""Generation from a language model: sampling (temperature, top-k, top-p), greedy, beam.

A language model is one more :class:`rnnkit.search.Decoder` (:class:`LanguageModelDecoder`):
the prompt is read once, then :mod:`rnnkit.search` runs one recurrent step per new token for
all samples (or beams) as one batch. ``check_sampling`` and ``filter_logits`` live in
:mod:`rnnkit.search` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit import search
from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel
from rnnkit.models.base import State
from rnnkit.models.output import ClassSoftmax
from rnnkit.models.rnnlm import select_state
from rnnkit.search import Hypothesis, check_sampling, check_search, filter_logits


class LanguageModelDecoder:
    """A language model as a :class:`rnnkit.search.Decoder`: its state (batch in dimension 1)
    and log_softmax of its head's logits. Plain sampling from a class-based layer
    (:meth:`sample_step`) draws the class, then the word: exact, and H x (C + |c|) work
    instead of H x V."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        h, state = self.model.step(tokens, state)
        return self.model.head.logits(h).float().log_softmax(-1), state

    def select(self, state: State, index: Tensor) -> State:
        return select_state(state, index)

    def sample_step(
        self, tokens: Tensor, state: State, banned: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, State] | None:
        head = self.model.head
        if not isinstance(head, ClassSoftmax):
            return None
        h, state = self.model.step(tokens, state)
        tok = _draw_two_step(head, h, banned, generator)
        return tok, head.log_prob(h, tok).float(), state

    def prompt(self, context: Sequence[int], copies: int = 1) -> tuple[State, Tensor]:
        """``copies`` rows of the state after all but the last token of ``context``, and that
        last token (the search's ``start``)."""
        if not context:
            raise ValueError("context must hold at least one token")
        device = next(self.model.parameters()).device
        x = torch.tensor([list(context)] * copies, dtype=torch.long, device=device)
        if x.shape[1] > 1:
            _, state = self.model.features(x[:, :-1])
        else:
            state = self.model.init_state(copies, device)
        return state, x[:, -1]


def check_generation(
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    greedy: bool,
    beam: int | None,
    n_best: int | None,
    alpha: float | None,
    num_samples: int,
) -> None:
    """ConfigError for a bad or conflicting sampling or beam setting (before any work)."""
    check_sampling(temperature, top_k, top_p, greedy)
    check_search(beam, n_best, alpha)
    sampling = greedy or temperature is not None or top_k is not None or top_p is not None
    if beam is not None and sampling:
        raise ConfigError(
            "--beam conflicts with --greedy, --temperature, --top-k and --top-p; "
            "use one or the others."
        )
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, not {num_samples}.")
    if beam is not None and num_samples != 1:
        raise ConfigError("--num-samples conflicts with --beam; use --n-best for several.")


@torch.inference_mode()
def continue_context(
    model: LanguageModel,
    context: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    beam: int | None = None,
    n_best: int | None = None,
    alpha: float = 0.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    banned: Sequence[int] = (),
    stop_id: int | None = None,
) -> list[Hypothesis]:
    """Continuations of ``context`` with their log-probabilities: ``num_samples`` samples
    (or greedy ones), or with ``beam`` the ``n_best`` (1) most probable by beam search.

    A continuation ends at ``stop_id`` (included) or after ``max_new_tokens``; ``banned`` ids
    are never produced.
    """
    check_generation(temperature, top_k, top_p, greedy, beam, n_best, alpha, num_samples)
    model.eval()
    decoder = LanguageModelDecoder(model)
    eos = -1 if stop_id is None else stop_id  # -1: never produced, every row runs to the end
    if beam is not None:
        state, start = decoder.prompt(context, 1)
        return search.beam_search(
            decoder, state, start, eos, max_new_tokens, beam, n_best or 1, alpha, banned
        )[0]
    state, start = decoder.prompt(context, num_samples)
    if greedy:
        return search.greedy(decoder, state, start, eos, max_new_tokens, banned)
    return search.sample(
        decoder, state, start, eos, max_new_tokens, temperature, top_k, top_p, generator, banned
    )


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
    hyps = continue_context(
        model,
        context,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        num_samples=num_samples,
        generator=generator,
        banned=banned,
        stop_id=stop_id,
    )
    return [h.tokens for h in hyps]


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


__all__ = [
    "LanguageModelDecoder",
    "check_generation",
    "check_sampling",
    "continue_context",
    "filter_logits",
    "sample",
]
