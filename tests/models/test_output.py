"""The output layers: exact normalised probabilities, gradients, and the class binning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

import rnnkit
from rnnkit.errors import ConfigError
from rnnkit.models import ModelConfig, make_model
from rnnkit.models.output import (
    AdaptiveSoftmax,
    ClassSoftmax,
    FullSoftmax,
    OutputLayer,
    default_cutoffs,
    frequency_classes,
)

V, H = 300, 12


def zipf_counts(n: int = V) -> np.ndarray:
    return (10_000 / np.arange(1, n + 1)).astype(np.int64)


def heads() -> list[OutputLayer]:
    torch.manual_seed(0)
    out: list[OutputLayer] = [
        FullSoftmax(H, V),
        ClassSoftmax(H, V, frequency_classes(zipf_counts(), 17)),
        AdaptiveSoftmax(H, V, [20, 100]),
    ]
    for head in out:
        head.reset_parameters()
        for p in head.parameters():  # larger weights than the init, so the test has teeth
            p.data.normal_(0, 1.0)
    return [h.double() for h in out]


@pytest.mark.parametrize("head", heads(), ids=lambda h: type(h).__name__)
def test_every_position_sums_to_one_over_the_whole_vocabulary(head: OutputLayer) -> None:
    h = torch.randn(4, 6, H, dtype=torch.float64)
    logp = head.log_probs(h)
    assert logp.shape == (4, 6, V)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(4, 6, dtype=torch.float64))
    # the sampler reads logits(): their softmax must be the same distribution
    torch.testing.assert_close(head.logits(h).log_softmax(-1), logp)


@pytest.mark.parametrize("head", heads(), ids=lambda h: type(h).__name__)
def test_log_prob_and_loss_agree_with_log_probs(head: OutputLayer) -> None:
    h = torch.randn(3, 7, H, dtype=torch.float64)
    t = torch.randint(0, V, (3, 7))
    full = head.log_probs(h).gather(-1, t.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(head.log_prob(h, t), full)
    t_pad = t.clone()
    t_pad[:, -2:] = -100  # padding is skipped by the loss
    torch.testing.assert_close(head.loss(h, t_pad), -full[:, :-2].mean())


@pytest.mark.parametrize("head", heads()[1:], ids=lambda h: type(h).__name__)
def test_loss_gradients_equal_those_of_the_full_distribution(head: OutputLayer) -> None:
    """The fast training path (one class per token) has the gradient of the exact loss."""
    h = torch.randn(40, H, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (40,))
    fast = torch.autograd.grad(head.loss(h, t), [h, *head.parameters()])
    slow_loss = -head.log_probs(h).gather(1, t.unsqueeze(1)).mean()
    slow = torch.autograd.grad(slow_loss, [h, *head.parameters()])
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b)


def test_class_layer_gradcheck_against_finite_differences() -> None:
    head = heads()[1]
    assert isinstance(head, ClassSoftmax)
    h = torch.randn(9, H, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (9,))
    assert torch.autograd.gradcheck(lambda x: head.log_prob(x, t), (h,))


def test_class_layer_under_bf16_autocast_is_close_to_fp32() -> None:
    torch.manual_seed(1)
    head = ClassSoftmax(H, V, frequency_classes(zipf_counts(), 17))
    head.reset_parameters()
    h = torch.randn(64, H)
    t = torch.randint(0, V, (64,))
    exact = head.loss(h, t)
    with torch.autocast("cpu", torch.bfloat16):
        approx = head.loss(h, t)
    assert approx.dtype == torch.float32
    assert abs(approx.item() - exact.item()) < 0.02 * exact.item()


def test_frequency_classes_follow_mikolov() -> None:
    counts = zipf_counts(1000)
    bounds = frequency_classes(counts, 30)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == 1000 and (sizes > 0).all()
    assert 15 <= len(sizes) <= 60  # about C classes
    assert sizes[0] <= 4 and sizes[-2] >= 32  # frequent words in small classes, rare in big
    body = sizes[:-1]  # the last class takes what is left
    assert ((body & (body - 1)) == 0).all() and (np.diff(body) >= 0).all()  # powers of two
    tiny = frequency_classes(np.ones(5), 10)  # never more classes than words
    assert tiny[0] == 0 and tiny[-1] == 5 and (np.diff(tiny) > 0).all()


def test_class_layer_batches_runs_of_equal_size() -> None:
    head = ClassSoftmax(H, V, frequency_classes(zipf_counts(), 40))
    runs = head.layout(torch.device("cpu")).runs
    assert len(runs) <= 10 < len(head.bounds) - 1  # far fewer products than classes
    # any bounds work (runs of one class each in the worst case)
    odd = ClassSoftmax(4, 10, [0, 1, 3, 6, 10]).double()
    h = torch.randn(8, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 9, 9, 5, 0])
    full = odd.log_probs(h).gather(1, t.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(odd.log_prob(h, t), full)


@pytest.mark.parametrize("output", ["class", "adaptive"])
def test_train_eval_score_generate_with_each_output(output: str, tmp_path: Path) -> None:
    text = "\n".join(" ".join(f"w{(i * 7 + j * 3) % 40}" for j in range(12)) for i in range(200))
    corpus = tmp_path / "words.txt"
    corpus.write_text(text + "\n", encoding="utf-8")
    extra = {"classes": 6} if output == "class" else {"cutoffs": [8, 20]}
    rnnkit.train(
        corpus,
        tmp_path / "run",
        level="word",
        output=output,
        hidden_size=16,
        batch_size=4,
        bptt=10,
        epochs=2,
        lr=0.01,
        progress=False,
        **extra,
    )
    model = rnnkit.load(tmp_path / "run")
    cfg = model.model.config
    assert cfg.output == output
    if output == "class":
        assert cfg.class_bounds is not None and len(cfg.class_bounds) == 7
    result = rnnkit.evaluate(model, corpus)
    scores = rnnkit.score(model, corpus)
    assert result.perplexity < 41  # learnt something: better than uniform over 41 tokens
    assert scores.num_sentences == 200 and np.isfinite(scores.scores.token_log10).all()
    assert len(rnnkit.generate(model, max_new_tokens=5, num_samples=2, seed=1)) == 2


def test_tied_class_layer_shares_the_embedding() -> None:
    cfg = ModelConfig(vocab_size=50, hidden_size=8, output="class", classes=5, tie_weights=True)
    model = make_model(cfg)
    assert isinstance(model.head, ClassSoftmax)
    assert model.head.words.weight is model.embedding.weight  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(output="softmax"), "--output must be full, class or adaptive"),
        (dict(output="class", classes=80), "--classes must be between 1 and"),
        (dict(classes=5), "--classes applies only to --output class"),
        (dict(output="adaptive", cutoffs=[30, 10]), "--cutoffs must rise strictly"),
        (dict(output="adaptive", cutoffs=[10, 50]), "--cutoffs must rise strictly"),
        (dict(output="adaptive", tie_weights=True), "not adaptive"),
    ],
)
def test_bad_output_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(vocab_size=50, hidden_size=8, **kwargs)


def test_two_step_class_sampling_draws_the_exact_distribution() -> None:
    """Class, then word: the frequencies of 40,000 draws match P(w | h), with and without a
    banned word (drawn again: the distribution renormalised without it)."""
    from rnnkit.generation import _draw_two_step

    torch.manual_seed(0)
    head = ClassSoftmax(6, 20, frequency_classes(zipf_counts(20), 5))
    for p in head.parameters():
        p.data.normal_(0, 1.0)
    h = torch.randn(1, 6).expand(40_000, 6)
    exact = head.log_probs(h[:1]).exp().squeeze(0)
    gen = torch.Generator().manual_seed(1)
    for banned in ([], [3]):
        with torch.no_grad():
            tok = _draw_two_step(head, h, torch.tensor(banned, dtype=torch.long), gen)
        freq = torch.bincount(tok, minlength=20).double() / len(tok)
        want = exact.double().clone()
        want[banned] = 0
        want /= want.sum()
        assert (freq - want).abs().max() < 0.01  # 5 standard errors at p = 0.25
        assert all(freq[b] == 0 for b in banned)


# -- the adaptive softmax's default cutoffs at large vocabularies ------------------------------


@pytest.mark.parametrize(
    ("vocab_size", "cutoffs"),
    [
        (3, [1, 2]),
        (50, [5, 25]),
        (10_000, [1_000, 5_000]),  # PTB: V/10, V/2 as before
        (20_000, [2_000, 10_000]),
        (33_000, [2_000, 10_000]),  # gutenberg: a head of 2,000, not 3,300 (3x faster there)
        (100_000, [2_000, 10_000]),
    ],
)
def test_default_cutoffs_cap_the_head_at_2000_words(vocab_size: int, cutoffs: list[int]) -> None:
    assert default_cutoffs(vocab_size) == cutoffs


def test_adaptive_layer_at_33k_words_is_exact_with_the_default_cutoffs() -> None:
    """The library's choice at a gutenberg-sized vocabulary: every position normalised over
    all 33,000 words, log_prob and the loss equal to the full distribution's, and the fast
    loss's gradients equal to those of the full distribution."""
    big = 33_000
    torch.manual_seed(0)
    model = make_model(ModelConfig(vocab_size=big, hidden_size=8, output="adaptive"))
    head = model.head.double()
    assert isinstance(head, AdaptiveSoftmax)
    assert head.adaptive.cutoffs == [2_000, 10_000, big]
    for p in head.parameters():  # larger weights than the init, so the test has teeth
        p.data.normal_(0, 1.0)
    h = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    # a target in the head and in each cluster, and the last word
    t = torch.tensor([[0, 1_999, 2_000, 9_999, 10_000], [big - 1, 5, 3_000, 20_000, 1_000]])
    logp = head.log_probs(h)
    assert logp.shape == (2, 5, big)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 5, dtype=torch.float64))
    exact = logp.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(head.log_prob(h, t), exact)
    params = [h, *head.parameters()]
    fast = torch.autograd.grad(head.loss(h, t), params)
    slow = torch.autograd.grad(-exact.mean(), params)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b)


