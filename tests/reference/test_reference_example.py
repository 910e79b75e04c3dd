"""examples/bptt_by_hand.py runs and its loss falls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bptt_by_hand.py"


def test_bptt_by_hand_runs_and_learns() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "500"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [r for r in map(str.split, out.splitlines()) if len(r) > 2 and r[2] == "nats,"]
    losses = [float(r[1]) for r in rows]  # smoothed nats/char at steps 1, 250, 500
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5
    assert "a sample (200 characters)" in out
