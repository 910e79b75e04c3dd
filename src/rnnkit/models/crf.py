"""A linear-chain conditional random field over label sequences (Lafferty et al. 2001).

For a sentence of n tokens with emission scores e_t(y) (the tagger's per-token outputs),
a label sequence y_1..y_n scores

    s(y) = start(y_1) + sum_{t=1..n} e_t(y_t) + sum_{t=2..n} A[y_{t-1}, y_t] + end(y_n)

with ``A = transitions`` (L, L), row = from, column = to. The model is
p(y | x) = exp s(y) / Z, and log Z comes from the forward algorithm in log space:

    alpha_1(j) = start(j) + e_1(j)
    alpha_t(j) = logsumexp_i (alpha_{t-1}(i) + A[i, j]) + e_t(j)        t = 2..n
    log Z      = logsumexp_j (alpha_n(j) + end(j))

The negative log-likelihood of the gold labels is log Z - s(y). Viterbi replaces logsumexp
by max and keeps the argmax as a back-pointer; following the back-pointers from
argmax_j (delta_n(j) + end(j)) gives the best sequence.

Batches are padded: ``mask`` (B, T) is True at real tokens, a prefix of each row, with at
least one real token per sentence. At padded steps alpha (and delta) is carried unchanged,
so padding never changes a result. Loops run over time only, never over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """Transition scores for ``num_labels`` labels; NLL by the forward algorithm, Viterbi."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, not {num_labels}")
        self.num_labels = num_labels
        self.transitions = nn.Parameter(torch.empty(num_labels, num_labels))  # A[from, to]
        self.start_transitions = nn.Parameter(torch.empty(num_labels))
        self.end_transitions = nn.Parameter(torch.empty(num_labels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(p, -0.1, 0.1)

    def _check(self, emissions: Tensor, mask: Tensor) -> None:
        if emissions.dim() != 3 or emissions.shape[2] != self.num_labels:
            raise ValueError(
                f"emissions must be (B, T, {self.num_labels}), not {tuple(emissions.shape)}"
            )
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match emissions")
        if emissions.shape[1] == 0 or not bool(mask[:, 0].all()):
            raise ValueError("every sentence needs at least one real token (mask[:, 0])")

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """s(y) of the sequences ``tags`` (B, T) under emissions (B, T, L): (B,)."""
        self._check(emissions, mask)
        m = mask.to(emissions.dtype)
        tags = tags.long() * mask.long()  # padded positions may hold anything; read label 0
        e = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T): e_t(y_t)
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1): A[y_{t-1}, y_t]
        total = self.start_transitions[tags[:, 0]] + (e * m).sum(1) + (trans * m[:, 1:]).sum(1)
        last = mask.long().sum(1) - 1  # index of each sentence's last real token
        last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
        return total + self.end_transitions[last_tags]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z for each sentence, (B,), by the forward algorithm."""
        self._check(emissions, mask)
        alpha = self.start_transitions + emissions[:, 0]  # (B, L)
        for t in range(1, emissions.shape[1]):
            # (B, L_from, 1) + (L_from, L_to) -> logsumexp over from -> (B, L_to)
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1)
            step = step + emissions[:, t]
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Per-sentence negative log-likelihood log Z - s(y), (B,), in nats.

        emissions (B, T, L) float; tags (B, T) int (any value at padding); mask (B, T) bool.
        """
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """The same as :meth:`nll`: (B,)."""
        return self.nll(emissions, tags, mask)

    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """The highest-scoring label sequence of each sentence (Viterbi), cut to its length."""
        self._check(emissions, mask)
        B, T, L = emissions.shape
        delta = self.start_transitions + emissions[:, 0]  # (B, L)
        keep = torch.arange(L, device=emissions.device).expand(B, L)
        pointers = []
        for t in range(1, T):
            best, arg = (delta.unsqueeze(2) + self.transitions).max(dim=1)  # over from
            on = mask[:, t].unsqueeze(1)
            delta = torch.where(on, best + emissions[:, t], delta)
            # at padding the pointer is the identity, so backtracking walks straight through
            pointers.append(torch.where(on, arg, keep))
        tag = (delta + self.end_transitions).argmax(dim=1)  # (B,) the label at the last step
        path = [tag]
        for arg in reversed(pointers):
            tag = arg.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        paths = torch.stack(path[::-1], dim=1).tolist()  # (B, T)
        lengths = mask.long().sum(1).tolist()
        return [p[:n] for p, n in zip(paths, lengths)]


__all__ = ["CRF"]