# -- the full softmax's fused, chunked loss ----------------------------------------------------


def full_pair(dtype: torch.dtype, rows: int | None) -> tuple[FullSoftmax, FullSoftmax]:
    """The same full softmax twice: fused ``rows`` positions at a time, and unfused."""
    torch.manual_seed(3)
    fused = FullSoftmax(H, V).to(dtype)
    for p in fused.parameters():
        p.data.normal_(0, 1.0)
    plain = FullSoftmax(H, V).to(dtype)
    plain.load_state_dict(fused.state_dict())
    fused.fused_rows, plain.fused_rows = rows, None
    return fused, plain


def loss_and_grads(
    head: FullSoftmax, h: Tensor, t: Tensor, ignore_index: int = -100
) -> tuple[Tensor, ...]:
    h = h.detach().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    loss = head.loss(h, t, ignore_index=ignore_index)
    loss.backward()
    grads = (h.grad, head.linear.weight.grad, head.linear.bias.grad)
    assert all(g is not None for g in grads)
    return (loss.detach(), *grads)  # type: ignore[return-value]


@pytest.mark.parametrize("rows", [1, 7, 8, 40, 1024])  # 7 does not divide 40, 8 does
@pytest.mark.parametrize("ignore_index", [-100, 0])  # -100: torch's; 0: the LM's PAD id
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-6)], ids=["fp64", "fp32"]
)
def test_fused_full_softmax_equals_the_unfused_layer(
    rows: int, ignore_index: int, dtype: torch.dtype, tol: float
) -> None:
    """Loss, dh, dW and db of the fused loss equal F.linear + F.cross_entropy's, with skipped
    positions, for block sizes that do and do not divide the 40 positions."""
    fused, plain = full_pair(dtype, rows)
    h = torch.randn(5, 8, H, dtype=dtype) * 2
    t = torch.randint(1, V, (5, 8))
    t[0, :3] = ignore_index
    t[3, 5] = ignore_index
    got, want = loss_and_grads(fused, h, t, ignore_index), loss_and_grads(plain, h, t, ignore_index)
    assert got[1].shape == h.shape and got[0].dtype == dtype
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # the skipped positions do count: without them the loss differs
    assert abs(fused.loss(h, t.clamp_min(1)).item() - got[0].item()) > 1e-3


