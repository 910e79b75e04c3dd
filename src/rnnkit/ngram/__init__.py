"""Traditional n-gram language models: counting, modified Kneser-Ney, ARPA files, scoring.

NumPy only (never torch). The pieces::

    from rnnkit.ngram import train_kneser_ney, write_arpa, read_arpa

    model = train_kneser_ney("ptb.train.txt", order=5)     # interpolated modified Kneser-Ney
    write_arpa(model, "kn5.arpa.gz")                        # ARPA, gzip by the suffix
    model = read_arpa("kn5.arpa.gz")
    write_binary(model, "kn5.ngram")                        # memory-mapped arrays
    model = load_model("kn5.ngram")                         # binary or ARPA, by content
    scores = model.score_sentences(["the cat sat"])        # log10, </s> predicted, <s> context
    scores.sentence_log10(), scores.perplexity(), scores.num_oov

Estimation follows KenLM's ``lmplz`` (see :mod:`rnnkit.ngram.kneser_ney`), scoring follows
KenLM's query (see :mod:`rnnkit.ngram.model`).
"""

from rnnkit.ngram.arpa import read_arpa, write_arpa
from rnnkit.ngram.binary import binary_path, is_binary, load_model, read_binary, write_binary
from rnnkit.ngram.corpus import BOS, EOS, UNK, read_lines
from rnnkit.ngram.kneser_ney import (
    Estimate,
    train_kneser_ney,
    train_kneser_ney_verbose,
)
from rnnkit.ngram.model import NgramModel, SentenceScores

__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "Estimate",
    "NgramModel",
    "SentenceScores",
    "binary_path",
    "is_binary",
    "load_model",
    "read_arpa",
    "read_binary",
    "read_lines",
    "train_kneser_ney",
    "train_kneser_ney_verbose",
    "write_arpa",
    "write_binary",
]
