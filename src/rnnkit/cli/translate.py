"""``rnnkit translate train|eval|translate``: the encoder-decoder (a sequence in, a new one out)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from rnnkit.choices import ATTENTIONS, CELLS, NONLINEARITIES
from rnnkit.cli.common import (
    add_budget_flags,
    add_training_flags,
    log,
    report_stop,
    training_settings,
)
from rnnkit.cli.lm import add_weights_flag

MODEL = ("cell", "nonlinearity", "embedding_size", "hidden_size", "num_layers", "bidirectional",
         "attention", "input_feeding", "dropout", "label_smoothing")  # fmt: skip
DATA = ("lowercase", "subwords", "min_count", "max_vocab_size", "max_length")
LOG10 = math.log(10)


def _search_flags(p: argparse.ArgumentParser, n_best: bool) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=1, help="beam size; 1 is greedy decoding (1)")
    g.add_argument(
        "--alpha", type=float, default=0.0,
        help="GNMT length normalisation: rank by log P / ((5 + length) / 6) ** alpha (0)",
    )  # fmt: skip
    if n_best:
        g.add_argument(
            "--n-best", type=int, default=1,
            help="print this many translations per line as 'LINE ||| TEXT ||| LOG10 PROB' (1)",
        )  # fmt: skip
    g.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (64)")
    g.add_argument(
        "--replace-unk", action="store_true",
        help="write each <unk> as the source word the translator attended to most at that "
        "step (attention models; Luong et al. 2015)",
    )  # fmt: skip


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "translate",
        help="encoder-decoder: train, evaluate and run a translator",
        description="A new sequence from a whole input sequence (translation). Data are two "
        "line-aligned files, plain or .gz: line i of the target translates line i of the source.",
    )
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("train", help="train a translator")
    p.add_argument(
        "source", nargs="?", metavar="SOURCE", help="training sources, a sentence a line"
    )
    p.add_argument("target", nargs="?", metavar="TARGET", help="their translations, line-aligned")
    p.add_argument("--out", "-o", metavar="RUN", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue this run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g = p.add_argument_group("data")
    g.add_argument(
        "--valid", nargs=2, metavar=("SOURCE", "TARGET"), help="the pair that validates (required)"
    )
    g.add_argument("--lowercase", action="store_const", const=True, help="lowercase both sides")
    g.add_argument(
        "--subwords", type=int,
        help="SentencePiece pieces per side, learnt from the training side (0: words)",
    )  # fmt: skip
    g.add_argument("--min-count", type=int, help="units seen fewer times become <unk> (2)")
    g.add_argument("--max-vocab-size", type=int, help="most units per side, specials included")
    g.add_argument(
        "--max-length", type=int, help="longer training pairs are left out; longer sources "
        "to translate are an error (100 units)",
    )  # fmt: skip
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=CELLS, help="recurrent cell (gru)")
    g.add_argument("--nonlinearity", choices=NONLINEARITIES, help="g1 of the Elman RNN (tanh)")
    g.add_argument("--embedding-size", type=int, help="embedding size, both sides (256)")
    g.add_argument(
        "--hidden-size", "--hidden", type=int, dest="hidden_size",
        help="decoder state and encoder units per direction (512)",
    )  # fmt: skip
    g.add_argument("--num-layers", "--layers", type=int, dest="num_layers", help="layers (1)")
    g.add_argument(
        "--bidirectional", action=argparse.BooleanOptionalAction,
        help="a bidirectional encoder (off: the seeds' left-to-right encoder)",
    )  # fmt: skip
    g.add_argument(
        "--attention", choices=ATTENTIONS,
        help="none: the fixed-vector model (default); dot, general (Luong), bahdanau (additive)",
    )  # fmt: skip
    g.add_argument(
        "--input-feeding", action=argparse.BooleanOptionalAction,
        help="with attention: feed the last attentional state to the next step (on)",
    )  # fmt: skip
    g.add_argument(
        "--dropout", type=float, help="dropout on embeddings, between layers, on outputs (0.3)"
    )
    g.add_argument("--label-smoothing", type=float, help="training loss label smoothing (0)")
    add_training_flags(p, batch_help="sentence pairs per batch (64)")
    add_budget_flags(p)
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("eval", help="BLEU and chrF (sacreBLEU) against reference translations")
    p.add_argument("run", metavar="RUN", help="a translate run directory")
    p.add_argument("source", metavar="SOURCE", help="sources, a sentence a line (plain or .gz)")
    p.add_argument("reference", metavar="REFERENCE", help="their reference translations")
    _search_flags(p, n_best=False)
    add_weights_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--output", metavar="FILE", help="also write the translations to FILE")
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("translate", help="translate sentences from a file or stdin")
    p.add_argument("run", metavar="RUN", help="a translate run directory")
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="sources (default: stdin)")
    _search_flags(p, n_best=True)
    add_weights_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_translate)


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit.api import translate

    settings: dict[str, Any] = {name: getattr(args, name) for name in (*MODEL, *DATA)}
    if args.valid:
        settings["valid_source"], settings["valid_target"] = args.valid
    settings.update(training_settings(args))
    result = translate.train(
        args.source,
        args.target,
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
        f"best validation: {result.metric} {result.best_metric:.2f}, "
        f"loss {result.best_valid_loss:.4f} nats/token"
    )
    print(f"run saved in {result.run}")
    return report_stop(result, "translate train")


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.api import translate
    from rnnkit.utils import atomic_write_text

    f = translate.evaluate(
        args.run, args.source, args.reference, beam=args.beam, alpha=args.alpha,
        batch_size=args.batch_size, device=args.device, weights=args.weights,
        replace_unk=args.replace_unk,
    )  # fmt: skip
    if args.output:
        atomic_write_text(args.output, "".join(h + "\n" for h in f["translations"]))
    if args.format == "json":
        print(json.dumps({k: v for k, v in f.items() if k != "translations"}))
        return 0
    search = "greedy" if args.beam == 1 else f"beam {args.beam}, alpha {args.alpha}"
    if args.replace_unk:
        search += ", unknown words replaced"
    print(f"sentences:        {f['sentences']:,} ({search})")
    print(f"BLEU:             {f['bleu_cased']:.2f}  {f['signature_cased']}")
    print(f"BLEU lowercased:  {f['bleu_lowercased']:.2f}  {f['signature_lowercased']}")
    print(f"chrF:             {f['chrf']:.2f}  {f['signature_chrf']}")
    print(f"loss:             {f['loss']:.4f} nats/token (perplexity {f['perplexity']:.2f})")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from rnnkit.api import translate

    if args.file == "-":
        lines = [line.rstrip("\r\n") for line in sys.stdin]
        where = "stdin"
    else:
        lines = translate.read_sources(args.file)
        where = f"source file {args.file!r}"
    results = translate.translate(
        args.run, lines, beam=args.beam, n_best=args.n_best, alpha=args.alpha,
        batch_size=args.batch_size, where=where, device=args.device, weights=args.weights,
        replace_unk=args.replace_unk,
    )  # fmt: skip
    out = sys.stdout
    for i, hyps in enumerate(results):
        if args.n_best == 1:
            out.write(hyps[0][0] + "\n")
            continue
        for text, score in hyps:
            out.write(f"{i} ||| {text} ||| {score / LOG10:.4f}\n")
    return 0
