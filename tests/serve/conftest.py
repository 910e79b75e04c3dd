"""Tiny runs for the page's tests, trained for a few steps each (seconds in all): word-level
language models (an Elman RNN in sentence mode, an LSTM in stream mode), a character-level
GRU, a trigram ARPA model of the same text, a classifier, a tagger, two translators of a toy
language pair (with attention, and the fixed-vector model) and a generator from labels."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

SUBJ = ["the cat", "a dog", "the old man", "my friend", "she", "he", "they"]
VERB = ["sees", "likes", "eats", "wants", "finds", "holds"]
OBJ = ["the fish", "a red ball", "some bread", "the small house", "it", "the big tree"]


def toy_text(lines: int, seed: int) -> str:
    rng = random.Random(seed)
    out = [f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)}" for _ in range(lines)]
    return "\n".join(out) + "\n"


def conll(path: Path, n: int, seed: int) -> Path:
    """word POS chunk columns: determiners and adjectives start noun chunks."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        lines.append(f"{rng.choice(['the', 'a'])} DT B-NP")
        if rng.random() < 0.5:
            lines.append(f"{rng.choice(['big', 'red'])} JJ I-NP")
        lines.append(f"{rng.choice(['cat', 'dog', 'man'])} NN I-NP")
        lines.append(f"{rng.choice(['sees', 'likes'])} VBZ B-VP")
        lines += [". . O", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


STEPS = dict(max_steps=12, progress=False, seed=3, batch_size=8)

GERMAN = ["zwei", "drei", "hund", "katze", "haus", "baum", "rot", "blau", "gross", "klein"]
ENGLISH = dict(zip(GERMAN, ["two", "three", "dog", "cat", "house", "tree", "red", "blue", "big",
                            "small"]))  # fmt: skip
CONDITIONED = {"pos": "what a wonderful and moving film", "neg": "a dull and tedious mess"}


def parallel(base: Path, split: str, n: int, seed: int) -> tuple[Path, Path]:
    """A toy language pair: the target is the source's words translated, in reverse order."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(GERMAN) for _ in range(rng.randint(2, 5))]
        src.append(" ".join(words))
        tgt.append(" ".join(ENGLISH[w] for w in reversed(words)))
    paths = base / f"{split}.de", base / f"{split}.en"
    for path, lines in zip(paths, (src, tgt)):
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return paths


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import rnnkit
    from rnnkit.api import classify, tag
    from rnnkit.ngram import train_kneser_ney, write_arpa

    base = tmp_path_factory.mktemp("serve_runs")
    train, valid = base / "train.txt", base / "valid.txt"
    train.write_text(toy_text(200, 0), encoding="utf-8")
    valid.write_text(toy_text(30, 1), encoding="utf-8")
    word = dict(level="word", valid=valid, bptt=8, lr=0.02, hidden_size=16, **STEPS)
    rnnkit.train(train, base / "words", mode="sentence", cell="rnn", **word)
    rnnkit.train(train, base / "lstm", cell="lstm", num_layers=2, **word)
    rnnkit.train(train, base / "chars", cell="gru", hidden_size=16, bptt=16, lr=0.02, **STEPS)
    write_arpa(train_kneser_ney(train, order=3, discount_fallback=(0.5, 1, 1.5)), base / "kn3.arpa")
    pos, neg = base / "data.pos", base / "data.neg"
    rng = random.Random(0)
    good = ["a fine good film", "good and fine acting", "a truly good story"]
    bad = ["a dull bad film", "bad and dull acting", "a truly bad story"]
    pos.write_text("".join(rng.choice(good) + "\n" for _ in range(30)), encoding="utf-8")
    neg.write_text("".join(rng.choice(bad) + "\n" for _ in range(30)), encoding="utf-8")
    classify.train([pos, neg], base / "polarity", hidden_size=8, pooling="max", lr=0.02,
                   **STEPS)  # fmt: skip
    ctrain, cvalid = conll(base / "chunk.txt", 40, 0), conll(base / "chunk.valid", 8, 1)
    tag.train(ctrain, base / "chunker", valid=cvalid, feature_columns=[1], hidden_size=8,
              lr=0.02, **STEPS)  # fmt: skip
    from rnnkit.api import condition, translate

    (de, en), (vde, ven) = parallel(base, "mt", 300, 1), parallel(base, "mt-valid", 10, 2)
    mt = dict(valid_source=vde, valid_target=ven, embedding_size=16, hidden_size=32, dropout=0.0,
              batch_size=16, lr=1e-2, progress=False, seed=3, threads=1)  # fmt: skip
    translate.train(de, en, base / "de-en", attention="general", bidirectional=True,
                    max_steps=60, **mt)  # fmt: skip
    translate.train(de, en, base / "de-en-fixed", max_steps=20, **mt)
    tsv = base / "reviews.tsv"
    tsv.write_text("".join(f"{lab}\t{CONDITIONED[lab]}\n" for lab in ("pos", "neg") * 20),
                   encoding="utf-8")  # fmt: skip
    condition.train([tsv], base / "reviews", hidden_size=24, lr=0.03, threads=1, **STEPS)
    return {
        "train": train,
        "words": base / "words",
        "lstm": base / "lstm",
        "chars": base / "chars",
        "arpa": base / "kn3.arpa",
        "polarity": base / "polarity",
        "chunker": base / "chunker",
        "de-en": base / "de-en",
        "de-en-fixed": base / "de-en-fixed",
        "reviews": base / "reviews",
    }


@pytest.fixture(scope="session")
def served(runs: dict[str, Path]) -> list:
    from rnnkit.serve import load_models

    keys = ["words", "lstm", "chars", "arpa", "polarity", "chunker", "de-en", "de-en-fixed",
            "reviews"]  # fmt: skip
    return load_models([runs[k] for k in keys])
