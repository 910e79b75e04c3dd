"""``rnnkit diagnose``: gradient flow over time and saturation, as CSV files and a PNG."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rnnkit.choices import CELLS, LEVELS, NONLINEARITIES


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="why plain RNNs forget: gradient norm by distance, saturated units",
        description="Measure ||dL_T/da_t|| as a function of the distance T - t and the "
        "fraction of saturated units, for Elman tanh, Elman ReLU, GRU and LSTM side by side "
        "(each briefly trained on the text), for a deep Elman stack with and without skip "
        "connections, for a trained RUN if given, and for an Elman RNN with a large W_aa "
        "initialisation trained by SGD with and without gradient clipping. "
        "Writes gradient_flow.csv, saturation.csv, clipping.csv and diagnostics.png to --out.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="a trained run directory to include")
    p.add_argument(
        "--text",
        default="shakespeare",
        help="UTF-8 text to measure on (default: the built-in tiny Shakespeare)",
    )
    p.add_argument(
        "--out", "-o", required=True, metavar="DIR", help="folder for the CSV and PNG files"
    )
    p.add_argument(
        "--level",
        choices=LEVELS,
        default="char",
        help="tokens are characters or words, without RUN (char)",
    )
    g = p.add_argument_group("fresh configurations")
    g.add_argument(
        "--cell",
        nargs="+",
        choices=CELLS,
        default=list(CELLS),
        help="cells to compare (all three)",
    )
    g.add_argument(
        "--nonlinearity",
        nargs="+",
        choices=NONLINEARITIES,
        default=None,
        help="g1 of the Elman RNN (tanh and relu)",
    )
    g.add_argument(
        "--hidden-size",
        "--hidden",
        type=int,
        dest="hidden_size",
        help="units per layer (128, or the run's)",
    )
    g.add_argument(
        "--num-layers",
        "--layers",
        type=int,
        dest="num_layers",
        help="stacked layers (1, or the run's)",
    )
    g.add_argument(
        "--deep-layers",
        type=int,
        default=4,
        help="also an Elman tanh stack this deep, without and with skip connections (4; 0: none)",
    )
    g.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="Adam steps on the text before measuring each fresh model (200; 0: at init)",
    )
    g.add_argument(
        "--lr", type=float, default=3e-3, help="Adam learning rate for those steps (3e-3)"
    )
    g = p.add_argument_group("measurement")
    g.add_argument(
        "--seq-len", type=int, default=100, help="T: distances 0 .. T-1 are measured (100)"
    )
    g.add_argument("--batch-size", type=int, default=32, help="sequences averaged over (32)")
    g.add_argument("--seed", type=int, default=1234, help="random seed (1234)")
    g = p.add_argument_group("exploding gradients")
    g.add_argument(
        "--explode-gain",
        type=float,
        default=2.0,
        help="large init W_aa ~ N(0, gain^2/H), spectral radius about gain (2)",
    )
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold (1)")
    g.add_argument(
        "--clip-steps",
        type=int,
        default=100,
        help="SGD steps with and without clipping (100; 0 skips)",
    )
    g.add_argument("--clip-lr", type=float, default=0.3, help="SGD learning rate there (0.3)")
    p.set_defaults(func=cmd_diagnose)  # fmt: skip


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from rnnkit.diagnostics import diagnose_text

    result = diagnose_text(
        args.text,
        args.out,
        run=args.run,
        level=args.level,
        cell=args.cell,
        nonlinearity=args.nonlinearity,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        deep_layers=args.deep_layers,
        train_steps=args.train_steps,
        lr=args.lr,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        seed=args.seed,
        explode_gain=args.explode_gain,
        clip=args.clip,
        clip_steps=args.clip_steps,
        clip_lr=args.clip_lr,
        log=_log,
    )
    T = len(next(iter(result.flows.values())).grad_norm)
    width = max(len(label) for label in result.flows)
    print(
        f"{'model':<{width}}  ||dL_T/da_T||  ||dL_T/da_1||  ratio/step  saturated"
        f"   (norms in nats per unit of a, T = {T})"
    )
    for label, flow in result.flows.items():
        g = flow.grad_norm
        print(
            f"{label:<{width}}  {g[0]:13.3e}  {g[-1]:13.3e}  {result.decay_per_step(label):10.3f}"
            f"  {100 * flow.saturated_fraction:8.1f}%"
        )
    for path in result.files:
        print(f"wrote {path}")
    return 0
