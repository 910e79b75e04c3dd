"""n-gram verbs: ``rnnkit ngram train | build-binary | score | eval`` (NumPy only; torch is
never imported).

Scores are log10 probabilities in KenLM's convention: ``</s>`` is predicted and counted,
``<s>`` is context only; words outside the model's vocabulary are scored as ``<unk>`` and
counted as OOVs. Results go to stdout, summaries and progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rnnkit.errors import ConfigError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def register(subparsers: Any) -> None:
    ngram = subparsers.add_parser(
        "ngram",
        help="n-gram language models: train (Kneser-Ney), build-binary, score, eval",
        description="Traditional n-gram language models: interpolated modified Kneser-Ney "
        "estimation as KenLM's lmplz, ARPA files (plain or .gz) and rnnkit's binary format "
        "(memory-mapped, loads at once), scoring as KenLM's query.",
    )
    sub = ngram.add_subparsers(dest="ngram_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="estimate a modified Kneser-Ney model into an ARPA file",
        description="Estimate an interpolated modified Kneser-Ney n-gram model from a text "
        "with one sentence per line (tokens separated by whitespace) and write it as ARPA. "
        "A <unk> in the text is the unknown word and is counted like any other word. "
        "The binary model (memory-mapped, loads at once) is written beside it: kn5.arpa -> "
        "kn5.ngram.",
    )
    p.add_argument("text", metavar="FILE", help="training text (UTF-8, one sentence per line)")
    p.add_argument("--order", "-n", type=int, required=True, help="n-gram order N (e.g. 3 or 5)")
    p.add_argument(
        "--output", "-o", required=True, metavar="MODEL", help="ARPA file to write (.gz: gzip)"
    )
    p.add_argument(
        "--binary",
        choices=("beside", "instead", "no"),
        default="beside",
        help="the binary model: beside the ARPA file (MODEL minus .arpa[.gz], plus .ngram), "
        "instead of it (written to MODEL itself), or not at all (beside)",
    )
    p.add_argument(
        "--discount-fallback",
        action="store_true",
        help="when an order's counts of counts cannot give its discounts (small data), use "
        "fallback discounts instead of failing (lmplz's 0.5 1 1.5 unless --fallback-discounts)",
    )
    p.add_argument(
        "--fallback-discounts",
        nargs=3,
        type=float,
        metavar=("D1", "D2", "D3"),
        help="the fallback discounts for --discount-fallback",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "build-binary",
        help="convert an ARPA file into rnnkit's binary model (loads at once)",
        description="Read an ARPA file (plain or .gz, from rnnkit, KenLM, SRILM, ...) and write "
        "it in rnnkit's binary format: memory-mapped arrays that load in a fraction of a "
        "second and score the same. rnnkit ngram score/eval, rnnkit eval/score/rescore and "
        "--ngram take either file.",
    )
    p.add_argument("arpa", metavar="ARPA", help="ARPA file (plain or .gz)")
    p.add_argument(
        "out",
        metavar="OUT",
        nargs="?",
        help="binary model to write (ARPA minus .arpa[.gz], .ngram)",
    )
    p.set_defaults(func=cmd_build_binary)

    for name, helptext in (
        ("score", "log10 probability of each sentence of a file"),
        ("eval", "perplexity of a model on a text"),
    ):
        p = sub.add_parser(
            name, help=helptext, description=helptext[0].upper() + helptext[1:] + "."
        )
        p.add_argument(
            "model", metavar="MODEL", help="ARPA file (plain or .gz) or binary model (.ngram)"
        )
        p.add_argument("text", metavar="FILE", help="text to score (UTF-8, one sentence per line)")
        if name == "score":
            p.add_argument(
                "--per-token", action="store_true", help="also give each token's log10 probability"
            )
            p.add_argument("--format", choices=("text", "jsonl"), default="text", help="(text)")
            p.set_defaults(func=cmd_score)
        else:
            p.add_argument("--format", choices=("text", "json"), default="text", help="(text)")
            p.set_defaults(func=cmd_eval)


def _fallback(args: argparse.Namespace) -> tuple[float, float, float] | None:
    values = args.fallback_discounts
    if values is not None and not args.discount_fallback:
        raise ConfigError("--fallback-discounts needs --discount-fallback.")
    if not args.discount_fallback:
        return None
    if values is None:
        return (0.5, 1.0, 1.5)
    for j, d in enumerate(values, start=1):
        if not 0.0 <= d <= j:
            raise ConfigError(f"--fallback-discounts D{j} must be between 0 and {j}, got {d}.")
    return (values[0], values[1], values[2])


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit.ngram import train_kneser_ney_verbose, write_arpa

    if args.order < 1:
        raise ConfigError(f"--order must be at least 1 (the n of the n-grams), got {args.order}.")
    fallback = _fallback(args)
    t0 = time.perf_counter()
    model, info = train_kneser_ney_verbose(args.text, args.order, discount_fallback=fallback)
    t1 = time.perf_counter()
    _log(
        f"read {info.num_sentences} sentences, {info.num_words} words; vocabulary "
        f"{model.vocab_size} types (with <unk>, <s>, </s>)"
    )
    for k, (c, d) in enumerate(zip(info.counts, info.discounts), start=1):
        note = " (fallback)" if k in info.fallback_orders else ""
        _log(f"{k}-grams: {c}  discounts D1={d[0]:.4f} D2={d[1]:.4f} D3+={d[2]:.4f}{note}")
    from rnnkit.ngram import binary_path, write_binary

    written = []
    try:
        if args.binary == "instead":
            write_binary(model, args.output)
            written.append(f"{args.output} (binary)")
        else:
            write_arpa(model, args.output)
            written.append(f"{args.output} (ARPA)")
            if args.binary == "beside":
                write_binary(model, binary_path(args.output))
                written.append(f"{binary_path(args.output)} (binary)")
    except OSError as exc:
        raise ConfigError(f"--output {args.output}: cannot write ({exc.strerror}).") from exc
    t2 = time.perf_counter()
    _log(
        f"estimated in {t1 - t0:.2f} s, wrote {' and '.join(written)} in {t2 - t1:.2f} s "
        f"(order {model.order})"
    )
    return 0


def cmd_build_binary(args: argparse.Namespace) -> int:
    from rnnkit.ngram import binary_path, read_arpa, write_binary

    out = args.out if args.out is not None else str(binary_path(args.arpa))
    t0 = time.perf_counter()
    model = read_arpa(args.arpa)
    t1 = time.perf_counter()
    try:
        write_binary(model, out)
    except OSError as exc:
        raise ConfigError(f"OUT {out}: cannot write ({exc.strerror}).") from exc
    t2 = time.perf_counter()
    counts = " ".join(f"{k}:{c}" for k, c in enumerate(model.counts(), start=1))
    _log(
        f"read {args.arpa} in {t1 - t0:.2f} s (order {model.order}, n-grams {counts}); "
        f"wrote {out} in {t2 - t1:.2f} s"
    )
    return 0


def _load(path: str) -> Any:
    from rnnkit.ngram import load_model

    return load_model(path)


def _summary(scores: Any) -> dict[str, Any]:
    return {
        "perplexity": scores.perplexity(include_oov=True),
        "perplexity_excluding_oovs": scores.perplexity(include_oov=False),
        "log10_prob": scores.total_log10,
        "sentences": scores.num_sentences,
        "tokens": scores.num_tokens,
        "oovs": scores.num_oov,
    }


def cmd_score(args: argparse.Namespace) -> int:
    from rnnkit.ngram import read_lines

    model = _load(args.model)
    lines = read_lines(args.text)
    scores = model.score_sentences(lines)
    sent = scores.sentence_log10()
    out = sys.stdout
    for i, line in enumerate(lines):
        a, b = int(scores.offsets[i]), int(scores.offsets[i + 1])
        words = [*line.split(), "</s>"]
        text = " ".join(words[:-1])
        if args.format == "jsonl":
            rec: dict[str, Any] = {
                "text": text,
                "log10_prob": round(float(sent[i]), 6),
                "tokens": b - a,
                "oovs": int(scores.oov[a:b].sum()),
            }
            if args.per_token:
                rec["per_token"] = [
                    {"token": w, "log10_prob": round(float(lp), 6), "oov": bool(o)}
                    for w, lp, o in zip(words, scores.token_log10[a:b], scores.oov[a:b])
                ]
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            row = f"{sent[i]:.6f}\t{text}"
            if args.per_token:
                row += "\t" + " ".join(
                    f"{w}={lp:.6f}{'(OOV)' if o else ''}"
                    for w, lp, o in zip(words, scores.token_log10[a:b], scores.oov[a:b])
                )
            out.write(row + "\n")
    s = _summary(scores)
    _log(
        f"total log10 probability {s['log10_prob']:.4f} over {s['sentences']} sentences, "
        f"{s['tokens']} tokens (</s> included), {s['oovs']} OOV tokens; perplexity "
        f"{s['perplexity']:.2f} including OOVs, {s['perplexity_excluding_oovs']:.2f} excluding"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.ngram import read_lines

    model = _load(args.model)
    scores = model.score_sentences(read_lines(args.text))
    s = _summary(scores)
    if args.format == "json":
        print(json.dumps({"model": args.model, "text": args.text, "order": model.order, **s}))
        return 0
    print(f"perplexity: {s['perplexity']:.2f} (including OOVs; </s> counted, <s> not)")
    print(f"perplexity excluding OOVs: {s['perplexity_excluding_oovs']:.2f}")
    print(f"log10 probability: {s['log10_prob']:.4f} (sum over tokens)")
    print(f"sentences: {s['sentences']}")
    print(f"tokens: {s['tokens']} (words plus one </s> per sentence)")
    print(f"OOVs: {s['oovs']} tokens (scored as <unk>)")
    return 0
