"""Output layers: from the recurrent features a_t to a distribution over the vocabulary.

The output layer owns the loss and the log-probabilities, so the three layers below are
interchangeable behind one interface (``logits``, ``log_probs``, ``log_prob``, ``loss``).
Every one is exact: probabilities are normalised over the whole vocabulary.

- :class:`FullSoftmax`: y_t = softmax(W_ya a_t + b_y); costs H x V per token.
- :class:`ClassSoftmax` (Mikolov et al. 2011): words are binned into classes by frequency
  and P(w | h) = P(c(w) | h) P(w | c(w), h); training and scoring cost H x (C + |c(w)|) per
  token, about H x 2 sqrt(V) with C = sqrt(V) classes instead of H x V.
- :class:`AdaptiveSoftmax` (Grave et al. 2017): torch's ``AdaptiveLogSoftmaxWithLoss``; the
  frequent words in a head, rarer ones in clusters of smaller dimension (a head of at most
  2,000 words by default).

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


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One index per row of ``probs`` (B, N), drawn with probability proportional to it.

    Inverse CDF: one uniform number and a binary search per row. torch.multinomial draws N
    exponential numbers per row instead (265 us of a 500 us generation step at V = 10k).
    A zero entry is never drawn: its CDF step is empty.
    """
    cdf = probs.double().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.view(-1).clamp_max(probs.shape[-1] - 1)


class OutputLayer(nn.Module):
    """The interface; inputs ``h`` have shape (..., H), targets the matching shape (...)."""

    # Scoring cuts long inputs into blocks of this many rows (None: never), so that a
    # full softmax's block of logits (rows x V) stays in cache: ~1.6x faster here.
    block_rows: int | None = None

    def score(self, h: Tensor, targets: Tensor) -> Tensor:
        """:meth:`log_prob` computed block by block (for evaluation; no gradient needed)."""
        rows = self.block_rows
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        if rows is None or flat_h.shape[0] <= rows:
            return self.log_prob(h, targets)
        parts = [
            self.log_prob(flat_h[i : i + rows], flat_t[i : i + rows])
            for i in range(0, flat_h.shape[0], rows)
        ]
        return torch.cat(parts).view(targets.shape)

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


# -- the full softmax's loss, fused and chunked -------------------------------------------------

