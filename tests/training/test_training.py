"""Training: learning, determinism, exact resume, validation, schedules, metrics, plots."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit.training import TrainResult
from rnnkit.training.metrics import read_metrics
from rnnkit.training.schedule import ValidationSchedule

SMALL = dict(hidden_size=16, batch_size=4, bptt=12, log_every=3, eval_batch_size=2, seed=3)


def weights(run: Path, name: str = "last.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / name))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_training_learns_the_tiny_corpus(tiny_run: Path) -> None:
    valid = [r for r in read_metrics(tiny_run / "metrics.jsonl") if r["kind"] == "valid"]
    assert len(valid) == 6  # one validation per epoch
    # uniform over the vocabulary would be ln(V) nats per char
    vocab = json.loads((tiny_run / "vocab.json").read_text())["tokens"]
    assert valid[-1]["valid_loss"] < 0.5 * math.log(len(vocab))
    for name in ("config.json", "vocab.json", "model.safetensors", "last.safetensors", "state.pt"):
        assert (tiny_run / name).is_file(), name


def test_same_seed_same_run(tiny_corpus: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        rnnkit.train(tiny_corpus, tmp_path / name, max_steps=8, progress=False, **SMALL)
    assert_same_weights(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize(
    "extra",
    [
        dict(cell="rnn"),
        dict(
            cell="lstm", num_layers=2, dropout=0.3, validate_every=10
        ),  # RNG and mid-epoch validation
        dict(cell="gru", optimizer="sgd", lr_schedule="rnnlm", lr=0.5),
        dict(cell="rnn", precision="bf16"),
        dict(cell="rnn", average=True, min_improvement=10.0, validate_every=4),
        dict(cell="rnn", lr_schedule="linear"),
    ],
)
def test_stopped_and_resumed_run_ends_with_the_same_weights(
    tiny_corpus: Path, tmp_path: Path, extra: dict
) -> None:
    settings = {**SMALL, "epochs": 2, **extra}
    full = rnnkit.train(tiny_corpus, tmp_path / "full", progress=False, **settings)
    assert full.stopped == "finished 2 epochs"
    part = rnnkit.train(tiny_corpus, tmp_path / "part", max_steps=5, progress=False, **settings)
    assert part.stopped == "reached --max-steps 5"
    part = rnnkit.train(resume=tmp_path / "part", max_steps=11, progress=False)
    rest = rnnkit.train(resume=tmp_path / "part", progress=False)
    assert rest.stopped == "finished 2 epochs" and rest.step == full.step
    assert_same_weights(tmp_path / "full", tmp_path / "part")
    a = read_metrics(tmp_path / "full" / "metrics.jsonl")
    b = read_metrics(tmp_path / "part" / "metrics.jsonl")

    # (the part run also holds the validations at its stops, kind "final")
    def strip(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["kind"], r["step"], r.get("valid_loss")) for r in rs if r["kind"] != "final"]

    assert strip(a) == strip(b)  # no record lost or written twice by the stops


def test_best_weights_are_the_best_validation(tiny_run: Path) -> None:
    valid = [r for r in read_metrics(tiny_run / "metrics.jsonl") if r["kind"] == "valid"]
    best = min(valid, key=lambda r: r["valid_loss"])
    result = rnnkit.evaluate(tiny_run, tiny_run.parent / "tiny.txt", device="cpu")
    assert result.tokens > 0
    # model.safetensors holds the weights of the best validation step
    from safetensors import safe_open

    with safe_open(str(tiny_run / "model.safetensors"), "pt") as f:
        assert f.metadata()["step"] == str(best["step"])


def test_rnnlm_schedule_halves_then_stops() -> None:
    s = ValidationSchedule("rnnlm", lr=1.0, min_improvement=1.01, patience=0)
    assert s.step(5.0) == (True, None) and s.lr == 1.0
    assert s.step(4.0) == (True, None) and s.lr == 1.0
    assert s.step(3.99) == (True, None) and s.lr == 0.5  # improved by < 1%: start halving
    assert s.step(3.5) == (True, None) and s.lr == 0.25  # keep halving every validation
    _best, stop = s.step(3.49)
    assert stop is not None and "stopped improving" in stop


def test_plateau_schedule_and_patience() -> None:
    s = ValidationSchedule("plateau", lr=1.0, min_improvement=1.003, patience=2)
    s.step(2.0)
    s.step(2.1)
    assert s.lr == 0.5
    _, stop = s.step(2.2)
    assert stop is not None and "patience" in stop


@pytest.mark.parametrize(
    ("kind", "losses", "stops_at"),
    [
        ("plateau", [5.0, 5.0, 5.0, 5.0], 2),  # halved at the 2nd and 3rd: 0.25 < 0.3
        ("rnnlm", [5.0, 4.99, 4.0, 3.0], 2),  # halving from the 2nd, still improving
        ("step", [5.0, 4.0, 3.0, 2.0], 2),  # decay_after 1: 1, 0.5, 0.25
    ],
)
def test_min_lr_stops_once_the_rate_falls_below_it(
    kind: str, losses: list[float], stops_at: int
) -> None:
    s = ValidationSchedule(kind, 1.0, min_improvement=1.01, patience=0, decay_after=1, min_lr=0.3)
    stops = [s.step(loss, epochs_done=i)[1] for i, loss in enumerate(losses)]
    assert all(stop is None for stop in stops[:stops_at])
    assert "--min-lr 0.3" in str(stops[stops_at]) and s.lr < 0.3


def test_min_lr_leaves_linear_and_zero_alone() -> None:
    s = ValidationSchedule("linear", lr=1.0, min_improvement=1.0, patience=0, min_lr=0.5)
    s.at_progress(0.9)
    assert s.step(1.0) == (True, None)
    s = ValidationSchedule("plateau", lr=1.0, min_improvement=1.0, patience=0)
    assert all(s.step(1.0)[1] is None for _ in range(50))  # min_lr 0: never stops


def test_step_schedule_decays_after_each_epoch() -> None:
    # Zaremba et al.'s code: epoch i (from 0) runs at lr * decay ** max(i + 1 - decay_after, 0)
    s = ValidationSchedule("step", lr=1.0, min_improvement=1.0, patience=0, decay_after=2)
    s.step(5.0, epochs_done=1)
    assert s.lr == 1.0  # the 2nd epoch still at the initial rate
    s.step(3.9, epochs_done=None)  # a validation inside an epoch changes nothing
    assert s.lr == 1.0
    s.step(4.0, epochs_done=2)
    assert s.lr == 0.5  # the 3rd epoch decayed once
    s.step(9.0, epochs_done=3)  # whatever the loss
    assert s.lr == 0.25


def _train_step_schedule(corpus: Path, out: Path, **settings: Any) -> TrainResult:
    """SGD at lr 1 for two epochs, then times 0.25 after every epoch."""
    settings = {**SMALL, "patience": 0, **settings}
    return rnnkit.train(
        corpus,
        out,
        progress=False,
        optimizer="sgd",
        lr=1.0,
        lr_schedule="step",
        lr_decay=0.25,
        decay_after=2,
        **settings,
    )


def test_step_schedule_in_training(tiny_corpus: Path, tmp_path: Path) -> None:
    """Zaremba's schedule: the lr recorded after each epoch is lr * decay^(epoch - after)."""
    _train_step_schedule(tiny_corpus, tmp_path / "r", epochs=4)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    lrs = [r["lr"] for r in map(json.loads, lines) if r["kind"] == "valid"]
    assert lrs == [1.0, 0.25, 0.0625, 0.015625]  # the rate each next epoch runs at


