"""Output layers: from the recurrent features a_t to a distribution over the vocabulary.

The output layer owns the loss and the log-probabilities, so the three layers below are
interchangeable behind one interface (``logits``, ``log_probs``, ``log_prob``, ``loss``).
Every one is exact: probabilities are normalised over the whole vocabulary.

- :class:`FullSoftmax`: y_t = softmax(W_ya a_t + b_y); costs H x V per token.
- :class:`ClassSoftmax` (Mikolov et al. 2011): words are binned into classes by frequency
  and P(w | h) = P(c(w) | h) P(w | c(w), h); training and scoring cost H x (C + |c(w)|) per
  token, about H x 2 sqrt(V) with C = sqrt(V) classes instead of H x V.
- :class:`AdaptiveSoftmax` (Grave et al. 2017): torch's ``AdaptiveLogSoftmaxWithLoss``; the
  frequent words in a head, rarer ones in clusters of smaller dimension.

Word ids are in frequency order (specials first, then the most frequent words), which is
what makes classes and clusters contiguous id ranges.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OutputLayer(nn.Module):
    """The interface; inputs ``h`` have shape (..., H), targets the matching shape (...)."""

    def word_layer(self) -> nn.Linear | None:
        """The (V, H) layer with one row per word, which --tie-weights shares with the input
        embedding (None when the layer has no such matrix)."""
        return None

    def reset_parameters(self) -> None:
        """Small uniform weights and zero biases, as pytorch/examples' word_language_model."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -0.1, 0.1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def log_probs(self, h: Tensor) -> Tensor:
        """log P(w | h) for every word, shape (..., V), in nats."""
        raise NotImplementedError

    def logits(self, h: Tensor) -> Tensor:
        """Scores whose softmax is P(w | h), shape (..., V) (sampling reads these)."""
        return self.log_probs(h)

    def log_prob(self, h: Tensor, targets: Tensor) -> Tensor:
        """log P(target | h) for each position, shape (...), in nats."""
        raise NotImplementedError

    def loss(self, h: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """Cross-entropy averaged over positions (targets equal to ``ignore_index`` skipped)."""
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        keep = flat_t != ignore_index
        if not bool(keep.all()):
            flat_h, flat_t = flat_h[keep], flat_t[keep]
        return -self.log_prob(flat_h, flat_t).mean()


class FullSoftmax(OutputLayer):
    """y_t = softmax(W_ya a_t + b_y).

    ``linear.weight`` is W_ya with shape (V, H), ``linear.bias`` is b_y with shape (V,).
    """

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, vocab_size)

    def word_layer(self) -> nn.Linear:
        return self.linear

    def logits(self, h: Tensor) -> Tensor:
        """Unnormalised log-probabilities, shape (..., V)."""
        return self.linear(h)

    def log_probs(self, h: Tensor) -> Tensor:
        return F.log_softmax(self.linear(h), dim=-1)

    def log_prob(self, h: Tensor, targets: Tensor) -> Tensor:
        logits = self.linear(h)
        flat = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        )
        return -flat.view(targets.shape)

    def loss(self, h: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        logits = self.linear(h)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=ignore_index,
        )


# -- class-based softmax ----------------------------------------------------------------------


def frequency_classes(counts: np.ndarray, num_classes: int) -> list[int]:
    """Mikolov's frequency binning (rnnlm-0.4b's default): class boundaries over the ids.

    ``counts`` are the training counts of the ids in id order (most frequent first). Walking
    the ids in order, a word joins the current class, and the next word opens a new class
    once the running share of sqrt(count) passes (class + 1) / C; so very frequent words
    get classes of their own and rare ones share large classes. Returns C + 1 increasing
    boundaries b with class c = ids [b[c], b[c+1]) (fewer classes for a tiny vocabulary).
    """
    p = np.sqrt(np.asarray(counts, dtype=np.float64) / max(float(np.sum(counts)), 1.0))
    share = np.cumsum(p) / p.sum() if p.sum() > 0 else np.linspace(0, 1, len(p) + 1)[1:]
    C = max(1, min(int(num_classes), len(p)))
    bounds, current = [0], 0
    for i, s in enumerate(share[:-1].tolist()):
        if s > (current + 1) / C and current < C - 1:
            current += 1
            bounds.append(i + 1)
    bounds.append(len(p))
    return bounds


