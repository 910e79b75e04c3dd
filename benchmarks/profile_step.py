"""Where one training step's time goes: torch.profiler over rnnkit's real step on PTB.

Builds the model and Trainer as ``rnnkit train`` does (PTB, 10k words), runs a few warm-up
steps, then profiles --steps steps of ``Trainer.train_step`` (batch view, autocast, loss,
backward, clipping, optimizer) and prints the operators by self CPU time, and the step's
tokens/s without the profiler.

    python benchmarks/profile_step.py --output full  --hidden 200   # the output layer dominates
    python benchmarks/profile_step.py --output class --hidden 200   # after: spread out
    python benchmarks/profile_step.py --output class --hidden 100 --batch-size 128
    python benchmarks/profile_step.py --compile      # and torch.compile: compile time, speed-up
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, print_machine

from rnnkit.models import ModelConfig, make_model
from rnnkit.models.output import default_classes, frequency_classes
from rnnkit.tasks.lm import LanguageModelTask
from rnnkit.text.dataset import DataConfig, prepare_data
from rnnkit.training import TrainConfig, Trainer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", choices=("full", "class", "adaptive"), default="class")
    p.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="rnn")
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rows", type=int, default=15, help="operators to list")
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the step with the model's loss under torch.compile (same run)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ptb = data_dir() / "ptb"
    if not (ptb / "ptb.train.txt").is_file():
        print(f"PTB not found in {ptb} (set RNNKIT_DATA).")
        return 2
    print_machine()
    data = prepare_data(
        DataConfig(
            corpus=str(ptb / "ptb.train.txt"), valid=str(ptb / "ptb.valid.txt"), level="word"
        ),
        None,
    )
    V = len(data.vocab)
    bounds = None
    if args.output == "class":
        bounds = frequency_classes(np.bincount(data.train_ids, minlength=V), default_classes(V))
    cfg = ModelConfig(
        vocab_size=V, cell=args.cell, hidden_size=args.hidden, num_layers=args.layers,
        output=args.output, class_bounds=bounds,
    )  # fmt: skip
    torch.manual_seed(0)
    model = make_model(cfg)
    train_cfg = TrainConfig(
        batch_size=args.batch_size, bptt=args.bptt, optimizer=args.optimizer, lr=1e-3,
        clip=0.25, precision=args.precision,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as run:
        task = LanguageModelTask.stream(
            data.train_ids, data.valid_ids, train_cfg.batch_size, train_cfg.bptt, level="word"
        )
        trainer = Trainer(model, task, train_cfg, Path(run), torch.device("cpu"))
        for _ in range(5):
            trainer.train_step()
        t = time.perf_counter()
        for _ in range(args.steps * 3):
            trainer.train_step()
        rate = args.steps * 3 * args.batch_size * args.bptt / (time.perf_counter() - t)
        if args.compile:
            compiled_rate, compile_s = _compiled_rate(trainer, model, args.steps * 3)
            print(
                f"torch.compile: first step {compile_s:.1f} s (compiling); then "
                f"{compiled_rate * args.batch_size * args.bptt:,.0f} tokens/s against "
                f"{rate:,.0f} eager: {compiled_rate * args.batch_size * args.bptt / rate:.2f}x"
            )
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                trainer.train_step()
    print(
        f"{args.cell} {args.layers}x{args.hidden}, output {args.output}, {args.precision}, "
        f"batch {args.batch_size}, bptt {args.bptt}, {args.optimizer}: {rate:,.0f} tokens/s "
        f"({1e3 * args.batch_size * args.bptt / rate:.1f} ms a step)"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


def _compiled_rate(trainer: Trainer, model: torch.nn.Module, steps: int) -> tuple[float, float]:
    """Steps/s of the trainer's step with ``model.loss`` compiled, and the compile time."""
    eager = model.loss
    model.loss = torch.compile(eager)  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        trainer.train_step()
        first = time.perf_counter() - t
        for _ in range(4):
            trainer.train_step()
        t = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return steps / (time.perf_counter() - t), first
    finally:
        model.loss = eager  # type: ignore[method-assign]


if __name__ == "__main__":
    raise SystemExit(main())
