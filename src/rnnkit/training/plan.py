"""What ``rnnkit train`` chooses for the flags it is not given, from the corpus and the budget.

With ``--max-time`` of a minute or more, every language-model setting left unset is fitted
to the corpus and the time: validation paced by time instead of a step count tuned for one
corpus, a learning rate that falls linearly to 0 at the end of the budget instead of halving
itself to nothing on a noisy stall, an output layer by vocabulary size, and the model size
from a short measurement of this machine's training speed. The rules and the measurements
behind them are in docs/defaults.md. Without a budget the fixed defaults stay (there is
nothing to pace by); whatever a flag gives is never changed.

The model size rule: time a few real training steps of each hidden size on the ladder
(largest last) and keep the largest whose budget still covers ``TOKENS_PER_WEIGHT`` training
tokens per recurrent weight (fewer and a smaller model learns more in the time: the
compute-optimal trade of Hoffmann et al. 2022, coarsely) and that has at most
``WEIGHTS_PER_TOKEN`` recurrent weights per corpus token (beyond that even dropout does not
keep it from learning the corpus by heart). Dropout follows the passes over the corpus the
budget allows: none under one, more the more often each token is seen again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.models.config import ModelConfig

MIN_BUDGET = 60.0  # seconds: shorter runs are smoke tests, and keep the fixed defaults
LADDER = (128, 256, 512, 768, 1024)  # hidden sizes tried, smallest first
TOKENS_PER_WEIGHT = 10.0
WEIGHTS_PER_TOKEN = 2.0
VALIDATION_SHARE = 0.1  # of the budget: what the training-token estimate leaves out
VALIDATIONS = 10  # time-paced validations in the budget (the trainer keeps them <= 10%)
FULL_UP_TO = 2_000  # word vocabularies larger than this get the class layer
REAL_SPEED = 0.7  # the real loop (dropout, clipping, validation) against the bare steps timed
# dropout by the passes over the corpus the budget allows: (at least this many, dropout)
DROPOUT = {
    "word": ((0, 0.0), (1, 0.1), (3, 0.25), (10, 0.4)),
    "char": ((0, 0.0), (10, 0.1), (30, 0.2)),
}
WORD_VOCAB_CAP = 50_000  # most frequent words kept when neither --vocab-size nor --min-count
BATCH_SIZE = 64
EPOCH_CAP = 1_000  # with a budget, time ends the run; the epochs are only a cap
PROBE_STEPS = 3  # timed training steps per hidden size (after one warm-up step)
PROBE_SECONDS = 2.0  # ... or fewer when these run out first
PUNCTUATION = ",.;:!?\"')"


@dataclass
class Plan:
    """The settings chosen (``settings``), why (``reasons``), and the speeds measured."""

    settings: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    tokens_per_second: dict[int, float] = field(default_factory=dict)  # by hidden size
    expected_epochs: float | None = None
    probe_seconds: float = 0.0

    def choose(self, name: str, value: Any, why: str) -> None:
        self.settings[name] = value
        self.reasons[name] = why

    def to_dict(self) -> dict[str, Any]:
        """config.json's ``plan``: what was chosen, why, and the speeds behind it."""
        return {
            "settings": self.settings,
            "reasons": self.reasons,
            "tokens_per_second": {str(k): round(v, 1) for k, v in self.tokens_per_second.items()},
            "expected_epochs": self.expected_epochs,
            "probe_seconds": round(self.probe_seconds, 2),
        }

    def summary(self) -> list[str]:
        """Lines for the start of a run: each choice and its reason."""
        flags = {"validate_seconds": "validate-every-seconds"}
        return [
            f"  --{flags.get(name, name.replace('_', '-'))} {_show(value)}: {self.reasons[name]}"
            for name, value in self.settings.items()
        ]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- before the corpus is read ----------------------------------------------------------


