"""What `rnnkit train` chooses for the flags it is not given: the rules, and a run that uses them."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.training.metrics import read_metrics
from rnnkit.training.plan import (
    DROPOUT,
    LADDER,
    REAL_SPEED,
    TOKENS_PER_WEIGHT,
    WEIGHTS_PER_TOKEN,
    Plan,
    looks_untokenised,
    measure_speed,
    plan_data,
    plan_model,
    recurrent_weights,
)
from rnnkit.training.trainer import Trainer

PTB_LIKE = "the company said it will n't buy the stock for $ N million <unk> .\n" * 50
RAW = (
    'It was the best of times, it was the worst of times; "Come here," said he. '
    "She ran, and ran, and stopped.\n"
) * 50


def plan_for(
    *,
    level: str = "word",
    vocab_size: int = 10_000,
    train_tokens: int = 1_000_000,
    budget: float | None = 600.0,
    model_kw: dict[str, Any] | None = None,
    train_kw: dict[str, Any] | None = None,
    speed_at_256: float = 20_000.0,
) -> tuple[Plan, list[int]]:
    """A plan with a made-up machine whose speed falls with the square of the hidden size."""
    probed: list[int] = []

    def speed(settings: dict[str, Any]) -> float:
        probed.append(settings["hidden_size"])
        return speed_at_256 * (256 / settings["hidden_size"]) ** 2

    plan = Plan()
    plan_model(
        plan,
        level=level,
        vocab_size=vocab_size,
        train_tokens=train_tokens,
        budget=budget,
        model_kw=model_kw or {},
        train_kw=train_kw or {},
        speed=speed,
    )
    return plan, probed


def test_the_largest_size_the_budget_can_feed_is_chosen() -> None:
    plan, _ = plan_for()
    hidden = plan.settings["hidden_size"]
    seconds = 600 * 0.9
    tokens = {h: 20_000 * (256 / h) ** 2 * REAL_SPEED * seconds for h in LADDER}
    weights = {h: recurrent_weights(h, h, 1, "rnn") for h in LADDER}
    assert tokens[hidden] >= TOKENS_PER_WEIGHT * weights[hidden]
    larger = [h for h in LADDER if h > hidden]
    assert larger and tokens[larger[0]] < TOKENS_PER_WEIGHT * weights[larger[0]]
    # a machine four times faster affords a larger model
    fast, _ = plan_for(speed_at_256=80_000.0)
    assert fast.settings["hidden_size"] > hidden


def test_a_small_corpus_caps_the_size_whatever_the_budget() -> None:
    plan, probed = plan_for(train_tokens=40_000, speed_at_256=1e9)
    hidden = plan.settings["hidden_size"]
    assert recurrent_weights(hidden, hidden, 1, "rnn") <= WEIGHTS_PER_TOKEN * 40_000
    assert recurrent_weights(2 * hidden, 2 * hidden, 1, "rnn") > WEIGHTS_PER_TOKEN * 40_000
    assert max(probed) == hidden  # sizes the corpus rules out are never timed


def test_dropout_follows_the_passes_the_budget_allows() -> None:
    many, _ = plan_for(train_tokens=300_000)  # many passes over a small corpus
    assert many.expected_epochs is not None and many.expected_epochs > 10
    assert many.settings["dropout"] == DROPOUT["word"][-1][1] > 0
    few, _ = plan_for(train_tokens=3_000_000)
    assert few.expected_epochs is not None and 1 < few.expected_epochs < 10
    assert 0 < few.settings["dropout"] < many.settings["dropout"]
    once, _ = plan_for(train_tokens=100_000_000)
    assert once.expected_epochs is not None and once.expected_epochs < 1
    assert once.settings["dropout"] == 0.0
    # characters are many more tokens to learn from: the same passes need less dropout
    char, _ = plan_for(level="char", vocab_size=65, train_tokens=3_000_000)
    assert char.expected_epochs is not None and 1 < char.expected_epochs < 10
    assert char.settings["dropout"] < few.settings["dropout"]


def test_output_layer_by_vocabulary_size() -> None:
    small, _ = plan_for(vocab_size=1_500)
    assert small.settings["output"] == "full" and small.settings["tie_weights"] is True
    large, _ = plan_for(vocab_size=33_000)
    assert large.settings["output"] == "class" and large.settings["tie_weights"] is True
    assert large.settings["clip"] == 0.25
    char, _ = plan_for(level="char", vocab_size=65)
    assert not {"output", "tie_weights", "clip"} & set(char.settings)
    # a flag that belongs to one layer picks that layer
    tied, _ = plan_for(vocab_size=33_000, model_kw={"tie_weights": True})
    assert tied.settings["output"] == "class" and "tie_weights" not in tied.settings
    cut, _ = plan_for(vocab_size=33_000, model_kw={"cutoffs": [2000, 10000]})
    assert cut.settings["output"] == "adaptive" and "tie_weights" not in cut.settings
    few, _ = plan_for(vocab_size=1_500, model_kw={"classes": 20})
    assert few.settings["output"] == "class"


def test_the_schedule_and_validation_spend_the_budget() -> None:
    plan, _ = plan_for(budget=900.0)
    assert plan.settings["lr_schedule"] == "linear"
    assert plan.settings["validate_seconds"] == 90.0
    assert plan.settings["epochs"] >= 1000


def test_flags_given_are_never_changed() -> None:
    given_model = {"hidden_size": 100, "output": "class", "dropout": 0.1}
    given_train = {"lr_schedule": "plateau", "epochs": 3, "batch_size": 8, "validate_every": 50}
    plan, probed = plan_for(model_kw=given_model, train_kw=given_train)
    assert not set(plan.settings) & (set(given_model) | set(given_train))
    assert "validate_seconds" not in plan.settings  # --validate-every given: its pacing stays
    assert probed == []  # nothing left that needs the speed


def test_no_budget_or_a_short_one_keeps_the_fixed_defaults() -> None:
    for budget in (None, 30.0):
        plan, probed = plan_for(budget=budget)
        assert plan.settings == {} and probed == []
        plan = Plan()
        plan_data(plan, None, "word", set(), budget)
        assert plan.settings == {}


def test_raw_text_is_told_from_text_split_into_words(tmp_path: Path) -> None:
    ptb, raw = tmp_path / "ptb.txt", tmp_path / "raw.txt"
    ptb.write_text(PTB_LIKE, encoding="utf-8")
    raw.write_text(RAW, encoding="utf-8")
    assert looks_untokenised(ptb) == 0.0
    assert looks_untokenised(raw) > 0.1
    plan = Plan()
    plan_data(plan, raw, "word", set(), 600.0)
    assert plan.settings == {"tokenizer": "words", "vocab_size": 50_000}
    plan = Plan()
    plan_data(plan, ptb, "word", {"min_count"}, 600.0)
    assert plan.settings == {}
    plan = Plan()
    plan_data(plan, raw, "char", set(), 600.0)
    assert plan.settings == {}


def test_measure_speed_times_real_training_steps() -> None:
    ids = np.arange(5000, dtype=np.int32) % 50
    small = measure_speed({"hidden_size": 16}, 50, ids, 4, 8, torch.device("cpu"))
    large = measure_speed({"hidden_size": 512}, 50, ids, 4, 8, torch.device("cpu"))
    assert 0 < large < small


def test_a_budgeted_run_records_and_prints_what_it_chose(tmp_path: Path) -> None:
    corpus = tmp_path / "raw.txt"
    corpus.write_text(RAW, encoding="utf-8")
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", str(corpus), "--level", "word", "--max-time",
         "600", "--max-steps", "2", "--out", str(out), "--no-progress", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "chosen for this corpus and budget" in proc.stderr
    assert "--tokenizer words:" in proc.stderr and "--lr-schedule linear:" in proc.stderr
    config = json.loads((out / "config.json").read_text())
    chosen = config["plan"]["settings"]
    assert config["data"]["tokenizer"] == "words"
    assert config["model"]["hidden_size"] == chosen["hidden_size"] == LADDER[0]
    assert config["model"]["tie_weights"] is True and config["model"]["output"] == "full"
    assert config["training"]["lr_schedule"] == "linear"
    assert config["training"]["validate_seconds"] == 60.0
    assert set(config["plan"]["reasons"]) == set(chosen)
    assert "said" in json.loads((out / "vocab.json").read_text())["tokens"]  # not "said."


def test_a_flag_given_to_a_budgeted_run_is_kept(tiny_corpus: Path, tmp_path: Path) -> None:
    rnnkit.train(
        tiny_corpus, tmp_path / "r", max_time=600, max_steps=2, hidden_size=24, progress=False
    )
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["hidden_size"] == 24
    assert "hidden_size" not in config["plan"]["settings"]
    assert config["training"]["lr_schedule"] == "linear"
    rnnkit.train(tiny_corpus, tmp_path / "s", max_time=5, max_steps=2, progress=False)
    assert "plan" not in json.loads((tmp_path / "s" / "config.json").read_text())


@pytest.mark.parametrize("validation_cost", [0.0, 2.0])
def test_validate_every_seconds_paces_validation_by_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validation_cost: float
) -> None:
    """A clock of 0.1 s a step: validations every 1 s of it, or, when one validation takes
    2 s, nine times that apart (validation at most a tenth of the time)."""
    rng = np.random.default_rng(0)
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(rng.choice(list("abcdefgh \n"), 30_000)), encoding="utf-8")
    extra = [0.0]
    monkeypatch.setattr(Trainer, "_clock", lambda self: 0.1 * self.step + extra[0])
    real_validate = Trainer.validate

    def validate(self: Trainer) -> dict[str, float]:
        extra[0] += validation_cost
        return real_validate(self)

    monkeypatch.setattr(Trainer, "validate", validate)
    rnnkit.train(
        corpus, tmp_path / "r", hidden_size=8, batch_size=4, bptt=8, max_steps=60,
        validate_seconds=1.0, eval_batch_size=8, progress=False,
    )  # fmt: skip
    records = read_metrics(tmp_path / "r" / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "valid"]
    if validation_cost == 0:
        # due 1 s (10 steps) after the step that follows each (float sums: 11 or 12 apart)
        gaps = [b - a for a, b in itertools.pairwise(steps)]
        assert steps[0] == 10 and len(steps) == 5 and set(gaps) <= {11, 12}
    else:
        assert steps == [10]  # the next is due 9 x 2.1 s later, beyond step 60
