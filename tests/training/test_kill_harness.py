"""The kill harness (benchmarks/kill_harness.py): its counting of metrics.jsonl, and a short
run of it (SIGKILLs and a SIGTERM at random moments, each resumed; the end compared with an
uninterrupted run bit for bit)."""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kill_harness", ROOT / "benchmarks" / "kill_harness.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_harness"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def train(step: int, **kw: Any) -> dict[str, Any]:
    return {"kind": "train", "step": step, "epoch": step / 10, "tokens": 8 * step, "lr": 0.01,
            "train_loss": 1.0 / step, **kw}  # fmt: skip


def valid(step: int, loss: float, kind: str = "valid") -> dict[str, Any]:
    return {"kind": kind, "step": step, "epoch": step / 10, "tokens": 8 * step, "lr": 0.01,
            "valid_loss": loss, "best": True, "averaged": False}  # fmt: skip


REFERENCE = [train(1), train(2), valid(2, 3.0), train(3), train(4), valid(4, 2.5)]


def count(harness: ModuleType, got: list[dict[str, Any]], stops: set[int] | None = None) -> Any:
    report = harness.Report()
    harness.compare_metrics(REFERENCE, got, stops or set(), report)
    return report


def test_the_same_records_count_nothing(harness: ModuleType) -> None:
    # clocks may differ (time, tokens_per_second), and so may "best"
    got = [dict(r, time=9.9) for r in REFERENCE]
    got[2]["best"] = False
    r = count(harness, got)
    assert (r.missing, r.doubled, r.extra, r.out_of_order, r.values_differing) == (0, 0, 0, 0, 0)
    assert (r.train_records, r.valid_records, r.final_records) == (4, 2, 0)


def test_a_redone_step_left_twice_is_doubled_and_out_of_order(harness: ModuleType) -> None:
    # killed in step 4's validation (checkpoint at 2), resumed without dropping the records
    # of steps 3 and 4, which it trains again
    got = [*REFERENCE[:5], train(3), train(4), valid(4, 2.5)]
    r = count(harness, got)
    assert (r.doubled, r.missing, r.extra, r.out_of_order) == (2, 0, 0, 1)
    assert "train record of step 3 written 2 times" in r.details


def test_a_lost_record_is_missing_and_a_stray_one_extra(harness: ModuleType) -> None:
    got = [train(1), train(2), valid(2, 3.0), train(4), valid(4, 2.5), train(5)]
    r = count(harness, got)
    assert (r.missing, r.extra, r.doubled) == (1, 1, 0)
    assert "train record of step 3 missing" in r.details


def test_a_different_figure_or_position_is_counted(harness: ModuleType) -> None:
    got = [*REFERENCE[:5], valid(4, 2.5000001)]
    got[3] = train(3, lr=0.005)
    r = count(harness, got)
    assert r.values_differing == 2
    assert not (r.missing or r.doubled or r.extra)


def test_a_sigterm_stop_between_validations_needs_one_final_record(harness: ModuleType) -> None:
    with_final = [*REFERENCE[:4], valid(3, 2.8, "final"), *REFERENCE[4:]]
    assert not count(harness, with_final, {3}).missing  # SIGTERM stopped the run at step 3
    assert count(harness, REFERENCE, {3}).missing == 1  # no final record of the stop
    assert count(harness, REFERENCE, {2}).missing == 0  # step 2 validated anyway: none due
    assert count(harness, with_final, set()).extra == 1  # no SIGTERM stopped it there
    twice = [*with_final[:5], valid(3, 2.8, "final"), *REFERENCE[4:]]
    assert count(harness, twice, {3}).doubled == 1


def test_the_plan_sends_every_signal_before_the_run_ends(harness: ModuleType) -> None:
    ref = harness.Reference(
        steps=100, valid_steps=[*range(10, 101, 10), 25, 75], startup=2.0, step_time=0.01,
        valid_time=0.01, wall=5.0,
    )  # fmt: skip
    shots = harness.plan(20, 3, ref, seed=4)
    assert [s.signum for s in shots].count(signal.SIGKILL) == 20
    assert [s.signum for s in shots].count(signal.SIGTERM) == 3
    assert {s.kind for s in shots} == set(harness.KINDS)
    moving = [s.target for s in shots if s.kind != "startup"]
    assert moving == sorted(moving) and max(moving) < 90  # short of the last validation
    assert shots == harness.plan(20, 3, ref, seed=4)  # seeded


@pytest.mark.slow
def test_kills_and_a_sigterm_leave_the_weights_and_metrics_of_an_uninterrupted_run(
    harness: ModuleType, tmp_path: Path
) -> None:
    # seed 12: two kills in start-up, one mid-write of a checkpoint, one during a validation,
    # and the SIGTERM mid-epoch (between validations: a "final" record, which is checked)
    report = harness.run_harness(
        "lm", kills=4, terms=1, seed=12, out=tmp_path, steps=100, validate_every=10
    )
    assert report.details == []
    assert (report.kills, report.terms, report.unsent) == (4, 1, 0)
    assert report.statuses[-signal.SIGKILL] == 4 and report.statuses[0] == 1
    assert report.resumes >= 3
    assert report.steps == report.ref_steps > 0
    assert report.train_records == report.ref_steps
    assert (report.missing, report.doubled, report.extra, report.out_of_order) == (0, 0, 0, 0)
    assert report.values_differing == 0
    assert report.last_identical
    assert report.ok