def test_min_lr_ends_a_run(tiny_corpus: Path, tmp_path: Path) -> None:
    """The step schedule above with --min-lr 0.1: the run stops after the 3rd epoch (0.0625)."""
    result = _train_step_schedule(tiny_corpus, tmp_path / "r", epochs=6, min_lr=0.1)
    assert result.epoch == 3 and "--min-lr 0.1" in result.stopped


def test_linear_schedule_reaches_zero_at_the_end_of_the_epochs(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    settings = {**SMALL, "epochs": 3, "patience": 0, "log_every": 1}
    result = rnnkit.train(
        tiny_corpus, tmp_path / "r", progress=False, lr=0.01, lr_schedule="linear", **settings
    )
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    total = result.step  # 3 epochs of steps
    assert sorted(lrs) == list(range(1, total + 1))
    for step, lr in lrs.items():  # step s ran at lr * (1 - (s - 1) / total)
        assert lr == pytest.approx(0.01 * (1 - (step - 1) / total))
    # validations leave the rate alone
    assert [r["lr"] for r in records if r["kind"] == "valid"] == [
        lrs[r["step"]] for r in records if r["kind"] == "valid"
    ]


def test_linear_schedule_follows_the_clock_when_max_time_ends_first(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    settings = {**SMALL, "epochs": 10_000, "patience": 0, "log_every": 1}
    rnnkit.train(
        tiny_corpus,
        tmp_path / "r",
        progress=False,
        lr=0.01,
        lr_schedule="linear",
        max_time=1.5,
        **settings,
    )
    lrs = [r["lr"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "train"]
    assert lrs[0] == pytest.approx(0.01, rel=0.05)
    assert lrs[-1] < 0.002  # near 0 as the 1.5 s run out, far from the epochs' end
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_on_validation_hook_sees_each_validation_and_is_off_the_clock(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    import time

    seen: list[tuple[int, float]] = []

    def hook(record: dict, model: torch.nn.Module) -> None:
        seen.append((record["step"], record["valid_loss"]))
        time.sleep(0.3)  # slow scoring in a benchmark must not eat the training budget

    t0 = time.perf_counter()
    result = rnnkit.train(
        tiny_corpus, tmp_path / "r", progress=False, on_validation=hook, epochs=3, **SMALL
    )
    wall = time.perf_counter() - t0
    valid = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "valid"]
    assert [s for s, _ in seen] == [r["step"] for r in valid] and len(seen) == 3
    assert wall - result.elapsed >= 0.85  # the three 0.3 s pauses are off the clock
    assert valid[-1]["time"] <= result.elapsed


def test_max_time_stops_cleanly(tiny_corpus: Path, tmp_path: Path) -> None:
    result = rnnkit.train(
        tiny_corpus, tmp_path / "r", max_time=0.5, epochs=1000, progress=False, **SMALL
    )
    assert result.stopped.startswith("reached --max-time")
    assert rnnkit.load(tmp_path / "r", weights="last") is not None


def test_plot_writes_a_png(tiny_run: Path, tmp_path: Path) -> None:
    out = rnnkit.plot(tiny_run, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vocabulary_comes_from_the_training_part_only(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("abab" * 50 + "zzzz", encoding="utf-8")  # 'z' only in the last 10%
    rnnkit.train(corpus, tmp_path / "r", max_steps=1, progress=False, **SMALL)
    tokens = json.loads((tmp_path / "r" / "vocab.json").read_text())["tokens"]
    assert "z" not in tokens and "a" in tokens


def test_average_keeps_the_mean_of_the_weights_once_validation_stalls(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """--average: no averaging before validation stalls; after, the validated and saved
    weights are the mean of the weights after each step since."""
    from rnnkit.training.trainer import Trainer

    # min_improvement 10: the second validation always counts as stalled
    settings = dict(
        SMALL, average=True, average_every=1, min_improvement=10.0, lr_schedule="constant"
    )
    rnnkit.train(
        tiny_corpus, tmp_path / "r", max_steps=8, progress=False, validate_every=4, **settings
    )
    valid = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "valid"]
    assert [r["averaged"] for r in valid] == [False, False]  # started at step 8, after saving

    captured: list[Trainer] = []
    original = Trainer.fit

    def spy(self: Trainer, *args: object, **kwargs: object) -> object:
        captured.append(self)
        return original(self, *args, **kwargs)

    Trainer.fit = spy  # type: ignore[method-assign]
    try:
        rnnkit.train(resume=tmp_path / "r", max_steps=8, progress=False)  # loads, no steps
    finally:
        Trainer.fit = original  # type: ignore[method-assign]
    trainer = captured[0]
    assert trainer.averaged is not None
    n = int(trainer.averaged.n_averaged)
    assert n >= 1  # the resumed run carried the average on
    mean = {k: v.clone() for k, v in trainer.scored_model.named_parameters()}
    for _ in range(3):
        trainer.train_step()
        n += 1
        for k, w in trainer.model.named_parameters():
            mean[k] += (w.detach() - mean[k]) / n
    for name, value in trainer.scored_model.named_parameters():
        torch.testing.assert_close(value, mean[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(value, dict(trainer.model.named_parameters())[name])
    # validation reads the average
    raw = trainer.validate()
    trainer.averaged = None
    assert trainer.validate() != raw
