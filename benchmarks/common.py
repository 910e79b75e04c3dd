"""Shared helpers for the benchmarks: machine description, data folder, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """RNNKIT_DATA, or ../shared/data beside the project."""
    return Path(os.environ.get("RNNKIT_DATA", ROOT.parent / "shared" / "data"))


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_machine() -> dict[str, Any]:
    m = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in m.items()))
    return m


def emit_json(name: str, record: dict[str, Any]) -> None:
    """One JSON line on stdout, and appended to benchmarks/results/NAME.jsonl."""
    line = json.dumps({"benchmark": name, **record})
    print(line)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    with (out / f"{name}.jsonl").open("a") as f:
        f.write(line + "\n")
    sys.stdout.flush()
