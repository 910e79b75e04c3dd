"""Language-model verbs: train, eval, generate, plot."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rnnkit.choices import (
    ARCHS,
    CELLS,
    LEVELS,
    MODES,
    NONLINEARITIES,
    OUTPUTS,
    TOKENIZERS,
)
from rnnkit.cli.common import (
    TRAINING_SETTINGS,
    add_budget_flags,
    add_training_flags,
    int_list,
    log,
    report_stop,
)


def register(subparsers: Any) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_generate(subparsers)
    p = subparsers.add_parser("plot", help="plot a run's learning curves as a PNG")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--out", "-o", help="PNG file to write (default RUN/curves.png)")
    p.set_defaults(func=cmd_plot)


def _register_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a language model",
        description="Train an RNN language model on a UTF-8 text (default: built-in tiny "
        "Shakespeare) into a run directory, or resume one. With --max-time of a minute or "
        "more, the flags left out are fitted to the corpus and the budget (model size from a "
        "measured speed, output layer, dropout, a linear schedule ending at the budget, "
        "validation paced by time), printed at the start and kept in config.json's plan "
        "(docs/defaults.md); the defaults in brackets are for runs without a budget.",
    )
    p.add_argument("corpus_file", nargs="?", metavar="CORPUS", help="training text (UTF-8)")
    p.add_argument("--corpus", help="a built-in corpus name (shakespeare) or a file")
    p.add_argument("--out", "-o", metavar="RUN", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g = p.add_argument_group("data")
    g.add_argument(
        "--valid", metavar="FILE", help="validation text (default: the corpus's last part)"
    )
    g.add_argument("--valid-fraction", type=float, help="fraction held out for validation (0.1)")
    g.add_argument("--level", choices=LEVELS, help="tokens are characters or words (char)")
    g.add_argument(
        "--vocab-size", type=int, help="keep the most frequent tokens (specials included)"
    )
    g.add_argument("--min-count", type=int, help="tokens seen fewer times become <unk> (1)")
    g.add_argument(
        "--mode",
        choices=MODES,
        help="stream: one text, state carried across lines (PTB); sentence: each line "
        "independent, <s> .. </s>, padded batches (word level) (stream)",
    )
    g.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        help="whitespace: text already tokenised (PTB); words: raw text to words and "
        "punctuation (whitespace)",
    )
    g.add_argument("--lowercase", action="store_const", const=True, help="lowercase every word")
    g = p.add_argument_group("model")
    g.add_argument(
        "--arch",
        choices=ARCHS,
        help="rnn: recurrent (--cell); window: Bengio et al.'s fixed-window LM (rnn)",
    )
    g.add_argument(
        "--context", type=int, help="previous tokens the window LM reads (n-gram order - 1) (4)"
    )
    g.add_argument("--cell", choices=CELLS, help="recurrent cell (rnn: Elman)")
    g.add_argument("--nonlinearity", choices=NONLINEARITIES, help="g1 of the Elman RNN (tanh)")
    g.add_argument(
        "--hidden-size", "--hidden", type=int, dest="hidden_size", help="units per layer (256)"
    )
    g.add_argument(
        "--num-layers", "--layers", type=int, dest="num_layers", help="stacked layers (1)"
    )
    g.add_argument(
        "--skip",
        action="store_const",
        const=True,
        help="residual connections between stacked recurrent layers",
    )
    g.add_argument("--embedding-size", type=int, help="input embedding size (= hidden size)")
    g.add_argument(
        "--one-hot", action="store_const", const=True, help="one-hot input instead of an embedding"
    )
    g.add_argument(
        "--dropout", type=float, help="dropout on inputs, between layers, on outputs (0)"
    )
    g.add_argument(
        "--weight-dropout",
        type=float,
        help="DropConnect on the recurrent weights W_aa while training (0)",
    )
    g.add_argument(
        "--locked-dropout",
        action="store_const",
        const=True,
        help="one --dropout mask per sequence, the same at every time step (variational)",
    )
    g.add_argument(
        "--tie-weights",
        action="store_const",
        const=True,
        help="share the embedding and output weights",
    )
    g.add_argument(
        "--output",
        choices=OUTPUTS,
        help="output layer, all exact: full softmax; class: Mikolov's frequency classes, "
        "~50x less work at 10k words; adaptive: Grave et al.'s adaptive softmax (full)",
    )
    g.add_argument("--classes", type=int, help="--output class: number of classes (sqrt(V))")
    g.add_argument(
        "--cutoffs",
        type=int_list,
        help="--output adaptive: ids where tail clusters start, e.g. 1000,5000 (V/10 up to 2,000, "
        "V/2 up to 10,000)",
    )
    add_training_flags(p, bptt=True)
    add_budget_flags(p)
    p.set_defaults(func=cmd_train)


SETTINGS = (
    "valid", "valid_fraction", "level", "vocab_size", "min_count", "mode", "tokenizer",
    "lowercase", "arch", "context", "cell", "nonlinearity",
    "hidden_size", "num_layers", "skip", "embedding_size", "one_hot", "dropout", "weight_dropout",
    "locked_dropout", "tie_weights",
    "output", "classes", "cutoffs",
    *TRAINING_SETTINGS,
)  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit import api
    from rnnkit.errors import ConfigError

    if args.corpus_file and args.corpus:
        raise ConfigError("give the corpus once: either as CORPUS or as --corpus, not both.")
    settings = {name: getattr(args, name) for name in SETTINGS}
    result = api.train(
        args.corpus_file or args.corpus,
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
    unit = result.unit
    best = result.best_valid_loss
    print(
        f"stopped: {result.stopped} (step {result.step}, {result.elapsed:.0f} s, "
        f"{result.tokens_per_second:,.0f} {unit}s/s)"
    )
    if best == best and best != float("inf"):
        print(
            f"best validation: {best:.4f} nats/{unit}, {best / 0.6931471805599453:.4f} bits/{unit}"
        )
    print(f"run saved in {result.run}")
    return report_stop(result, "train")


def _register_eval(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="cross-entropy, bits/char and perplexity of a text")
    p.add_argument("run", metavar="MODEL", help="run directory, or an ARPA n-gram file")
    p.add_argument("file", metavar="FILE", help="UTF-8 text to evaluate")
    add_interpolation_flags(p)
    add_weights_flag(p)
    p.add_argument("--batch-size", type=int, default=16, help="parallel columns (16)")
    p.add_argument(
        "--dynamic",
        type=float,
        metavar="LR",
        help="dynamic evaluation (Mikolov's RNNLM -dynamic): read the text as one stream and "
        "take an SGD step of this rate after scoring every 10 tokens",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown on a terminal)"
    )
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit import api

    result = api.evaluate(
        args.run,
        args.file,
        batch_size=args.batch_size,
        device=args.device,
        ngram=args.ngram,
        lam=args.lam,
        tune_lambda=args.tune_lambda,
        dynamic=args.dynamic,
        weights=args.weights,
        progress=False if args.no_progress else None,
    )
    if args.format == "json":
        print(json.dumps(result.to_dict()))
        return 0
    u = result.unit
    print(f"file:       {result.file}")
    print(
        f"tokens:     {result.tokens:,} {u}s predicted ({result.unknown:,} unknown {u}s, scored as <unk>)"
    )
    print(f"loss:       {result.nats_per_token:.4f} nats/{u}")
    print(f"bits:       {result.bits_per_token:.4f} bits/{u}")
    print(f"perplexity: {result.perplexity:.3f} (per {u})")
    if args.dynamic is not None:
        print(f"dynamic:    the run adapted as it read, SGD learning rate {args.dynamic:g}")
    if result.interpolation:
        mix = result.interpolation
        print(
            f"model:      interpolated with {mix['ngram']}, lambda {mix['lambda']:.4f} (the run's weight)"
        )
    return 0


def add_weights_flag(p: argparse.ArgumentParser) -> None:
    """--weights best|last on every verb that reads a run."""
    p.add_argument(
        "--weights",
        choices=("best", "last"),
        default="best",
        help="the run's best validated weights, or its latest (best)",
    )


def add_interpolation_flags(p: argparse.ArgumentParser) -> None:
    """--ngram, --lambda, --tune-lambda: mix a word-level run with an n-gram model."""
    from rnnkit.evaluation.interpolation import DEFAULT_LAMBDA

    g = p.add_argument_group("interpolation with an n-gram model (Mikolov's RNNLM toolkit)")
    g.add_argument(
        "--ngram", metavar="ARPA", help="interpolate the run word by word with this model"
    )
    g.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        metavar="L",
        help=f"the run's weight in the interpolation ({DEFAULT_LAMBDA}, as Mikolov's)",
    )
    g.add_argument(
        "--tune-lambda",
        metavar="VALID",
        help="use the weight that minimises the interpolated perplexity of VALID",
    )


def _register_generate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="sample text from a trained model, or search for the most probable"
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    add_weights_flag(p)
    p.add_argument("--prompt", default="", help="text the samples continue")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample (200)")
    p.add_argument("--temperature", type=float, help="softmax temperature (1.0)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="sample among the smallest set holding mass p")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument(
        "--beam",
        type=int,
        metavar="K",
        help="beam search of width K for the most probable continuation instead of sampling "
        "(a sentence-mode run ends at </s>; a stream run is cut at --max-new-tokens)",
    )
    p.add_argument(
        "--n-best",
        type=int,
        metavar="N",
        help="with --beam: the N (<= K) best continuations, each under its log10 probability",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.0,
        help="with --beam: GNMT length penalty, rank by log P / ((5 + len) / 6) ** alpha (0)",
    )
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (1)")
    p.add_argument("--seed", type=int, help="random seed for repeatable samples")
    p.add_argument(
        "--allow-unk", action="store_true", help="let samples hold <unk> (never, by default)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from rnnkit import api

    samples = api.generate_scored(
        args.run,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        greedy=args.greedy,
        num_samples=args.num_samples,
        seed=args.seed,
        allow_unk=args.allow_unk,
        device=args.device,
        weights=args.weights,
        beam=args.beam,
        n_best=args.n_best,
        alpha=args.alpha,
    )
    for i, (text, log10) in enumerate(samples):
        if args.n_best is not None:
            print(f"--- {i + 1}: log10 P = {log10:.4f} ---")
        elif len(samples) > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + text)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rnnkit import api

    print(api.plot(args.run, args.out))
    return 0