def default_classes(vocab_size: int) -> int:
    """sqrt(V) classes, the choice that minimises C + V / C (Mikolov uses 100 for 10k words)."""
    return max(1, round(math.sqrt(vocab_size)))


class _WithinClass(torch.autograd.Function):
    """log P(w | c(w), h) for a batch, computing only each token's own class.

    Tokens are sorted by class so each class is one contiguous block: one matrix product
    against that class's rows of the word matrix, one log-softmax. The backward pass reuses
    the saved log-softmax, so a class costs three small GEMMs in all.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        weight: Tensor,
        bias: Tensor,
        targets: Tensor,
        token_class: Tensor,
        bounds: list[int],
    ) -> Tensor:
        order = torch.argsort(token_class, stable=True)
        counts = torch.bincount(token_class, minlength=len(bounds) - 1).tolist()
        device_type = h.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else h.dtype
        hs = h.detach()[order].to(dtype)
        ts = targets[order]
        w, b = weight.detach().to(dtype), bias.detach().to(dtype)
        acc = torch.promote_types(dtype, torch.float32)  # softmax in fp32 (or fp64) at least
        outs: list[Tensor] = []
        blocks: list[tuple[int, int, int, int, Tensor, Tensor]] = []
        start = 0
        for c, n in enumerate(counts):
            if n == 0:
                continue
            lo, hi, end = bounds[c], bounds[c + 1], start + n
            logp = torch.addmm(b[lo:hi], hs[start:end], w[lo:hi].t()).to(acc).log_softmax(-1)
            local = (ts[start:end] - lo).unsqueeze(1)
            outs.append(logp.gather(1, local).squeeze(1))
            blocks.append((start, end, lo, hi, logp, local))
            start = end
        ctx.blocks = blocks
        ctx.dtype, ctx.acc = dtype, acc
        ctx.save_for_backward(hs, order, w)
        out = torch.cat(outs)
        result = torch.empty_like(out)
        result[order] = out
        return result

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        hs, order, w = ctx.saved_tensors
        g = grad_out[order].to(ctx.acc)
        grad_hs: list[Tensor] = []
        # Every row of a class present in the batch is written below; only the rows of
        # absent classes need zeros (a fresh (V, H) zero fill each step costs more).
        grad_w = torch.empty(w.shape, dtype=ctx.acc, device=w.device)
        grad_b = torch.empty(w.shape[0], dtype=ctx.acc, device=w.device)
        done = 0
        for start, end, lo, hi, logp, local in ctx.blocks:
            if lo > done:
                grad_w[done:lo] = 0
                grad_b[done:lo] = 0
            # d log softmax(z)[t] / dz = onehot(t) - softmax(z), times the incoming gradient
            gz = logp.exp().mul_(-g[start:end].unsqueeze(1))
            gz.scatter_add_(1, local, g[start:end].unsqueeze(1))
            gz_c = gz.to(ctx.dtype)
            grad_hs.append(gz_c @ w[lo:hi])
            if gz_c.dtype == ctx.acc:  # straight into the gradient's rows, no temporary
                torch.mm(gz_c.t(), hs[start:end], out=grad_w[lo:hi])
            else:
                grad_w[lo:hi] = gz_c.t() @ hs[start:end]
            torch.sum(gz, 0, out=grad_b[lo:hi])
            done = hi
        grad_w[done:] = 0
        grad_b[done:] = 0
        grad_h = torch.empty(hs.shape, dtype=ctx.acc, device=hs.device)
        grad_h[order] = torch.cat(grad_hs).to(ctx.acc)
        return grad_h, grad_w, grad_b, None, None, None


class ClassSoftmax(OutputLayer):
    """P(w | h) = P(c(w) | h) P(w | c(w), h), Mikolov's class-based output layer.

    ``classes.weight`` (C, H) and ``classes.bias`` (C,) score the classes; ``words.weight``
    (V, H) and ``words.bias`` (V,) score each word against the others of its class. Class c
    holds the ids [bounds[c], bounds[c+1]) (see :func:`frequency_classes`).
    """

    def __init__(self, hidden_size: int, vocab_size: int, bounds: list[int]) -> None:
        super().__init__()
        if (
            bounds[0] != 0
            or bounds[-1] != vocab_size
            or any(a >= b for a, b in itertools.pairwise(bounds))
        ):
            raise ValueError("class bounds must rise strictly from 0 to the vocabulary size")
        self.bounds = list(bounds)
        C = len(bounds) - 1
        self.classes: nn.Linear = nn.Linear(hidden_size, C)
        self.words: nn.Linear = nn.Linear(hidden_size, vocab_size)
        self.class_of: Tensor
        sizes = torch.tensor([b - a for a, b in itertools.pairwise(bounds)])
        self.register_buffer("class_of", torch.repeat_interleave(torch.arange(C), sizes), False)

    def word_layer(self) -> nn.Linear:
        return self.words

    def log_prob(self, h: Tensor, targets: Tensor) -> Tensor:
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        token_class = self.class_of[flat_t]
        class_logp = F.cross_entropy(self.classes(flat_h), token_class, reduction="none").neg()
        word_logp = _WithinClass.apply(
            flat_h, self.words.weight, self.words.bias, flat_t, token_class, self.bounds
        )
        return (class_logp + word_logp).view(targets.shape)

    def log_probs(self, h: Tensor) -> Tensor:
        """Every word's log-probability: the whole V x H product, for sampling and checks."""
        shape = h.shape[:-1]
        flat = h.reshape(-1, h.shape[-1])
        acc = torch.promote_types(flat.dtype, torch.float32)
        class_logp = self.classes(flat).to(acc).log_softmax(-1)
        z = self.words(flat).to(acc)
        cls = self.class_of.expand_as(z)
        # a log-softmax inside each class: subtract the class's max, divide by its sum
        zmax = torch.full_like(class_logp, -math.inf).scatter_reduce(1, cls, z, "amax")
        z = z - zmax.gather(1, cls)
        sums = torch.zeros_like(class_logp).scatter_add(1, cls, z.exp())
        word_logp = z - sums.log().gather(1, cls)
        return (class_logp.gather(1, cls) + word_logp).view(*shape, -1)