# Positions per block of the fused loss (at most; blocks are equal). A block's logits stay
# in the last-level cache while they are reduced and turned into their gradient (1,024 x
# 10k floats: 40 MB, L3 here 260 MB), its products run near the GEMM peak, and under bf16
# there are few partial dW sums to add. 512 and 2,240 measured no better (docs/speed.md).
FUSED_ROWS = 1024


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of softmax(h W^T + b), a block of positions at a time.

    For each block of rows: z = h W^T + b in the compute dtype (bf16 under autocast, as
    F.linear would), then in float32 (float64 for float64 inputs, as F.cross_entropy takes
    bf16 logits) its softmax p, the loss -log p(target) (from the log-sum-exp where p
    underflows), and when gradients are wanted, in the same pass, dL/dz = (p - (1 - e)
    onehot(t) - e / V) / n (e: label smoothing, n: positions kept), from which the block's
    rows of dh and its share of dW and db follow. The full (positions x V) logits never exist
    at once: the next block reuses a block's buffers, and the softmax runs row by row in
    cache. Backward only scales the saved gradients by the incoming scalar, so training runs
    three products per block, as the unfused layer does, and a few passes over each block.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        ignore_index: int,
        label_smoothing: float,
        chunk_rows: int,
        dtype: torch.dtype,
        needs_grad: bool,
    ) -> Tensor:
        N, V = h.shape[0], weight.shape[0]
        dev = h.device
        acc = torch.promote_types(dtype, torch.float32)
        eps = float(label_smoothing)
        keep = targets != ignore_index
        count = keep.sum()
        # per-row weight of the mean; rows all ignored give zero gradients, as F.cross_entropy
        row_w = (keep.to(acc) / count.clamp_min(1).to(acc)).unsqueeze(1)
        safe_t = torch.where(keep, targets, 0).unsqueeze(1)
        # equal blocks: N = 2,240 in blocks of 1,024 is 3 x 747, not 1,024 + 1,024 + 192
        rows = -(-N // -(-N // chunk_rows)) if N else 1
        with torch.autocast(dev.type, enabled=False):
            hd, w = h.detach().to(dtype), weight.detach().to(dtype)
            b = None if bias is None else bias.detach().to(dtype)
            # one set of block buffers for every block: allocating 10s of MB a block costs
            # page faults each time
            z_buf = torch.empty(rows, V, dtype=dtype, device=dev)
            f_buf = z_buf if dtype == acc else torch.empty(rows, V, dtype=acc, device=dev)
            p_buf = torch.empty(rows, V, dtype=acc, device=dev)
            total = torch.zeros((), dtype=acc, device=dev)
            grad_h = grad_w = grad_b = dw_buf = None
            if needs_grad:
                grad_h = torch.empty(h.shape, dtype=h.dtype, device=dev)
                # the first block sets grad_w (no zero fill); no block: zero
                grad_w = (torch.empty if N else torch.zeros)(weight.shape, dtype=acc, device=dev)
                grad_b = torch.zeros(V, dtype=acc, device=dev)
                if dtype != acc:
                    dw_buf = torch.empty(weight.shape, dtype=dtype, device=dev)
            # below this a target's probability has lost precision (float32: ~1e-35)
            tiny = torch.finfo(acc).tiny * 2.0**10
            for i in range(0, N, rows):
                j = min(N, i + rows)
                hc, tc, wc, kc = hd[i:j], safe_t[i:j], row_w[i:j], keep[i:j]
                z, f, p = z_buf[: j - i], f_buf[: j - i], p_buf[: j - i]
                if b is not None:
                    torch.addmm(b, hc, w.t(), out=z)
                else:
                    torch.mm(hc, w.t(), out=z)
                if f is not z:
                    f.copy_(z)  # bf16 logits to float32, as F.cross_entropy takes them
                # softmax in one row-wise pass (it stays in cache); -log p(target) is the loss
                torch.softmax(f, 1, out=p)
                pt = p.gather(1, tc).squeeze(1)
                row = pt.log().neg_()
                low = pt < tiny
                if bool(low.any()):  # underflow: the log-sum-exp of those rows instead
                    lse = torch.logsumexp(f[low], 1)
                    row[low] = lse - f[low].gather(1, tc[low]).squeeze(1)
                if eps > 0:  # smoothing: minus the mean log-probability, z.mean - lse
                    lse = f.gather(1, tc).squeeze(1) + row
                    row.mul_(1 - eps).sub_(f.mean(1) - lse, alpha=eps)
                total += row.mul_(kc).sum()
                if not needs_grad:
                    continue
                assert grad_h is not None and grad_w is not None and grad_b is not None
                # dL/dz: softmax minus the (smoothed) one-hot target, / n; same-dtype passes
                # (a mixed-dtype multiply is 10x slower here), cast last into z's buffer
                g = p.scatter_add_(1, tc, torch.full_like(tc, eps - 1, dtype=acc))
                if eps > 0:
                    g.sub_(eps / V)
                g.mul_(wc)
                grad_b += g.sum(0)
                gz = g if dtype == acc else z.copy_(g)
                if grad_h.dtype == dtype:
                    torch.mm(gz, w, out=grad_h[i:j])
                else:
                    grad_h[i:j] = gz @ w
                if dtype == acc:  # the product accumulates in place
                    torch.addmm(grad_w, gz.t(), hc, beta=0 if i == 0 else 1, out=grad_w)
                else:  # bf16 block products (one: rounded once, as F.linear's), summed in fp32
                    assert dw_buf is not None
                    part = torch.mm(gz.t(), hc, out=dw_buf)
                    if i == 0:
                        grad_w.copy_(part)
                    else:
                        grad_w.add_(part)
        ctx.grads = (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None)
        ctx.grad_b = None if grad_b is None or bias is None else grad_b.to(bias.dtype)
        return total / count.to(acc)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w = ctx.grads
        grad_b = ctx.grad_b
        if grad_h is None:
            raise RuntimeError("the fused loss was computed without gradients")
        # the usual case, loss.backward(): a 1.0 that need not cost a pass over dW
        if not (grad_out.device.type == "cpu" and float(grad_out) == 1.0):
            grad_h, grad_w = grad_h * grad_out.to(grad_h.dtype), grad_w * grad_out.to(grad_w.dtype)
            grad_b = None if grad_b is None else grad_b * grad_out.to(grad_b.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


def fused_linear_cross_entropy(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    chunk_rows: int = FUSED_ROWS,
) -> Tensor:
    """``F.cross_entropy(F.linear(h, weight, bias), targets, ...)`` (mean over the positions
    whose target is not ``ignore_index``), ``chunk_rows`` positions at a time, without the
    whole (N, V) logits: see :class:`_FusedLinearCrossEntropy`. ``h`` is (N, H), ``weight``
    (V, H), ``targets`` (N,). Under autocast the products run in its dtype, as F.linear's.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    device = h.device.type
    dtype = torch.promote_types(h.dtype, weight.dtype)
    if torch.is_autocast_enabled(device) and dtype != torch.float64:
        dtype = torch.get_autocast_dtype(device)  # autocast leaves float64 alone
    needs_grad = torch.is_grad_enabled() and (
        h.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    out: Tensor = _FusedLinearCrossEntropy.apply(
        h, weight, bias, targets, ignore_index, label_smoothing, chunk_rows, dtype, needs_grad
    )
    return out


class FullSoftmax(OutputLayer):
    """y_t = softmax(W_ya a_t + b_y).

    ``linear.weight`` is W_ya with shape (V, H), ``linear.bias`` is b_y with shape (V,).
    """

    block_rows = 512
    # :meth:`loss` goes through :func:`fused_linear_cross_entropy` this many positions at a
    # time (None: the plain linear + cross-entropy, kept for comparison).
    fused_rows: int | None = FUSED_ROWS

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
        if self.fused_rows is not None:
            return fused_linear_cross_entropy(
                h.reshape(-1, h.shape[-1]),
                self.linear.weight,
                self.linear.bias,
                targets.reshape(-1),
                ignore_index=ignore_index,
                chunk_rows=self.fused_rows,
            )
        logits = self.linear(h)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=ignore_index,
        )


# -- class-based softmax ----------------------------------------------------------------------


def frequency_classes(counts: np.ndarray, num_classes: int) -> list[int]:
    """Mikolov's frequency binning (rnnlm-0.4b's default), sizes rounded to powers of two.

    ``counts`` are the training counts of the ids in id order (most frequent first). As in
    the RNNLM toolkit, walking the ids in order a word joins the current class, and the next
    word opens a new class once the running share of sqrt(count) passes (class + 1) / C; so
    very frequent words get classes of their own and rare ones share large classes. Each
    size is then rounded to the nearest power of two (and never below the size before it),
    so classes of one size sit side by side and train as one batched product (see
    :class:`ClassSoftmax`); the last class takes what is left. Returns increasing boundaries
    b, class c = ids [b[c], b[c+1]); about C classes (fewer for a tiny vocabulary).
    """
    V = len(counts)
    p = np.sqrt(np.asarray(counts, dtype=np.float64) / max(float(np.sum(counts)), 1.0))
    share = np.cumsum(p) / p.sum() if p.sum() > 0 else np.arange(1, V + 1) / V
    C = max(1, min(int(num_classes), V))
    mikolov, current = [0], 0
    for i, s in enumerate(share[:-1].tolist()):
        if s > (current + 1) / C and current < C - 1:
            current += 1
            mikolov.append(i + 1)
    mikolov.append(V)
    sizes = np.diff(mikolov)
    rounded = np.maximum.accumulate(2 ** np.round(np.log2(sizes)).astype(np.int64))
    bounds = [0]
    for size in rounded.tolist():
        if bounds[-1] + size >= V:
            break
        bounds.append(bounds[-1] + size)
    bounds.append(V)
    return bounds


def default_classes(vocab_size: int) -> int:
    """sqrt(V) classes, the choice that minimises C + V / C (Mikolov uses 100 for 10k words)."""
    return max(1, round(math.sqrt(vocab_size)))


class _ClassLayout:
    """Classes grouped into runs of equal size: run g is ``count`` classes of ``size`` words
    from class ``first`` (ids from ``lo``), so its rows of the word matrix view as one
    (count, size, H) block."""

    def __init__(self, bounds: list[int]) -> None:
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        self.bounds = torch.tensor(bounds)
        self.runs: list[tuple[int, int, int, int]] = []  # (first class, count, size, lo id)
        for c, size in enumerate(sizes):
            if self.runs and self.runs[-1][2] == size:
                first, count, _, lo = self.runs[-1]
                self.runs[-1] = (first, count + 1, size, lo)
            else:
                self.runs.append((c, 1, size, bounds[c]))
        run_of = [g for g, (_, count, _, _) in enumerate(self.runs) for _ in range(count)]
        self.run_of_class = torch.tensor(run_of)
        self.first_of_run = torch.tensor([r[0] for r in self.runs])
        self.count_of_run = [r[1] for r in self.runs]
        self.class_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))

    def to(self, device: torch.device) -> _ClassLayout:
        for name in ("bounds", "run_of_class", "first_of_run", "class_of"):
            setattr(self, name, getattr(self, name).to(device))
        return self


class _WithinClass(torch.autograd.Function):
    """log P(w | c(w), h) for a batch, computing only each token's own class.

    The tokens of each run of equal-size classes are laid out as a padded (count, n, H)
    block (n = the most tokens any class of the run has in this batch; padding rows are
    zero), so one batched product against the run's (count, size, H) view of the word
    matrix scores every token against its own class; a log-softmax over the last axis
    normalises within each class. About ten runs instead of a hundred classes: ten kernel
    launches where the per-class loop had a hundred. The backward pass is written out
    (d log softmax(z)[t] / dz = onehot(t) - softmax(z)) and reuses the saved log-softmax.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        weight: Tensor,
        bias: Tensor,
        targets: Tensor,
        layout: _ClassLayout,
    ) -> Tensor:
        # fp32 (fp64 for checks) even under bf16 autocast: these batched products are small
        # and oddly shaped, and bf16 ran them 2x slower on this CPU (avx512_bf16/AMX).
        dtype = acc = torch.promote_types(h.dtype, torch.float32)
        N, H = h.shape
        C = int(layout.run_of_class.shape[0])
        cls = layout.class_of[targets]
        counts = torch.bincount(cls, minlength=C)
        # the slot of each token in the padded layout: run offset + class row + rank in class
        order = torch.argsort(cls, stable=True)
        rank_sorted = (
            torch.arange(N, device=h.device) - (torch.cumsum(counts, 0) - counts)[cls[order]]
        )
        rank = torch.empty_like(rank_sorted)
        rank[order] = rank_sorted
        run = layout.run_of_class[cls]
        most = torch.zeros(len(layout.runs), dtype=counts.dtype, device=h.device)
        most = most.scatter_reduce(0, layout.run_of_class, counts, "amax")
        n_of_run = most.tolist()
        sizes = [count * n for count, n in zip(layout.count_of_run, n_of_run, strict=True)]
        offsets = [0, *itertools.accumulate(sizes)]
        off_t = torch.tensor(offsets[:-1], device=h.device)
        n_t = most.to(off_t.dtype)
        slot = off_t[run] + (cls - layout.first_of_run[run]) * n_t[run] + rank
        hpad = torch.zeros(offsets[-1], H, dtype=dtype, device=h.device)
        hpad[slot] = h.detach().to(dtype)
        tpad = torch.zeros(offsets[-1], dtype=torch.long, device=h.device)
        tpad[slot] = targets - layout.bounds[cls]
        w, b = weight.detach().to(dtype), bias.detach().to(dtype)
        outs: list[Tensor] = []
        saved: list[Tensor | None] = []
        for (_, count, size, lo), n, off in zip(layout.runs, n_of_run, offsets, strict=False):
            if n == 0:
                saved.append(None)
                continue
            hi = lo + count * size
            hg = hpad[off : off + count * n].view(count, n, H)
            wg = w[lo:hi].view(count, size, H)
            bg = b[lo:hi].view(count, 1, size)
            logp = torch.baddbmm(bg, hg, wg.transpose(1, 2)).to(acc).log_softmax(-1)
            outs.append(logp.gather(2, tpad[off : off + count * n].view(count, n, 1)).view(-1))
            saved.append(logp)
        ctx.layout, ctx.saved, ctx.n_of_run, ctx.offsets = layout, saved, n_of_run, offsets
        ctx.dtype, ctx.acc = dtype, acc
        ctx.save_for_backward(hpad, tpad, slot, w)
        return torch.cat(outs)[slot]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        hpad, tpad, slot, w = ctx.saved_tensors
        layout, acc, dtype = ctx.layout, ctx.acc, ctx.dtype
        H = hpad.shape[1]
        gpad = torch.zeros(hpad.shape[0], dtype=acc, device=hpad.device)
        gpad[slot] = grad_out.to(acc)
        grad_hpad = torch.empty(hpad.shape, dtype=dtype, device=hpad.device)
        grad_w = torch.empty(w.shape, dtype=acc, device=w.device)
        grad_b = torch.empty(w.shape[0], dtype=acc, device=w.device)
        for (_, count, size, lo), n, off, logp in zip(
            layout.runs, ctx.n_of_run, ctx.offsets, ctx.saved, strict=False
        ):
            hi = lo + count * size
            if logp is None:  # no token of this run in the batch
                grad_w[lo:hi] = 0
                grad_b[lo:hi] = 0
                continue
            g = gpad[off : off + count * n].view(count, n, 1)
            gz = logp.exp().mul_(-g)
            gz.scatter_add_(2, tpad[off : off + count * n].view(count, n, 1), g)
            gz_c = gz.to(dtype)
            torch.bmm(
                gz_c,
                w[lo:hi].view(count, size, H),
                out=grad_hpad[off : off + count * n].view(count, n, H),
            )
            hg = hpad[off : off + count * n].view(count, n, H)
            if dtype == acc:  # straight into the gradient's rows, no temporary
                torch.bmm(gz_c.transpose(1, 2), hg, out=grad_w[lo:hi].view(count, size, H))
            else:
                grad_w[lo:hi] = torch.bmm(gz_c.transpose(1, 2), hg).view(-1, H)
            grad_b[lo:hi] = gz.sum(1).view(-1)
        return grad_hpad[slot].to(acc), grad_w, grad_b, None, None


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
        self._layouts: dict[torch.device, _ClassLayout] = {}

    def layout(self, device: torch.device) -> _ClassLayout:
        """The runs of equal-size classes, with their index tensors on ``device``."""
        if device not in self._layouts:
            self._layouts[device] = _ClassLayout(self.bounds).to(device)
        return self._layouts[device]

    def word_layer(self) -> nn.Linear:
        return self.words

    def log_prob(self, h: Tensor, targets: Tensor) -> Tensor:
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        token_class = self.class_of[flat_t]
        class_logp = F.cross_entropy(self.classes(flat_h), token_class, reduction="none").neg()
        word_logp = _WithinClass.apply(
            flat_h, self.words.weight, self.words.bias, flat_t, self.layout(flat_h.device)
        )
        return (class_logp + word_logp).view(targets.shape)

    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw one word per row of h (B, H) from P(w | h), exactly, in two steps: a class
        from P(c | h), then a word from P(w | c, h): H x (C + |c|) work instead of H x V."""
        c = draw(self.classes(h).float().softmax(-1), generator)
        words = []
        for row, cls in enumerate(c.tolist()):
            lo, hi = self.bounds[cls], self.bounds[cls + 1]
            z = F.linear(h[row], self.words.weight[lo:hi], self.words.bias[lo:hi])
            words.append(lo + draw(z.float().softmax(-1).unsqueeze(0), generator))
        return torch.cat(words)

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
    """A head of the most frequent tenth of the words, at most 2,000, and two tail clusters
    from there and from half the words, at most 10,000 (V/10, V/2 up to 20k words).

    Every head word costs H multiply-adds per token, so a head of V/10 grows with V while
    the tail words it would add are rare: at 33k words on gutenberg a head of 2,000 instead
    of 3,300 trains 1.3x faster and reaches a ~6% lower test perplexity in the same 10
    minutes (benchmarks/output_layers.py, docs/speed.md).
    """
    cuts = sorted({max(1, min(vocab_size // 10, 2_000)), max(2, min(vocab_size // 2, 10_000))})
    return [c for c in cuts if c < vocab_size]


class AdaptiveSoftmax(OutputLayer):
    """Grave et al.'s adaptive softmax: torch's ``AdaptiveLogSoftmaxWithLoss`` (``adaptive``).

    The ``cutoffs`` split the ids into a head (the most frequent words plus one entry per
    tail cluster) and tail clusters whose words are scored through a projection divided by
    ``div_value`` per cluster. Training (:meth:`loss`) runs the head and each cluster
    through the full softmax's fused loss; scoring and sampling use torch's module.
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

    def loss(self, h: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """The mean of -log P(target | h), as torch's module computes it, but the head and
        each cluster go through :func:`fused_linear_cross_entropy`: no (positions x head)
        log-softmax, its gather and their gradients in memory (training steps 1.14x faster
        at 33k words and hidden 512: docs/speed.md). The head's loss covers every position
        (a tail word's target there is its cluster's entry); cluster i's covers its n_i
        positions, weighted n_i / n, so the sum is the mean over all n positions of the
        exact loss."""
        ada = self.adaptive
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        keep = flat_t != ignore_index
        if not bool(keep.all()):
            flat_h, flat_t = flat_h[keep], flat_t[keep]
        n = flat_t.numel()
        if n == 0:  # nothing to score: the mean of nothing, as the other layers give
            return super().loss(h, targets, ignore_index)
        head_t = flat_t.clone()
        parts: list[Tensor] = []
        for i, tail in enumerate(ada.tail):
            lo, hi = ada.cutoffs[i], ada.cutoffs[i + 1]
            rows = ((flat_t >= lo) & (flat_t < hi)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            head_t[rows] = ada.shortlist_size + i
            proj, out = tail.children()  # Linear(H, H / div^(i+1)), Linear(that, |cluster|)
            assert isinstance(proj, nn.Linear) and isinstance(out, nn.Linear)
            z = proj(flat_h.index_select(0, rows))
            part = fused_linear_cross_entropy(z, out.weight, out.bias, flat_t[rows] - lo)
            parts.append(part * (rows.numel() / n))
        loss = fused_linear_cross_entropy(flat_h, ada.head.weight, ada.head.bias, head_t)
        for part in parts:
            loss = loss + part
        return loss

    def log_probs(self, h: Tensor) -> Tensor:
        shape = h.shape[:-1]
        return self.adaptive.log_prob(h.reshape(-1, h.shape[-1])).view(*shape, -1)


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
    "AdaptiveSoftmax",
    "ClassSoftmax",
    "FullSoftmax",
    "OutputLayer",
    "default_classes",
    "default_cutoffs",
    "frequency_classes",
    "fused_linear_cross_entropy",
    "make_head",
]