def looks_untokenised(path: str | Path, sample_bytes: int = 1 << 20) -> float:
    """The share of words in the corpus's first MiB that carry punctuation at their end.

    Text split into words already (PTB) has almost none; raw prose has about one word in ten
    ("end,", "said."), which a whitespace split would turn into words of their own.
    """
    with open(path, "rb") as f:
        sample = f.read(sample_bytes).decode("utf-8", errors="ignore")
    words = sample.split()
    if not words:
        return 0.0
    glued = sum(1 for w in words if len(w) > 1 and w[-1] in PUNCTUATION and w[-2].isalnum())
    return glued / len(words)


def plan_data(
    plan: Plan, corpus: str | Path | None, level: str, given: Iterable[str], budget: float | None
) -> None:
    """The tokenizer and vocabulary limit, chosen before the corpus is read (word level)."""
    given = set(given)
    if budget is None or budget < MIN_BUDGET or level != "word":
        return
    if "tokenizer" not in given and corpus is not None and Path(corpus).is_file():
        share = looks_untokenised(corpus)
        if share > 0.02:
            plan.choose(
                "tokenizer",
                "words",
                f"{share:.0%} of the corpus's words carry punctuation: raw text, split into "
                "words and punctuation",
            )
    if not given & {"vocab_size", "min_count"}:
        plan.choose(
            "vocab_size",
            WORD_VOCAB_CAP,
            f"the {WORD_VOCAB_CAP:,} most frequent words at most (rarer ones become <unk>)",
        )


# -- once the corpus is read -------------------------------------------------------------


def recurrent_weights(hidden: int, input_size: int, layers: int, cell: str) -> int:
    """Weights of the recurrent layers (W_ax, W_aa and biases; x4 for LSTM, x3 for GRU)."""
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    first = gates * (hidden * input_size + hidden * hidden + 2 * hidden)
    rest = gates * (2 * hidden * hidden + 2 * hidden) * (layers - 1)
    return first + rest