def test_fused_full_softmax_gradcheck() -> None:
    """Finite differences of the fused loss in h, W and b (a skipped position, blocks of 3)."""
    from rnnkit.models.output import fused_linear_cross_entropy

    torch.manual_seed(4)
    h = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([3, -100, 0, 10, 7, 7, 1])
    for eps in (0.0, 0.2):
        assert torch.autograd.gradcheck(
            lambda h, w, b, eps=eps: fused_linear_cross_entropy(
                h, w, b, t, label_smoothing=eps, chunk_rows=3
            ),
            (h, w, b),
        )


def test_fused_label_smoothing_equals_torch() -> None:
    from rnnkit.models.output import fused_linear_cross_entropy

    torch.manual_seed(5)
    h = torch.randn(30, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (30,))
    t[::4] = -100
    fused = fused_linear_cross_entropy(h, w, b, t, label_smoothing=0.1, chunk_rows=8)
    plain = torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(h, w, b), t, label_smoothing=0.1
    )
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
    for a, c in zip(
        torch.autograd.grad(fused, (h, w, b)), torch.autograd.grad(plain, (h, w, b)), strict=True
    ):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rows", [16, 1024])  # several blocks (dW summed in fp32), one block
def test_fused_full_softmax_under_bf16_autocast(rows: int) -> None:
    """Under bf16 autocast the fused loss runs its products in bf16, as the unfused layer's
    F.linear does: loss and gradients float32, as close to the fp32 values as the unfused
    layer's, and within bf16 rounding of the unfused layer's."""
    fused, plain = full_pair(torch.float32, rows)
    h = torch.randn(4, 30, H)
    t = torch.randint(0, V, (4, 30))
    t[1, :5] = -100
    exact = loss_and_grads(plain, h, t)
    with torch.autocast("cpu", torch.bfloat16):
        got, want = loss_and_grads(fused, h, t), loss_and_grads(plain, h, t)
    for a, b, x in zip(got, want, exact, strict=True):
        assert a.dtype == torch.float32
        scale = x.abs().max().item()
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * scale)
        assert (a - x).abs().max() <= 1.5 * (b - x).abs().max() + 1e-6 * scale
    assert (got[2] - exact[2]).abs().max() > 0  # it did run in bf16


