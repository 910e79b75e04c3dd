"""``rnnkit condition train|eval|generate``: the one-to-many shape (a sequence from one input)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rnnkit.choices import CELLS, NONLINEARITIES, TOKENIZERS
from rnnkit.cli.common import (
    add_budget_flags,
    add_training_flags,
    log,
    report_stop,
    training_settings,
)
from rnnkit.cli.lm import add_weights_flag

CONDITIONINGS = ("init", "input", "both")  # as rnnkit.models.conditional, torch-free here

MODEL = ("cell", "nonlinearity", "hidden_size", "num_layers", "embedding_size",
         "condition_size", "dropout", "condition")  # fmt: skip
DATA = ("vectors", "valid", "valid_vectors", "valid_fraction", "format", "encoding",
        "tokenizer", "lowercase", "min_count", "vocab_size")  # fmt: skip


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "condition",
        help="one-to-many: train, evaluate and run a conditional generator",
        description="A sequence generated from one input: a class label (labelled text as "
        "`rnnkit classify` reads it: a TSV of label<TAB>text or one file per label) or a "
        "vector per example (a text file, one target a line, with --vectors FILE.npy of "
        "shape (lines, D): a caption from an image's features).",
    )
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    _register_train(verbs)
    p = verbs.add_parser("eval", help="loss per token and perplexity of targets")
    p.add_argument("run", metavar="RUN", help="a condition run directory")
    p.add_argument("files", nargs="+", metavar="FILE", help="labelled text, or a target file")
    p.add_argument("--vectors", metavar="NPY", help="the conditions of a target file's lines")
    add_weights_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--format", choices=("text", "json"), default="text", dest="out_format")
    p.set_defaults(func=cmd_eval)
    _register_generate(verbs)


def _register_train(verbs: Any) -> None:
    p = verbs.add_parser(
        "train",
        help="train a conditional generator",
        description="Train a conditional generator into a run directory (or resume one).",
    )
    p.add_argument(
        "files", nargs="*", metavar="FILE", help="labelled text (TSV or per-label), or a text file"
    )
    p.add_argument("--out", "-o", metavar="RUN", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g = p.add_argument_group("data")
    g.add_argument(
        "--vectors", metavar="NPY", help="a (lines, D) float .npy: row i conditions line i"
    )
    g.add_argument("--valid", nargs="+", metavar="FILE", help="validation files (same format)")
    g.add_argument("--valid-vectors", metavar="NPY", help="the .npy of the --valid text file")
    g.add_argument("--valid-fraction", type=float, help="held out when no --valid (0.1)")
    g.add_argument("--format", choices=("auto", "tsv", "per-label"), help="(auto: by count)")
    g.add_argument("--encoding", help="text encoding of the files (utf-8)")
    g.add_argument("--tokenizer", choices=TOKENIZERS, help="words or whitespace (words)")
    g.add_argument("--lowercase", action="store_const", const=True, help="lowercase every word")
    g.add_argument("--min-count", type=int, help="words seen fewer times become <unk> (1)")
    g.add_argument("--vocab-size", type=int, help="keep the most frequent words")
    g = p.add_argument_group("model")
    g.add_argument(
        "--condition",
        choices=CONDITIONINGS,
        help="init: the condition sets a_0 through a learned projection; input: it is fed "
        "beside the previous token at every step; both (both)",
    )
    g.add_argument("--cell", choices=CELLS, help="recurrent cell (lstm; rnn: Elman)")
    g.add_argument("--nonlinearity", choices=NONLINEARITIES, help="g1 of the Elman RNN (tanh)")
    g.add_argument(
        "--hidden-size", "--hidden", type=int, dest="hidden_size", help="units per layer (256)"
    )
    g.add_argument("--num-layers", "--layers", type=int, dest="num_layers", help="layers (1)")
    g.add_argument("--embedding-size", type=int, help="word embedding size (= hidden size)")
    g.add_argument(
        "--condition-size", type=int, help="size of the label embedding or vector projection "
        "(= embedding size)",
    )  # fmt: skip
    g.add_argument("--dropout", type=float, help="dropout on inputs, between layers, outputs (0.2)")
    add_training_flags(p, batch_help="sequences per batch (32)")
    add_budget_flags(p)
    p.set_defaults(func=cmd_train)


def _register_generate(verbs: Any) -> None:
    p = verbs.add_parser(
        "generate",
        help="generate sequences for a label or for each row of a .npy file",
        description="Sampling by default (--temperature, --top-k, --top-p); --greedy takes "
        "the most probable token at each step; --beam K runs beam search.",
    )
    p.add_argument("run", metavar="RUN", help="a condition run directory")
    g = p.add_argument_group("condition")
    g.add_argument("--label", help="generate for this label (a label-conditioned run)")
    g.add_argument(
        "--vectors", metavar="NPY", help="a (rows, D) float .npy: one output per row, in order"
    )
    g.add_argument("--row", type=int, help="only this row (from 0) of --vectors")
    g = p.add_argument_group("search")
    g.add_argument("--num-samples", type=int, default=1, help="samples per condition (1)")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--temperature", type=float, help="softmax temperature (1.0)")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    g.add_argument("--top-p", type=float, help="sample among the smallest set holding mass p")
    g.add_argument("--seed", type=int, help="random seed for repeatable samples")
    g.add_argument("--beam", type=int, metavar="K", help="beam search with K beams")
    g.add_argument("--n-best", type=int, default=1, help="--beam: hypotheses per condition (1)")
    g.add_argument("--alpha", type=float, default=0.0, help="--beam: GNMT length penalty (0)")
    g.add_argument("--max-len", type=int, help="tokens at most (longest training target + 10)")
    g.add_argument("--allow-unk", action="store_true", help="let outputs hold <unk> (never)")
    g.add_argument(
        "--guidance", type=float, default=0.0, metavar="G",
        help="sharpen the label: score (1+G) log P(.|label) - G log P(.|other labels) (0)",
    )  # fmt: skip
    g.add_argument("--scores", action="store_true", help="print log-probability<TAB>text")
    add_weights_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_generate)


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit.api import condition

    settings: dict[str, Any] = {name: getattr(args, name) for name in (*MODEL, *DATA)}
    settings.update(training_settings(args))
    result = condition.train(
        args.files or None,
        args.out,
        resume=args.resume,
        max_time=args.max_time,
        max_steps=args.max_steps,
        overwrite=args.overwrite,
        device=args.device,
        threads=args.threads,
        progress=False if args.no_progress else None,
        log=log,
        **settings,
    )
    print(f"stopped: {result.stopped} (step {result.step}, {result.elapsed:.0f} s)")
    loss = result.best_valid_loss
    print(f"best validation: loss {loss:.4f} nats/token, perplexity {_exp(loss):.2f}")
    print(f"run saved in {result.run}")
    return report_stop(result, "condition train")


def _exp(x: float) -> float:
    import math

    return math.exp(min(x, 700.0))


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.api import condition

    figures = condition.evaluate(
        args.run, args.files, vectors=args.vectors, device=args.device, weights=args.weights
    )
    if args.out_format == "json":
        print(json.dumps(figures))
        return 0
    print(f"targets:    {int(figures['count']):,} ({int(figures['tokens']):,} tokens with </s>)")
    print(f"loss:       {figures['loss']:.4f} nats/token")
    print(f"perplexity: {figures['perplexity']:.2f}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from rnnkit.api import condition
    from rnnkit.errors import ConfigError

    if args.label is not None and (args.row is not None or args.vectors is not None):
        raise ConfigError("--label conflicts with --vectors and --row; give one condition.")
    cond: Any = args.label if args.label is not None else args.row
    outs = condition.generate_hypotheses(
        args.run,
        cond,
        vectors=args.vectors,
        num_samples=args.num_samples,
        greedy=args.greedy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        beam=args.beam,
        n_best=args.n_best,
        alpha=args.alpha,
        max_len=args.max_len,
        allow_unk=args.allow_unk,
        guidance=args.guidance,
        device=args.device,
        weights=args.weights,
    )
    out = sys.stdout
    for hyps in outs:
        for text, score in hyps:
            out.write(f"{score:.4f}\t{text}\n" if args.scores else f"{text}\n")
    return 0
