"""The seeds' word-level RNN tutorial, with rnnkit: reddit comments -> sentences -> an Elman
RNN language model -> sampled sentences.

As the tutorial does it: read the ``body`` column of the reddit CSV, split the comments into
sentences, lowercase and tokenise them into words and punctuation, keep the 8000 most frequent
words (every other word becomes the unknown token), wrap each sentence in SENTENCE_START and
SENTENCE_END (rnnkit's ``<s>`` and ``</s>``), train an Elman RNN with 100 hidden units on
the sentences (sentence mode: each one independent), then sample sentences word by word from
``<s>`` until ``</s>``, never emitting the unknown token (the tutorial resamples it).

    python examples/reddit_rnnlm.py                          # about two minutes
    python examples/reddit_rnnlm.py --minutes 5 --samples 20

The same with the command line (after writing the sentences one a line to sentences.txt)::

    rnnkit train sentences.txt --level word --mode sentence --tokenizer words --lowercase \\
        --vocab-size 8000 --cell rnn --hidden-size 100 --out runs/reddit --max-time 120
    rnnkit generate runs/reddit --num-samples 10
    rnnkit score runs/reddit sentences.txt --format jsonl | head
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import rnnkit
from rnnkit.text.tokenize import split_sentences

DATA = Path(os.environ.get("RNNKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CSV = DATA / "reddit-comments" / "reddit-comments-2015-08.csv"


def read_sentences(path: Path) -> list[str]:
    """Every sentence of every comment's ``body``, one string each."""
    csv.field_size_limit(1 << 24)
    with path.open(encoding="utf-8", newline="") as f:
        bodies = [row["body"] for row in csv.DictReader(f)]
    return [s for body in bodies for s in split_sentences(body)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=CSV, help="the reddit CSV (body column)")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time (2)")
    parser.add_argument("--samples", type=int, default=10, help="sentences to sample (10)")
    parser.add_argument("--min-words", type=int, default=7, help="shortest sample kept (7)")
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    if not args.csv.is_file():
        print(f"reddit CSV not found at {args.csv} (set RNNKIT_DATA)", file=sys.stderr)
        return 2

    sentences = read_sentences(args.csv)
    print(f"{len(sentences):,} sentences from {args.csv.name}; e.g. {sentences[0]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "sentences.txt"
        corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        run = args.out or Path(tmp) / "run"
        result = rnnkit.train(
            corpus,
            run,
            overwrite=True,
            level="word",
            mode="sentence",  # SENTENCE_START ... SENTENCE_END, each sentence independent
            tokenizer="words",
            lowercase=True,
            vocab_size=8000,
            cell="rnn",
            hidden_size=100,
            batch_size=16,
            bptt=64,
            lr=5e-3,
            epochs=100,
            patience=3,
            seed=args.seed,
            max_time=args.minutes * 60,
            progress=False,
            log=lambda msg: print("  " + msg, file=sys.stderr),
        )
        loaded = rnnkit.load(run)
        print(
            f"vocabulary {len(loaded.vocab):,} words (at most 8000; <unk>, <s>, </s> included); "
            f"{result.stopped} after {result.elapsed:.0f} s, "
            f"{result.tokens_per_second:,.0f} words/s"
        )
        valid = rnnkit.evaluate(loaded, corpus)
        print(f"perplexity on the training sentences: {valid.perplexity:.1f} (per word)")
        kept: list[str] = []
        seed = args.seed
        while len(kept) < args.samples and seed < args.seed + 50:
            for s in rnnkit.generate(
                loaded, num_samples=args.samples, max_new_tokens=40, seed=seed
            ):
                if len(s.split()) >= args.min_words and len(kept) < args.samples:
                    kept.append(s.strip())
            seed += 1
        print("\nsampled sentences:")
        for s in kept:
            print("  " + s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
