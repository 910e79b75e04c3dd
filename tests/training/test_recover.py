"""Divergence (--recover): a non-finite loss or gradient rolls back to the last saved state,
lowers the learning rate, skips the batch and goes on; --recover 0 stops as before.

The divergence is injected: the language model's loss (or one gradient) is poisoned on chosen
batches, named by (epoch, index), as a bad batch in the data would be.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit.errors import RnnkitError
from rnnkit.tasks.lm import LanguageModelTask
from rnnkit.training.checkpoint import load_state
from rnnkit.training.metrics import read_metrics

SMALL = dict(
    hidden_size=16,
    batch_size=4,
    bptt=12,
    log_every=1,
    eval_batch_size=2,
    seed=3,
    lr=0.01,
    lr_schedule="constant",
    validate_every=4,
    epochs=2,
)


class Poison:
    """Patches the language model task: the batches at ``bad`` positions get a NaN loss (or,
    with ``grad``, an infinite gradient on one weight with a finite loss). Keeps what it saw:
    each trained position with its loss and whether it came with a carried state."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bad: set[tuple[int, int]], grad: bool):
        self.bad, self.grad = bad, grad
        self.at: tuple[int, int] = (-1, -1)
        self.seen: list[tuple[tuple[int, int], float, bool]] = []
        batch, loss = LanguageModelTask.batch, LanguageModelTask.loss
        poison = self

        def patched_batch(task: LanguageModelTask, epoch: int, index: int) -> Any:
            poison.at = (epoch, index)
            return batch(task, epoch, index)

        def patched_loss(task: LanguageModelTask, model: Any, b: Any, carry: Any) -> Any:
            value, units, state = loss(task, model, b, carry)
            if poison.at in poison.bad and model.training:
                if poison.grad:  # 0 * sqrt(w - w) is 0, and its gradient 0 * inf is NaN
                    w = model.head.linear.weight.flatten()[0]
                    value = value + 0.0 * torch.sqrt(w - w.detach())
                else:
                    value = value * math.nan
            if model.training:
                poison.seen.append((poison.at, float(value.detach()), carry is not None))
            return value, units, state

        monkeypatch.setattr(LanguageModelTask, "batch", patched_batch)
        monkeypatch.setattr(LanguageModelTask, "loss", patched_loss)

    def positions(self) -> list[tuple[int, int]]:
        return [at for at, _, _ in self.seen]


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def make(bad: set[tuple[int, int]], grad: bool = False) -> Poison:
        return Poison(monkeypatch, bad, grad)

    yield make


def finite_weights(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(path)).values())


def test_a_nan_loss_rolls_back_lowers_the_rate_and_skips_the_batch(
    tiny_corpus: Path, tmp_path: Path, poison: Any
) -> None:
    p = poison({(0, 6)})  # step 7; the last save before it is step 4's validation
    logs: list[str] = []
    result = rnnkit.train(tiny_corpus, tmp_path / "r", progress=False, log=logs.append, **SMALL)
    assert result.stopped == "finished 2 epochs"
    per_epoch = max(i for (e, i) in p.positions() if e == 0) + 1
    assert result.step == 2 * per_epoch - 1  # one batch passed over
    # rolled back to step 4 (batch 4): batches 4 and 5 again, then 7 after 5, 6 never again
    seen = p.positions()
    first = seen.index((0, 6))
    assert seen[: first + 1] == [(0, i) for i in range(7)]
    assert seen[first + 1 : first + 4] == [(0, 4), (0, 5), (0, 7)]
    assert seen.count((0, 6)) == 1 and seen.count((1, 6)) == 1  # only that epoch's batch
    # the weights, optimizer and carry went back: batch 4 again gives the same loss as before
    assert p.seen[first + 1][1] == p.seen[4][1]
    # the stream's hidden state starts from zeros after the gap, as at an epoch's start
    assert p.seen[first + 3][2] is False and p.seen[first + 2][2] is True

    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    recover = [r for r in records if r["kind"] == "recover"]
    assert len(recover) == 1
    rec = recover[0]
    assert rec["step"] == 4 and rec["lr"] == pytest.approx(0.005)
    assert rec["diverged_step"] == 7 and "the loss is nan" in rec["reason"]
    assert rec["skipped"] == {"epoch": 0, "batch": 6}
    after = records[records.index(rec) + 1 :]
    assert all(r["lr"] == pytest.approx(0.005) for r in after if "lr" in r)
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps))  # the replayed steps are not logged twice
    assert any("diverged" in line and "rolled back to step 4" in line for line in logs)

    for name in ("model.safetensors", "last.safetensors"):
        assert finite_weights(tmp_path / "r" / name), name
    position = load_state(tmp_path / "r" / "state.pt")["position"]
    assert position["recoveries"] == 1 and position["skip"] == [[0, 6]]
    assert all(math.isfinite(r["valid_loss"]) for r in records if "valid_loss" in r)


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_a_non_finite_gradient_with_a_finite_loss_is_a_divergence(
    tiny_corpus: Path, tmp_path: Path, poison: Any, clip: float
) -> None:
    poison({(0, 9)}, grad=True)
    result = rnnkit.train(tiny_corpus, tmp_path / "r", progress=False, clip=clip, **SMALL)
    assert result.stopped == "finished 2 epochs"
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    (rec,) = [r for r in records if r["kind"] == "recover"]
    assert rec["step"] == 8 and rec["diverged_step"] == 10
    assert "gradient norm is" in rec["reason"]
    assert finite_weights(tmp_path / "r" / "model.safetensors")