def plan_model(
    plan: Plan,
    *,
    level: str,
    vocab_size: int,
    train_tokens: int,
    budget: float | None,
    model_kw: dict[str, Any],
    train_kw: dict[str, Any],
    speed: Callable[[dict[str, Any]], float],
) -> None:
    """Fill ``plan`` with the model and training settings ``model_kw`` and ``train_kw`` leave
    unset. ``speed(model_settings)`` measures training tokens/s of a model (see
    :func:`measure_speed`); it is called only for the sizes the rule needs."""
    if budget is None or budget < MIN_BUDGET:
        return
    word = level == "word"
    given = set(model_kw) | set(train_kw)
    if word and "output" not in given:
        if "cutoffs" in given:
            plan.choose("output", "adaptive", "--cutoffs given: the adaptive softmax")
        elif "classes" in given or vocab_size > FULL_UP_TO:
            plan.choose(
                "output",
                "class",
                f"{vocab_size:,} words: Mikolov's frequency classes (exact; about "
                f"{vocab_size / (2 * vocab_size**0.5):.0f}x less work than the full softmax, "
                "and in a budget of minutes ahead of the adaptive softmax)",
            )
        else:
            plan.choose("output", "full", f"{vocab_size:,} words: the full softmax is cheap")
    if word and "clip" not in given:
        plan.choose(
            "clip",
            0.25,
            "a tight gradient-norm clip: the recurrence's gradient spikes now and then",
        )
    if "batch_size" not in given:
        plan.choose("batch_size", BATCH_SIZE, "a wide batch keeps the matrix products busy")
    seconds = budget * (1 - VALIDATION_SHARE)
    settings = {**model_kw, **{k: v for k, v in plan.settings.items() if k in _MODEL_FIELDS}}
    layers = int(settings.get("num_layers", 1))
    cell = str(settings.get("cell", "rnn"))

    def weights(h: int) -> int:
        emb = settings.get("embedding_size") or (vocab_size if settings.get("one_hot") else h)
        return recurrent_weights(h, int(emb), layers, cell)

    def tokens(h: int) -> float:
        if h not in plan.tokens_per_second:
            plan.tokens_per_second[h] = speed({**settings, "hidden_size": h})
        return plan.tokens_per_second[h] * REAL_SPEED * seconds

    hidden = model_kw.get("hidden_size")
    if hidden is None:
        hidden = LADDER[0]
        for h in LADDER[1:]:
            if weights(h) > WEIGHTS_PER_TOKEN * train_tokens:
                break  # the corpus cannot feed a larger model
            if tokens(h) < TOKENS_PER_WEIGHT * weights(h):
                break  # the budget cannot
            hidden = h
        covered = tokens(hidden)
        plan.choose(
            "hidden_size",
            hidden,
            f"{weights(hidden):,} recurrent weights, {covered / 1e6:.1f}M training tokens in "
            f"the budget at {plan.tokens_per_second[hidden]:,.0f} tokens/s measured here "
            f"(the largest size with >= {TOKENS_PER_WEIGHT:g} tokens a weight and <= "
            f"{WEIGHTS_PER_TOKEN:g} weights a corpus token)",
        )
    epochs = tokens(int(hidden)) / max(1, train_tokens) if "dropout" not in given else None
    plan.expected_epochs = epochs
    if epochs is not None:
        dropout = next(p for least, p in reversed(DROPOUT[level]) if epochs >= least)
        plan.choose(
            "dropout",
            dropout,
            f"about {epochs:.1f} passes over the corpus in the budget"
            + (": each token seen once or less" if epochs < 1 else ""),
        )
    output = settings.get("output", "full")
    if (
        word
        and "tie_weights" not in given
        and output in ("full", "class")
        and not settings.get("one_hot")
        and settings.get("embedding_size") in (None, hidden)
    ):
        plan.choose("tie_weights", True, "word level: one table for input and output words")
    if "lr_schedule" not in given:
        plan.choose("lr_schedule", "linear", f"down to 0 at the end of the {budget:g} s budget")
    if "epochs" not in given:
        plan.choose("epochs", EPOCH_CAP, "the budget ends the run, not a count of passes")
    if "validate_every" not in given and "validate_seconds" not in given:
        every = budget / VALIDATIONS
        plan.choose(
            "validate_seconds",
            round(every, 1),
            f"{VALIDATIONS} validations in the budget (and after each pass over the corpus)",
        )


_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}


def measure_speed(
    settings: dict[str, Any],
    vocab_size: int,
    train_ids: np.ndarray,
    batch_size: int,
    bptt: int,
    device: torch.device,
    bf16: bool = False,
) -> float:
    """Training tokens/s of the model ``settings`` describe: a few real Adam steps on the
    corpus's first tokens (the class and adaptive layers' costs depend on which words come)."""
    from rnnkit.models import make_model

    model_settings = {k: v for k, v in settings.items() if k in _MODEL_FIELDS}
    cfg = ModelConfig(vocab_size=vocab_size, **model_settings)
    need = batch_size * (bptt + 1)
    ids = np.resize(train_ids[:need], need).astype(np.int64)  # repeats a short corpus
    block = torch.from_numpy(ids).view(batch_size, bptt + 1).to(device)
    inputs, targets = block[:, :-1], block[:, 1:]
    model = make_model(cfg).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times: list[float] = []
    began = time.perf_counter()
    for i in range(PROBE_STEPS + 1):
        t0 = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, _ = model.loss(inputs, targets, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step pays for allocations and kernel choices
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - began > PROBE_SECONDS:
                break
    # the median step: one step slowed by another process does not decide the model size
    return batch_size * bptt / max(float(np.median(times)), 1e-9)


__all__ = [
    "LADDER",
    "MIN_BUDGET",
    "Plan",
    "looks_untokenised",
    "measure_speed",
    "plan_data",
    "plan_model",
    "recurrent_weights",
]
