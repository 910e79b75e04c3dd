"""``rnnkit classify train|eval|predict``: the many-to-one shape (a label per sequence)."""

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

POOLINGS = ("last", "mean", "max", "attention")  # as rnnkit.models.classifier, torch-free here

MODEL = ("cell", "nonlinearity", "hidden_size", "num_layers", "bidirectional", "skip",
         "embedding_size", "dropout", "pooling")  # fmt: skip
DATA = ("valid", "valid_fraction", "format", "encoding", "tokenizer", "lowercase", "min_count",
        "vocab_size", "audio", "manifest", "label_pattern", "split", "init_from",
        "word_dropout")  # fmt: skip


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "classify",
        help="many-to-one: train, evaluate and run a sequence classifier",
        description="A label for each sequence: the sentiment of a sentence, the word spoken "
        "in a recording. Text: a TSV of label<TAB>text, or one file per label (the label is "
        "the file's suffix: rt-polarity.pos, rt-polarity.neg). Audio: a folder of WAV files.",
    )
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    _register_train(verbs)
    p = verbs.add_parser("eval", help="accuracy and loss on labeled data")
    p.add_argument("run", metavar="RUN", help="a classify run directory")
    p.add_argument("files", nargs="*", metavar="FILE", help="labeled text (the run's format)")
    p.add_argument("--audio", metavar="DIR", help="a folder of WAV files (label in the name)")
    p.add_argument("--manifest", metavar="FILE", help="a TSV of wav-path<TAB>label")
    p.add_argument("--split", choices=("fsdd",), help="score only this split's test part")
    add_weights_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--format", choices=("text", "json"), default="text", dest="out_format")
    p.set_defaults(func=cmd_eval)
    p = verbs.add_parser("predict", help="the label of each line of text (or each WAV file)")
    p.add_argument("run", metavar="RUN", help="a classify run directory")
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="a text file (- or none: stdin), or WAV files"
    )
    add_weights_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_predict)


def _register_train(verbs: Any) -> None:
    p = verbs.add_parser(
        "train",
        help="train a classifier",
        description="Train a sequence classifier into a run directory (or resume one), or "
        "cross-validate one with --cv K.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="labeled text: a TSV, or per-label")
    p.add_argument("--out", "-o", metavar="RUN", help="run directory to create (--cv: a folder)")
    p.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g = p.add_argument_group("data")
    g.add_argument("--valid", nargs="+", metavar="FILE", help="validation files (same format)")
    g.add_argument("--valid-fraction", type=float, help="held out when no --valid (0.1)")
    g.add_argument(
        "--cv", type=int, metavar="K", help="stratified K-fold cross-validation (mean and std)"
    )
    g.add_argument("--format", choices=("auto", "tsv", "per-label"), help="(auto: by count)")
    g.add_argument("--encoding", help="text encoding of the files (utf-8)")
    g.add_argument("--tokenizer", choices=TOKENIZERS, help="whitespace or words (whitespace)")
    g.add_argument("--lowercase", action="store_const", const=True, help="lowercase every word")
    g.add_argument("--min-count", type=int, help="words seen fewer times become <unk> (1)")
    g.add_argument("--vocab-size", type=int, help="keep the most frequent words")
    g.add_argument("--audio", metavar="DIR", help="a folder of WAV files, label in each name")
    g.add_argument("--manifest", metavar="FILE", help="a TSV of wav-path<TAB>label")
    g.add_argument("--label-pattern", help=r"regex, group 1 the label in a name (^(\d+)_)")
    g.add_argument(
        "--split",
        choices=("fsdd",),
        help="fsdd: hold out free-spoken-digit's test split (recordings 0-4); eval --split fsdd "
        "scores it",
    )
    g.add_argument(
        "--init-from", metavar="RUN", help="start embedding and core from a word-level LM run"
    )
    g.add_argument(
        "--word-dropout", type=float, help="each training word becomes <unk> with this chance (0)"
    )
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=CELLS, help="recurrent cell (lstm; rnn: Elman)")
    g.add_argument("--nonlinearity", choices=NONLINEARITIES, help="g1 of the Elman RNN (tanh)")
    g.add_argument(
        "--hidden-size", "--hidden", type=int, dest="hidden_size", help="units per direction"
    )
    g.add_argument("--num-layers", "--layers", type=int, dest="num_layers", help="layers (1)")
    g.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        help="read each sequence both ways (on; --no-bidirectional: left to right only)",
    )
    g.add_argument("--skip", action="store_const", const=True, help="residual links between layers")
    g.add_argument("--embedding-size", type=int, help="word embedding size (= hidden size)")
    g.add_argument("--dropout", type=float, help="dropout on inputs, between layers, pooled (0.5)")
    g.add_argument("--pooling", choices=POOLINGS, help="how a_1..a_T become one vector (max)")
    add_training_flags(p, batch_help="sequences per batch (32)")
    add_budget_flags(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit.api import classify

    settings: dict[str, Any] = {name: getattr(args, name) for name in (*MODEL, *DATA)}
    settings.update(training_settings(args))
    result = classify.train(
        args.files or None,
        args.out,
        resume=args.resume,
        cv=args.cv,
        max_time=args.max_time,
        max_steps=args.max_steps,
        overwrite=args.overwrite,
        device=args.device,
        threads=args.threads,
        progress=False if args.no_progress else None,
        log=log,
        **settings,
    )
    if isinstance(result, classify.CVResult):
        accs = ", ".join(f"{a:.4f}" for a in result.accuracies)
        print(f"{len(result.accuracies)}-fold cross-validation: held-out accuracy per fold {accs}")
        print(f"accuracy: {result.mean:.4f} mean, {result.std:.4f} std")
        print(f"fold runs and cv.json in {result.out}")
        return 0
    print(f"stopped: {result.stopped} (step {result.step}, {result.elapsed:.0f} s)")
    print(
        f"best validation: accuracy {result.best_metric:.4f}, loss {result.best_valid_loss:.4f} nats/sentence"
    )
    print(f"run saved in {result.run}")
    return report_stop(result, "classify train")


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.api import classify

    figures = classify.evaluate(
        args.run,
        args.files or None,
        audio=args.audio,
        manifest=args.manifest,
        split=args.split,
        device=args.device,
        weights=args.weights,
    )
    if args.out_format == "json":
        print(json.dumps(figures))
        return 0
    print(f"examples: {int(figures['count']):,}")
    print(f"accuracy: {figures['accuracy']:.4f}")
    print(f"loss:     {figures['loss']:.4f} nats/example")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from rnnkit.api import classify
    from rnnkit.cli.score import _read_stdin as read_stdin
    from rnnkit.text.corpus import iter_lines

    loaded = classify.load_classifier(args.run, device=args.device, weights=args.weights)
    if loaded.task.features is not None:
        inputs: list[str] = list(args.inputs)
    elif not args.inputs or args.inputs == ["-"]:
        inputs = read_stdin()
    else:
        inputs = [line for f in args.inputs for line in iter_lines(f, "text to classify")]
    labels, probs = classify.predict(loaded, inputs)
    names = loaded.task.labels
    out = sys.stdout
    for label, p, text in zip(labels, probs, inputs):
        shown = " ".join(f"{n}:{q:.4f}" for n, q in zip(names, p))
        out.write(f"{label}\t{shown}\t{text}\n")
    return 0
