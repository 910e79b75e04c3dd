"""``rnnkit score RUN FILE``: sentence log10 probabilities under a word-level run.

KenLM's convention: each line is a sentence ``<s> w_1 .. w_n </s>``; ``</s>`` is predicted
and counted, ``<s>`` is context only. ``-`` reads the sentences from stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from rnnkit.cli.lm import add_interpolation_flags, add_weights_flag

#: Above this share of OOV words, the text is probably in another vocabulary: warn.
OOV_WARNING = 0.5


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="log10 probability of each sentence under a word-level run",
        description="Score each line of FILE (- for stdin) as one sentence under a word-level "
        "run, as KenLM does: </s> is predicted and counted, <s> is context only, OOV words are "
        "scored as <unk> and counted. Prints one line per sentence, then the totals and the "
        "perplexity including and excluding OOVs.",
    )
    p.add_argument(
        "run", metavar="MODEL", help="run directory of a word-level model, or an ARPA file"
    )
    p.add_argument("file", metavar="FILE", help="UTF-8 text, one sentence a line; - for stdin")
    p.add_argument("--per-token", action="store_true", help="also each token's log10 prob")
    p.add_argument(
        "--format",
        choices=("text", "jsonl"),
        default="text",
        help="text, or jsonl: one JSON object per sentence (totals on stderr) (text)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch (64)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown on a terminal)"
    )
    add_weights_flag(p)
    add_interpolation_flags(p)
    p.set_defaults(func=cmd_score)


def _read_stdin() -> list[str]:
    """Every line of stdin (``rnnkit classify predict -`` reads them at once)."""
    return list(_stdin_lines())


def _stdin_lines() -> Iterator[str]:
    """The lines of stdin, read and decoded a block at a time (as files are: only \\n ends
    a line, a BOM is dropped)."""
    import codecs

    from rnnkit.errors import DataError
    from rnnkit.text.corpus import split_lines
    from rnnkit.text.reading import CHUNK_BYTES

    def chunks() -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        offset = 0
        while True:
            block = sys.stdin.buffer.read(CHUNK_BYTES)
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                at = offset - len(decoder.getstate()[0]) + exc.start if block else offset
                raise DataError(
                    f"stdin is not valid UTF-8 (byte offset {max(at, 0)}); "
                    "convert it to UTF-8 first."
                ) from exc
            if text:
                yield text
            if not block:
                return
            offset += len(block)

    return split_lines(chunks())


def cmd_score(args: argparse.Namespace) -> int:
    from rnnkit import api

    mix = dict(ngram=args.ngram, lam=args.lam, tune_lambda=args.tune_lambda)
    opts = dict(batch_size=args.batch_size, device=args.device, weights=args.weights, **mix)
    progress = False if args.no_progress else None
    if args.file == "-":
        stream = api.score_stream(
            args.run, sentences=_stdin_lines(), per_token=args.per_token, progress=progress,
            **opts,
        )  # fmt: skip
        stream.totals.file = "<stdin>"
    else:
        stream = api.score_stream(
            args.run, args.file, per_token=args.per_token, progress=progress, **opts
        )
    out = sys.stdout
    for line in stream:  # each line printed as soon as it is scored
        rec = line.record()
        if args.format == "jsonl":
            text = json.dumps(rec, ensure_ascii=False)  # U+2028/9 escaped: one line a record
            out.write(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n")
            continue
        out.write(
            f"{rec['log10_prob']:.4f} log10\t{rec['tokens']} tokens\t{rec['oovs']} OOV\t"
            f"{rec['text']}\n"
        )
        for t in rec.get("per_token", []):
            mark = "\tOOV" if t["oov"] else ""
            out.write(f"\t{t['token']}\t{t['log10_prob']:.4f} log10{mark}\n")
    result = stream.totals
    summary = _summary(result)
    print(summary, file=sys.stdout if args.format == "text" else sys.stderr)
    if result.num_words and result.oov_rate > OOV_WARNING:
        print(
            f"rnnkit: warning: {result.oov_rate:.1%} of the words of {result.file} are not in "
            "the run's vocabulary (OOV rate); is the text in the model's vocabulary and "
            "tokenisation?",
            file=sys.stderr,
        )
    return 0


def _summary(result: Any) -> str:
    return (
        f"{result.file}: {result.num_sentences:,} sentences, {result.num_tokens:,} tokens "
        f"(</s> included), {result.num_oov:,} OOVs; total {result.total_log10:.4f} log10; "
        f"perplexity {result.perplexity:.3f} including OOVs, "
        f"{result.perplexity_excl_oov:.3f} excluding OOVs (per token)"
    )
