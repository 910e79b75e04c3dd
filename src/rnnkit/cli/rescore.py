"""``rnnkit rescore``: rescore n-best lists (Mikolov's RNNLM format) with a language model.

The language model is anything :func:`load_scorer` turns into a
:data:`~rnnkit.evaluation.interpolation.TokenScorer` (sentences to per-token log10
probabilities): an ARPA file (:func:`ngram_scorer`) or a word-level run (:func:`rnn_scorer`).
``--ngram ARPA --lambda L`` interpolates MODEL (weight L, Mikolov's convention) with an n-gram
model word by word.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from rnnkit.cli.lm import add_interpolation_flags
from rnnkit.errors import ConfigError, DataError
from rnnkit.evaluation.interpolation import DEFAULT_LAMBDA


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
    add_interpolation_flags(p)
    p.add_argument(
        "--lm-weight", type=float, default=1.0, help="weight of the LM log10 probability (1.0)"
    )
    p.add_argument(
        "--scores",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the field after the id is an existing score (auto: when every line has "
        "a number there)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write every candidate, rescored")
    p.add_argument("--best", metavar="FILE", help="write the 1-best per id here, not to stdout")
    p.add_argument("--format", choices=("text", "jsonl"), default="text", help="(text)")
    p.set_defaults(func=cmd_rescore)


def ngram_scorer(path: str) -> Any:
    """A TokenScorer for an ARPA file."""
    from rnnkit.ngram import read_arpa

    model = read_arpa(path)

    def score(sentences: Sequence[str]) -> list[Any]:
        return model.score_sentences(sentences).per_sentence()

    return score


def rnn_scorer(path: Path) -> Any:
    """A TokenScorer for a word-level RNN run directory (sentences scored independently)."""
    from rnnkit import api
    from rnnkit.evaluation.sentences import token_scorer

    loaded = api.load(path, device="auto")
    if loaded.vocab.level != "word":
        raise ConfigError(
            f"MODEL {path} is a character-level run; rescoring needs a word-level run (--level word)."
        )
    return token_scorer(loaded.model, loaded.vocab, device=next(loaded.model.parameters()).device)


def load_scorer(path: str) -> Any:
    """Turn a MODEL argument into a TokenScorer: an ARPA file, or an RNN run directory."""
    p = Path(path)
    if p.is_dir():
        return rnn_scorer(p)
    if not p.exists():
        raise DataError(f"{path}: no such model file or run directory; check the path")
    return ngram_scorer(path)


def tune_on(model: Any, ngram: Any, valid: str) -> tuple[float, float]:
    """The interpolation weight of ``model`` minimising perplexity on the text ``valid``."""
    import numpy as np

    from rnnkit.evaluation.interpolation import tune_lambda
    from rnnkit.ngram import read_lines

    lines = read_lines(valid)
    if not lines:
        raise DataError(f"--tune-lambda {valid}: the file is empty; give a validation text")
    a, b = model(lines), ngram(lines)
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise DataError(
                f"--tune-lambda {valid}:{i + 1}: the models scored {x.size} and {y.size} tokens;"
                " they must share the tokenisation"
            )
    return tune_lambda(np.concatenate(a), np.concatenate(b))


def _open_out(path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror})") from exc


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
    from rnnkit.evaluation.interpolation import check_lambda, interpolated_scorer
    from rnnkit.evaluation.rescoring import best_per_id, read_nbest, rescore

    if args.lam is not None and args.ngram is None:
        raise ConfigError("--lambda needs --ngram ARPA (the model to interpolate MODEL with)")
    if args.tune_lambda is not None and args.ngram is None:
        raise ConfigError("--tune-lambda needs --ngram ARPA (the model to interpolate MODEL with)")
    if args.tune_lambda is not None and args.lam is not None:
        raise ConfigError("give either --lambda or --tune-lambda, not both")
    has_score = {"auto": None, "yes": True, "no": False}[args.scores]
    entries = read_nbest(args.nbest, has_score=has_score)
    scorer = load_scorer(args.model)
    if args.ngram is not None:
        if not Path(args.ngram).is_file():
            raise DataError(f"--ngram {args.ngram}: no such ARPA file; check the path")
        ngram = ngram_scorer(args.ngram)
        if args.tune_lambda is not None:
            lam, ppl = tune_on(scorer, ngram, args.tune_lambda)
            print(
                f"tuned --lambda {lam:.4f} on {args.tune_lambda}: interpolated perplexity "
                f"{ppl:.2f}",
                file=sys.stderr,
            )
        else:
            lam = check_lambda(DEFAULT_LAMBDA if args.lam is None else args.lam)
        scorer = interpolated_scorer(scorer, ngram, lam)
    rescored = rescore(entries, scorer, lm_weight=args.lm_weight)
    best = best_per_id(rescored)
    if args.output is not None:
        with _open_out(args.output) as f:
            _write(f, rescored, args.format, full=True)
    if args.best is not None:
        with _open_out(args.best) as f:
            _write(f, best, args.format, full=False)
    else:
        _write(sys.stdout, best, args.format, full=False)
    print(
        f"rescored {len(rescored)} candidates for {len(best)} sentence ids "
        f"(existing scores: {'yes' if entries[0].score is not None else 'no'}, "
        f"LM weight {args.lm_weight}, LM scores in log10)",
        file=sys.stderr,
    )
    return 0