# -- adaptive softmax ---------------------------------------------------------------------


def default_cutoffs(vocab_size: int) -> list[int]:
    """A head of the most frequent tenth of the words and two tail clusters."""
    cuts = sorted({max(1, vocab_size // 10), max(2, vocab_size // 2)})
    return [c for c in cuts if c < vocab_size]


class AdaptiveSoftmax(OutputLayer):
    """Grave et al.'s adaptive softmax: torch's ``AdaptiveLogSoftmaxWithLoss`` (``adaptive``).

    The ``cutoffs`` split the ids into a head (the most frequent words plus one entry per
    tail cluster) and tail clusters whose words are scored through a projection divided by
    ``div_value`` per cluster.
    """

    def __init__(
        self, hidden_size: int, vocab_size: int, cutoffs: list[int], div_value: float = 4.0
    ) -> None:
        super().__init__()
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
            hidden_size, vocab_size, cutoffs, div_value=div_value, head_bias=True
        )

    def log_prob(self, h: Tensor, targets: Tensor) -> Tensor:
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        out, _ = self.adaptive(flat_h, flat_t)
        return out.view(targets.shape)

    def log_probs(self, h: Tensor) -> Tensor:
        shape = h.shape[:-1]
        return self.adaptive.log_prob(h.reshape(-1, h.shape[-1])).view(*shape, -1)


OUTPUTS = ("full", "class", "adaptive")


def make_head(config: Any, hidden_size: int) -> OutputLayer:
    """The output layer a :class:`~rnnkit.models.ModelConfig` names (``config.output``)."""
    V = config.vocab_size
    if config.output == "class":
        bounds = config.class_bounds or frequency_classes(
            np.ones(V), config.classes or default_classes(V)
        )
        return ClassSoftmax(hidden_size, V, bounds)
    if config.output == "adaptive":
        return AdaptiveSoftmax(hidden_size, V, config.cutoffs or default_cutoffs(V))
    return FullSoftmax(hidden_size, V)


__all__ = [
    "OUTPUTS",
    "AdaptiveSoftmax",
    "ClassSoftmax",
    "FullSoftmax",
    "OutputLayer",
    "default_classes",
    "default_cutoffs",
    "frequency_classes",
    "make_head",
]
