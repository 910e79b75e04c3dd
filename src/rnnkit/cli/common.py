"""Flags every task's train verb shares: the optimisation settings and the budget.

They map to :class:`~rnnkit.training.TrainConfig` (one loop trains every task) and to the
``max_time``/``max_steps``/``device``/``threads`` arguments of each task's ``train``.
"""

from __future__ import annotations

import argparse
import sys

from rnnkit.choices import OPTIMIZERS, PRECISIONS, SCHEDULES

# TrainConfig's fields as CLI settings (bptt only where a task reads streams)
TRAINING_SETTINGS = (
    "epochs", "batch_size", "bptt", "optimizer", "lr", "lr_schedule", "min_improvement",
    "lr_decay", "decay_after", "clip", "weight_decay", "patience", "min_lr", "validate_every",
    "validate_seconds",
    "log_every", "eval_batch_size", "precision", "average", "average_every", "seed",
    "checkpoint_every", "recover", "recover_lr_factor",
)  # fmt: skip


def log(msg: str) -> None:
    """A progress message on stderr that does not break a tqdm bar."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated whole numbers, e.g. 1000,5000."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, not {text!r}"
        ) from None


def report_stop(result: object, verb: str) -> int:
    """After training: the resume hint on an interrupted run, and its exit status
    (130 for Ctrl-C, 143 for SIGTERM, 0 otherwise)."""
    if not getattr(result, "interrupted", False):
        return 0
    print(f"resume with: rnnkit {verb} --resume {getattr(result, 'run', '')}", file=sys.stderr)
    return 143 if getattr(result, "stopped", "") == "terminated" else 130  # 128 + signal


def add_training_flags(
    p: argparse.ArgumentParser,
    bptt: bool = False,
    batch_help: str = "parallel columns of the text stream (32)",
) -> None:
    """The "training" group: epochs, batch, optimizer, schedule, clipping, precision, seed."""
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="passes over the training text (20)")
    g.add_argument("--batch-size", type=int, help=batch_help)
    if bptt:
        g.add_argument("--bptt", type=int, help="truncated BPTT window, in steps (64)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="adam (default) or sgd")
    g.add_argument("--lr", type=float, help="learning rate (adam 2e-3, sgd 1.0)")
    g.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        help="rnnlm: Mikolov's halve-then-stop; plateau: halve when validation stalls; "
        "step: Zaremba's fixed decay per epoch; linear: down to 0 at the end of --epochs "
        "or --max-time, whichever comes first (plateau)",
    )
    g.add_argument("--lr-decay", type=float, help="step schedule: LR factor after each epoch (0.5)")
    g.add_argument("--decay-after", type=int, help="step schedule: epochs at the initial LR (4)")
    g.add_argument(
        "--min-improvement",
        type=float,
        help="relative validation gain below which the LR halves (1.003)",
    )
    g.add_argument("--clip", type=float, help="gradient-norm clipping threshold, 0 for none (5)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay (0)")
    g.add_argument(
        "--patience", type=int, help="stop after N validations without a new best (5; 0 never)"
    )
    g.add_argument(
        "--min-lr",
        type=float,
        help="stop once the schedule lowers the learning rate below this (0: never) (0)",
    )
    g.add_argument("--validate-every", type=int, help="also validate every N steps (0: per epoch)")
    g.add_argument(
        "--validate-every-seconds",
        type=float,
        metavar="SECONDS",
        dest="validate_seconds",
        help="also validate after every SECONDS of training, validation kept to at most a "
        "tenth of the time (0: off) (0)",
    )
    g.add_argument("--log-every", type=int, help="log training loss every N steps (20)")
    g.add_argument("--eval-batch-size", type=int, help="batch columns for validation (16)")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bf16: train with bfloat16 autocast, ~2x faster on CPUs with avx512_bf16/AMX "
        "(evaluation stays fp32) (fp32)",
    )
    g.add_argument(
        "--average",
        action="store_const",
        const=True,
        help="once validation stalls (--min-improvement), validate and keep the running "
        "mean of the weights (NT-ASGD averaging)",
    )
    g.add_argument(
        "--average-every", type=int, help="--average: steps between updates of the mean (10)"
    )
    g.add_argument("--seed", type=int, help="random seed; same seed, same run (1234)")
    g.add_argument(
        "--checkpoint-every",
        type=float,
        metavar="SECONDS",
        help="also save the resume state after every SECONDS of training, so a kill loses "
        "at most that much (0: at validations and stops only) (0)",
    )
    g.add_argument(
        "--recover",
        type=int,
        metavar="N",
        help="on a non-finite loss or gradient, roll back to the last checkpoint, lower the "
        "learning rate and skip the batch, up to N times (0: stop at the first) (3)",
    )
    g.add_argument(
        "--recover-lr-factor",
        type=float,
        metavar="F",
        help="--recover: the learning rate's factor at each recovery (0.5)",
    )


def add_budget_flags(p: argparse.ArgumentParser) -> None:
    """The "budget and hardware" group: --max-time, --max-steps, --device, --threads."""
    g = p.add_argument_group("budget and hardware")
    g.add_argument("--max-time", type=float, metavar="SECONDS", help="stop cleanly after this long")
    g.add_argument("--max-steps", type=int, help="stop cleanly after this many steps in total")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    g.add_argument("--threads", type=int, help="CPU threads (default: one per core)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def training_settings(args: argparse.Namespace) -> dict[str, object]:
    """The TrainConfig settings given on the command line (None: not given)."""
    return {name: getattr(args, name, None) for name in TRAINING_SETTINGS}
