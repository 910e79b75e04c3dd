"""Shared helpers for the benchmarks: machine description, data folder, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
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


# -- the task benchmarks (classify.py, tag.py): rnnkit's whole loop against a plain loop ----


def gemm_peak(n: int, dtype: Any, seconds: float) -> float:
    """GFLOP/s of the fastest of repeated n x n x n torch.matmul calls."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def interleave(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Each function once a round, the order rotated every round; their results by name."""
    names, out = list(fns), {k: [] for k in fns}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(fns[name]())
    return out


class FitProbe:
    """Runs rnnkit's whole training loop one epoch at a time and says where its time went.

    Each :meth:`epoch` is ``trainer.fit(max_steps=trainer.step + trainer.windows)`` from the
    start of an epoch: it ends on the epoch's own validation and checkpoint, as in a real run,
    with no extra validation at the stop. The task's ``batch`` and ``validate`` and the
    trainer's ``save_checkpoint`` are wrapped on the instances (the classes are untouched) to
    count the sentences and tokens trained on and the seconds spent validating and saving.
    ``collate`` is the task's own ``batch``, unwrapped: the plain loop's batches.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        task = trainer.task
        self.collate = task.batch
        validate, save = task.validate, trainer.save_checkpoint
        self.sentences, self.tokens = 0, 0
        self.validate_s, self.checkpoint_s = 0.0, 0.0

        def batch(epoch: int, index: int) -> Any:
            b = self.collate(epoch, index)
            self.sentences += len(b.lengths)
            self.tokens += int(b.lengths.sum())
            return b

        def timed_validate(model: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return validate(model)
            finally:
                self.validate_s += time.perf_counter() - t0

        def timed_save(*args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            try:
                save(*args, **kwargs)
            finally:
                self.checkpoint_s += time.perf_counter() - t0

        task.batch, task.validate, trainer.save_checkpoint = batch, timed_validate, timed_save

    def epoch(self) -> dict[str, float]:
        """One whole epoch of ``Trainer.fit``: seconds, steps, sentences, tokens, and the
        seconds of it spent validating and saving checkpoints."""
        tr = self.trainer
        if tr.window != 0:
            raise RuntimeError(f"the trainer is at batch {tr.window} of its epoch, not 0")
        self.sentences, self.tokens = 0, 0
        self.validate_s, self.checkpoint_s = 0.0, 0.0
        step, t0 = tr.step, time.perf_counter()
        tr.fit(max_steps=tr.step + tr.windows)
        seconds = time.perf_counter() - t0
        return {
            "seconds": seconds, "steps": tr.step - step, "sentences": self.sentences,
            "tokens": self.tokens, "validate_s": self.validate_s,
            "checkpoint_s": self.checkpoint_s,
        }  # fmt: skip


def timed_batches(batches: list[Any], step: Callable[[Any], Any]) -> dict[str, float]:
    """``step`` over ready batches (each with ``lengths``): seconds, steps, sentences, tokens."""
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds, "steps": len(batches),
        "sentences": sum(len(b.lengths) for b in batches),
        "tokens": sum(int(b.lengths.sum()) for b in batches),
    }  # fmt: skip


def rate_row(
    name: str,
    rounds: list[dict[str, float]],
    base: list[dict[str, float]] | None,
    flops: Callable[[float, float], float],
    less: str | None = None,
) -> dict[str, Any]:
    """Medians of sentences/s and tokens/s over ``rounds`` (their ``seconds`` less their
    ``less`` key, if given), the median of the rounds' ratios of tokens/s to ``base``'s
    (rounds over the same data), and the GFLOP/s of the median rates: ``flops(sentences/s,
    tokens/s)``."""

    def secs(r: dict[str, float]) -> float:
        return r["seconds"] - (r[less] if less else 0.0)

    sps = statistics.median(r["sentences"] / secs(r) for r in rounds)
    tps = statistics.median(r["tokens"] / secs(r) for r in rounds)
    ratios = (
        [(r["tokens"] / secs(r)) / (b["tokens"] / b["seconds"]) for r, b in zip(rounds, base)]
        if base is not None
        else [1.0] * len(rounds)
    )
    return {
        "impl": name, "sentences_per_s": sps, "tokens_per_s": tps,
        "x_plain": statistics.median(ratios), "round_ratios": ratios,
        "gflops": flops(sps, tps), "rounds": rounds,
    }  # fmt: skip


def print_rate_rows(title: str, rows: list[dict[str, Any]], peak: float) -> None:
    """A table of rate_row rows: sentences/s, tokens/s, x plain, GFLOP/s, % of ``peak``."""
    print(title)
    print(
        f"{'':<40} {'sentences/s':>11} {'tokens/s':>10} {'x plain':>8} {'GFLOP/s':>8} {'%peak':>6}"
    )
    for r in rows:
        print(
            f"{r['impl']:<40} {r['sentences_per_s']:>11,.0f} {r['tokens_per_s']:>10,.0f} "
            f"{r['x_plain']:>8.3f} {r['gflops']:>8.2f} {100 * r['gflops'] / peak:>5.1f}%"
        )
    sys.stdout.flush()
