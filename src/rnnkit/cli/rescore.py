"""``rnnkit rescore``: rescore n-best lists (Mikolov's RNNLM format) with a language model.

Flags and printing only: :func:`rnnkit.evaluation.rescoring.rescore_nbest` (``rnnkit.rescore``)
does the work. MODEL is an ARPA file or a word-level run directory (see
:func:`~rnnkit.evaluation.rescoring.load_scorer`); ``--ngram ARPA --lambda L`` interpolates it
(weight L, Mikolov's convention) with an n-gram model word by word.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import IO, Any

from rnnkit.cli.lm import add_interpolation_flags, add_weights_flag
from rnnkit.errors import ConfigError
from rnnkit.evaluation.rescoring import SCORES


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rescore",
        help="rescore n-best lists with a language model",
        description="Rescore an n-best list in Mikolov's RNNLM format (each line: sentence id, "
        "optional existing score, words). Each candidate's new score is its existing score "
        "(0 if none) plus --lm-weight times the model's log10 probability (</s> included). "
        "Prints the best candidate per id.",
    )
    p.add_argument(
        "model", metavar="MODEL", help="word-level run directory, or ARPA file (plain or .gz)"
    )
    p.add_argument("nbest", metavar="NBEST", help="n-best list (UTF-8)")
    add_weights_flag(p)
    add_interpolation_flags(p)
    p.add_argument(
        "--lm-weight", type=float, default=1.0, help="weight of the LM log10 probability (1.0)"
    )
    p.add_argument(
        "--scores",
        choices=tuple(SCORES),
        default="auto",
        help="whether the field after the id is an existing score (auto: when every line has "
        "a number there)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write every candidate, rescored")
    p.add_argument("--best", metavar="FILE", help="write the 1-best per id here, not to stdout")
    p.add_argument("--format", choices=("text", "jsonl"), default="text", help="(text)")
    p.set_defaults(func=cmd_rescore)


def _open_out(path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror}).") from exc


def _write(out: IO[str], rows: Sequence[Any], fmt: str, full: bool) -> None:
    for r in rows:
        e = r.entry
        if fmt == "jsonl":
            rec = {
                "id": e.sentence_id,
                "text": e.text,
                "score": e.score,
                "lm_log10_prob": round(r.lm_log10, 6),
                "tokens": r.num_tokens,
                "total": round(r.total, 6),
            }
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif full:
            out.write(f"{e.sentence_id} {r.total:.6f} {e.text}".rstrip() + "\n")
        else:
            out.write(f"{e.sentence_id} {e.text}".rstrip() + "\n")


def cmd_rescore(args: argparse.Namespace) -> int:
    from rnnkit.evaluation.rescoring import rescore_nbest

    result = rescore_nbest(
        args.model,
        args.nbest,
        ngram=args.ngram,
        lam=args.lam,
        tune_lambda=args.tune_lambda,
        lm_weight=args.lm_weight,
        scores=args.scores,
        weights=args.weights,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    if args.output is not None:
        with _open_out(args.output) as f:
            _write(f, result.candidates, args.format, full=True)
    if args.best is not None:
        with _open_out(args.best) as f:
            _write(f, result.best, args.format, full=False)
    else:
        _write(sys.stdout, result.best, args.format, full=False)
    print(
        f"rescored {len(result.candidates)} candidates for {len(result.best)} sentence ids "
        f"(existing scores: {'yes' if result.has_scores else 'no'}, "
        f"LM weight {args.lm_weight}, LM scores in log10)",
        file=sys.stderr,
    )
    return 0