def test_recover_0_stops_at_the_first_divergence_as_before(
    tiny_corpus: Path, tmp_path: Path, poison: Any
) -> None:
    poison({(0, 6)})
    with pytest.raises(RnnkitError, match=r"training diverged at step 7 \(the loss is nan\); "):
        rnnkit.train(tiny_corpus, tmp_path / "r", progress=False, recover=0, **SMALL)
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert not [r for r in records if r["kind"] == "recover"]
    assert load_state(tmp_path / "r" / "state.pt")["position"]["step"] == 4  # the last good one
    assert finite_weights(tmp_path / "r" / "model.safetensors")
    assert finite_weights(tmp_path / "r" / "last.safetensors")


def test_after_n_recoveries_the_run_stops_with_the_message(
    tiny_corpus: Path, tmp_path: Path, poison: Any
) -> None:
    poison({(0, i) for i in range(6, 40)})  # every batch from 6 on diverges
    with pytest.raises(RnnkitError, match=r"after 2 recoveries \(--recover 2\); lower --lr"):
        rnnkit.train(tiny_corpus, tmp_path / "r", progress=False, recover=2, **SMALL)
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    recover = [r for r in records if r["kind"] == "recover"]
    assert [r["lr"] for r in recover] == pytest.approx([0.005, 0.0025])
    assert [r["skipped"]["batch"] for r in recover] == [6, 7]
    state = load_state(tmp_path / "r" / "state.pt")
    assert state["position"]["step"] == 4 and state["position"]["recoveries"] == 2
    assert finite_weights(tmp_path / "r" / "model.safetensors")


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_a_run_stopped_after_a_recovery_resumes_exactly(
    tiny_corpus: Path, tmp_path: Path, poison: Any, schedule: str
) -> None:
    poison({(0, 6)})
    settings = {**SMALL, "lr_schedule": schedule}
    full = rnnkit.train(tiny_corpus, tmp_path / "full", progress=False, **settings)
    part = rnnkit.train(tiny_corpus, tmp_path / "part", progress=False, max_steps=9, **settings)
    assert part.stopped == "reached --max-steps 9"
    rest = rnnkit.train(resume=tmp_path / "part", progress=False)
    assert rest.step == full.step
    a = load_file(str(tmp_path / "full" / "last.safetensors"))
    b = load_file(str(tmp_path / "part" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the lowered rate and the skipped batch were saved with the recovery
    lr = [r["lr"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if "lr" in r]
    assert lr[-1] < 0.005 + 1e-12


def test_a_non_finite_validation_is_never_the_best(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LanguageModelTask, "validate", lambda self, model: {"loss": math.nan})
    rnnkit.train(tiny_corpus, tmp_path / "r", progress=False, max_steps=9, **SMALL)
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    valid = [r for r in records if r["kind"] in ("valid", "final")]
    assert valid and not any(r["best"] for r in valid)
