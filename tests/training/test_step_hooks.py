"""The Trainer's per-step hooks: ``on_step`` sees every step's loss, ``last_grad_norm`` is the
gradient norm before clipping (kept with clip 0 only when ``record_grad_norm`` asks for it)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.diagnostics import RandomWindows
from rnnkit.errors import RnnkitError
from rnnkit.models import ModelConfig, RNNLanguageModel
from rnnkit.training import TrainConfig, Trainer


def make_trainer(tmp_path: Path, clip: float, lr: float = 0.01) -> Trainer:
    ids = np.random.default_rng(0).integers(0, 7, 300).astype(np.int32)
    probe = torch.from_numpy(ids[:30].astype(np.int64)).reshape(3, 10)
    task = RandomWindows(ids, batch_size=4, length=9, steps=4, seed=1, probe=probe)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=7, hidden_size=6))
    config = TrainConfig(batch_size=4, lr=lr, clip=clip, epochs=1, lr_schedule="constant")
    return Trainer(model, task, config, tmp_path, torch.device("cpu"), progress=False)


def grad_norm(trainer: Trainer) -> float:
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


@pytest.mark.parametrize(("clip", "record"), [(0.0, False), (0.0, True), (0.05, False)])
def test_on_step_sees_every_step_and_the_norm_before_clipping(
    tmp_path: Path, clip: float, record: bool
) -> None:
    trainer = make_trainer(tmp_path, clip)
    trainer.record_grad_norm = record
    seen: list[tuple[int, float, float | None, float]] = []

    def on_step(t: Trainer, loss: float) -> None:
        norm = None if t.last_grad_norm is None else float(t.last_grad_norm)
        seen.append((t.step, loss, norm, grad_norm(t)))  # grads as the optimizer used them

    trainer.fit(max_steps=4, on_step=on_step)
    assert [s[0] for s in seen] == [1, 2, 3, 4]
    assert all(math.isfinite(s[1]) for s in seen)
    for _, _, norm, used in seen:
        if clip == 0 and not record:
            assert norm is None  # plain training computes nothing extra
        elif clip == 0:
            assert norm == pytest.approx(used, rel=1e-5)
        else:
            assert norm is not None and norm > clip  # the norm before clipping ...
            assert used == pytest.approx(clip, rel=1e-4)  # ... the gradient after it


def test_on_step_sees_the_step_that_diverges(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, clip=0.0)
    with torch.no_grad():
        trainer.model.head.linear.bias[0] = float("nan")
    losses: list[float] = []
    with pytest.raises(RnnkitError, match="diverged at step 1"):
        trainer.fit(max_steps=4, on_step=lambda t, loss: losses.append(loss))
    assert len(losses) == 1 and math.isnan(losses[0])