def test_fused_full_softmax_never_holds_the_whole_logits() -> None:
    """No tensor made while computing the fused loss and its gradients is as big as the
    (positions x V) logits; the unfused layer makes several."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for x in out if isinstance(out, tuple | list) else (out,):
                if isinstance(x, torch.Tensor):
                    self.numel = max(self.numel, x.numel())
            return out

    N = 200
    seen = {}
    for rows in (32, None):
        fused, _ = full_pair(torch.float32, rows)
        h = torch.randn(N, H, requires_grad=True)
        t = torch.randint(0, V, (N,))
        with Largest() as mode:
            fused.loss(h, t).backward()
        seen[rows] = mode.numel
    assert seen[32] == 29 * V  # 7 equal blocks of 29 rows (at most 32)
    assert seen[None] == N * V


def test_fused_full_softmax_without_gradients_and_with_every_position_skipped() -> None:
    fused, plain = full_pair(torch.float64, 8)
    h = torch.randn(20, H, dtype=torch.float64)
    t = torch.randint(0, V, (20,))
    with torch.no_grad():  # evaluation: the loss alone
        loss = fused.loss(h, t)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, plain.loss(h, t), rtol=1e-12, atol=1e-12)
    # every target skipped, or no position at all: nan loss and zero gradients, as
    # F.cross_entropy
    for hh, tt in ((h, torch.full((20,), -100)), (h[:0], t[:0])):
        got, want = loss_and_grads(fused, hh, tt), loss_and_grads(plain, hh, tt)
        assert got[0].isnan() and want[0].isnan()
        for a, b in zip(got[1:], want[1:], strict=True):
            torch.testing.assert_close(a, b)
            assert not a.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_loss_of_a_target_far_below_the_best_word(dtype: torch.dtype) -> None:
    """A target whose probability underflows (logit 150 or 900 below the best) still has its
    exact loss, not inf."""
    from rnnkit.models.output import fused_linear_cross_entropy

    gap = 150.0 if dtype == torch.float32 else 900.0
    h = torch.eye(4, 3, dtype=dtype, requires_grad=True)
    w = torch.zeros(6, 3, dtype=dtype)
    w[0, :] = gap  # word 0 far ahead of every other
    b = torch.zeros(6, dtype=dtype)
    t = torch.tensor([5, 0, 2, 3])
    fused = fused_linear_cross_entropy(h, w, b, t, chunk_rows=3)
    plain = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b), t)
    assert fused.isfinite() and fused > gap / 4
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(fused, h)[0], torch.autograd.grad(plain, h)[0])


@pytest.mark.parametrize("skip", [False, True])
def test_fused_adaptive_loss_equals_torchs_module(skip: bool) -> None:
    """AdaptiveSoftmax.loss (the head and clusters through the fused loss) has the loss and
    the gradients of torch's AdaptiveLogSoftmaxWithLoss, with skipped positions and with a
    cluster no target falls in."""
    torch.manual_seed(0)
    head = AdaptiveSoftmax(H, V, [20, 100, 200]).double()
    for p in head.parameters():
        p.data.normal_(0, 1.0)
    h = torch.randn(6, 9, H, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 100, (6, 9))  # no target in the last cluster [200, 300)
    t[0, :3] = torch.tensor([0, 150, 299])  # ... but here, in the head and in both
    if skip:
        t[1:3, 4:] = -100
    params = [h, *head.parameters()]
    keep = t != -100
    want = -head.adaptive(h[keep], t[keep]).output.mean()
    got = head.loss(h, t)
    torch.testing.assert_close(got, want)
    for a, b in zip(
        torch.autograd.grad(got, params), torch.autograd.grad(want, params), strict=True
    ):
        torch.testing.assert_close(a, b)
    t[0, :3] = torch.tensor([0, 1, 2])  # now the last cluster is empty: its weights get 0
    grads = torch.autograd.grad(head.loss(h, t), list(head.parameters()), allow_unused=True)
    last = head.adaptive.tail[2]
    for p, g in zip(head.parameters(), grads, strict=True):
        if any(p is q for q in last.parameters()):
            assert g is None or not bool(g.any())
