"""metrics.jsonl: one JSON object per logged training step or validation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rnnkit.utils import atomic_write_text


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records; a line cut short by a crash is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


class MetricsLog:
    """Appends records; on resume, records past the checkpoint's step are dropped first.
    ``write`` False (DDP ranks other than 0) makes both a no-op."""

    def __init__(self, path: str | os.PathLike[str], write: bool = True) -> None:
        self.path = Path(path)
        self.write = write

    def truncate_after(self, step: int) -> None:
        if not self.write:
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        if not self.write:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
