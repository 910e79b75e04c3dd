"""``rnnkit tag train|eval|predict``: the many-to-many synchronised shape (a label per token)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rnnkit.choices import CELLS, NONLINEARITIES
from rnnkit.cli.common import (
    add_budget_flags,
    add_training_flags,
    int_list,
    log,
    report_stop,
    training_settings,
)
from rnnkit.cli.lm import add_weights_flag

MODEL = ("cell", "nonlinearity", "hidden_size", "num_layers", "bidirectional", "skip",
         "embedding_size", "dropout", "crf", "char_embedding_size", "char_hidden_size",
         "extra_embedding_size")  # fmt: skip
DATA = ("valid", "word_column", "label_column", "feature_columns", "lowercase", "min_count",
        "char_features", "unseen_labels")  # fmt: skip


def _unseen_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unseen-labels",
        choices=("error", "score"),
        help="a label training never saw: stop with an error, or score it as a mistake, as "
        "conlleval does (error)",
    )


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "tag",
        help="many-to-many: train, evaluate and run a sequence tagger",
        description="A label for each token: chunks, parts of speech, named entities. Data "
        "are CoNLL-style column files: a token a line, blank lines between sentences.",
    )
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("train", help="train a tagger")
    p.add_argument("train_file", nargs="?", metavar="TRAIN", help="column file to train on")
    p.add_argument("--out", "-o", metavar="RUN", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g = p.add_argument_group("data")
    g.add_argument("--valid", metavar="FILE", help="column file that validates (required)")
    g.add_argument("--word-column", type=int, help="column of the words (0)")
    g.add_argument("--label-column", type=int, help="column of the labels (-1: the last)")
    g.add_argument(
        "--feature-columns", type=int_list, help="extra input columns, e.g. 1 (POS when chunking)"
    )
    g.add_argument("--lowercase", action="store_const", const=True, help="lowercase the words")
    g.add_argument("--min-count", type=int, help="words seen fewer times become <unk> (1)")
    g.add_argument(
        "--char-features", action="store_const", const=True, help="a character BiLSTM per word"
    )
    _unseen_flag(g)
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=CELLS, help="recurrent cell (lstm)")
    g.add_argument("--nonlinearity", choices=NONLINEARITIES, help="g1 of the Elman RNN (tanh)")
    g.add_argument(
        "--hidden-size", "--hidden", type=int, dest="hidden_size", help="units per direction"
    )
    g.add_argument("--num-layers", "--layers", type=int, dest="num_layers", help="layers (1)")
    g.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        help="read each sentence both ways (on; --no-bidirectional: left to right only)",
    )
    g.add_argument("--skip", action="store_const", const=True, help="residual links between layers")
    g.add_argument("--embedding-size", type=int, help="word embedding size (100)")
    g.add_argument("--dropout", type=float, help="dropout on inputs and states (0)")
    g.add_argument("--crf", action="store_const", const=True, help="a linear-chain CRF output")
    g.add_argument("--char-embedding-size", type=int, help="--char-features: char embedding (25)")
    g.add_argument("--char-hidden-size", type=int, help="--char-features: units per direction")
    g.add_argument("--extra-embedding-size", type=int, help="embedding of each extra column (16)")
    add_training_flags(p, batch_help="sentences per batch (32)")
    add_budget_flags(p)
    p.set_defaults(func=cmd_train)
    for verb, helptext, func in (
        ("eval", "loss, accuracy and conlleval's chunk F1 on a labelled column file", cmd_eval),
        ("predict", "tag a column file: the words with a label each", cmd_predict),
    ):
        p = verbs.add_parser(verb, help=helptext)
        p.add_argument("run", metavar="RUN", help="a tag run directory")
        p.add_argument("file", metavar="FILE", help="column file")
        add_weights_flag(p)
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        if verb == "eval":
            _unseen_flag(p)
            p.add_argument("--format", choices=("text", "json"), default="text")
        p.set_defaults(func=func)


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit.api import tag

    settings: dict[str, Any] = {name: getattr(args, name) for name in (*MODEL, *DATA)}
    settings.update(training_settings(args))
    result = tag.train(
        args.train_file,
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
    print(
        f"best validation: {result.metric} {result.best_metric:.4f}, "
        f"loss {result.best_valid_loss:.4f} nats/token"
    )
    print(f"run saved in {result.run}")
    return report_stop(result, "tag train")


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.api import tag

    figures = tag.evaluate(
        args.run, args.file, unseen_labels=args.unseen_labels, device=args.device,
        weights=args.weights,
    )  # fmt: skip
    if args.format == "json":
        print(json.dumps(figures))
        return 0
    print(f"tokens:    {int(figures['tokens']):,} in {int(figures['sentences']):,} sentences")
    print(f"loss:      {figures['loss']:.4f} nats/token")
    print(f"accuracy:  {100 * figures['accuracy']:.2f}%")
    if "f1" in figures:
        print(
            f"chunks:    precision {100 * figures['precision']:.2f}%, recall "
            f"{100 * figures['recall']:.2f}%, F1 {100 * figures['f1']:.2f} (conlleval's counting)"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from rnnkit.api import tag

    out = sys.stdout
    for words, labels in tag.predict(args.run, args.file, device=args.device, weights=args.weights):
        for w, label in zip(words, labels):
            out.write(f"{w}\t{label}\n")
        out.write("\n")
    return 0
