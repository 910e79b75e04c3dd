"""Tokenise and encode corpora into compact NumPy int32 id arrays.

Character level: a token is a Unicode code point; the text is turned into code points with
one vectorised step per 4 MiB chunk, so a 1 GB file never becomes a Python list of ints.
Word level: each line is cut into words by the tokeniser the vocabulary names
(:mod:`rnnkit.text.tokenize`), and ``</s>`` follows each line, so the encoded file is the
stream of stream mode (PTB); sentence mode cuts the same array at its ``</s>`` markers
(:mod:`rnnkit.text.sentences`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from rnnkit.choices import LEVELS
from rnnkit.errors import ConfigError, DataError
from rnnkit.text.reading import iter_text
from rnnkit.text.tokenize import check_tokenizer, tokenize
from rnnkit.text.vocab import BOS, EOS, UNK, Vocab

BUILTIN_CORPORA = ("shakespeare",)


def resolve_corpus(corpus: str | os.PathLike[str] | None) -> Path:
    """A corpus argument as a path: None or 'shakespeare' is the built-in tiny Shakespeare."""
    if corpus is None or str(corpus) in BUILTIN_CORPORA:
        ref = resources.files("rnnkit") / "data" / "shakespeare.txt"
        return Path(str(ref))
    return Path(corpus)


def check_level(level: str) -> None:
    if level not in LEVELS:
        raise ConfigError(f"--level must be char or word, not {level!r}.")


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def iter_lines(path: str | os.PathLike[str], what: str = "text") -> Iterator[str]:
    """Whole lines of a UTF-8 file, across chunk boundaries, without their newline."""
    return _lines(Path(path), what)


def _lines(path: Path, what: str) -> Iterator[str]:
    """Whole lines of the file, across chunk boundaries, without their newline."""
    rest = ""
    for chunk in iter_text(path, what):
        parts = (rest + chunk).split("\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def count_tokens(
    path: str | os.PathLike[str],
    level: str,
    what: str = "corpus",
    tokenizer: str = "whitespace",
    lowercase: bool = False,
) -> Counter[str]:
    """Token counts of a file (words get a ``</s>`` per line)."""
    check_level(level)
    check_tokenizer(tokenizer)
    counts: Counter[str] = Counter()
    if level == "char":
        for chunk in iter_text(path, what):
            cps, n = np.unique(_code_points(chunk), return_counts=True)
            for cp, c in zip(cps.tolist(), n.tolist()):
                counts[chr(cp)] += c
    else:
        for line in _lines(Path(path), what):
            words = tokenize(line, tokenizer, lowercase)
            counts.update(words)
            counts[EOS] += 1
    return counts


def build_vocab(
    path: str | os.PathLike[str],
    level: str,
    max_size: int | None = None,
    min_count: int = 1,
    what: str = "corpus",
    tokenizer: str = "whitespace",
    lowercase: bool = False,
    sentence_markers: bool = False,
) -> Vocab:
    """The vocabulary of a training file (training data only; never valid or test).

    Word vocabularies hold ``<unk>`` and ``</s>`` (and ``<s>`` with ``sentence_markers``, for
    sentence mode) before the words.
    """
    if level == "char" and (tokenizer != "whitespace" or lowercase or sentence_markers):
        raise ConfigError("--tokenizer, --lowercase and --mode sentence need --level word.")
    counts = count_tokens(path, level, what, tokenizer, lowercase)
    if level == "char" and not any(not ch.isspace() for ch in counts):
        raise DataError(f"{what} file {str(path)!r} is empty or holds only whitespace.")
    if level == "word" and not any(t != EOS for t in counts):
        raise DataError(f"{what} file {str(path)!r} is empty or holds only whitespace.")
    specials = [UNK] if level == "char" else [UNK, BOS, EOS] if sentence_markers else [UNK, EOS]
    return Vocab.from_counts(
        counts,
        level,
        max_size=max_size,
        min_count=min_count,
        specials=specials,
        tokenizer=tokenizer,
        lowercase=lowercase,
    )


@dataclass
class Encoded:
    """A file as token ids, and how many of its tokens fell outside the vocabulary."""

    ids: np.ndarray  # int32, shape (N,)
    unknown: int


def encode_file(path: str | os.PathLike[str], vocab: Vocab, what: str = "corpus") -> Encoded:
    """Encode a file with ``vocab``; unseen tokens become ``<unk>`` and are counted."""
    if vocab.level == "char":
        return _encode_chars(Path(path), vocab, what)
    return _encode_words(Path(path), vocab, what)


def encode_text(text: str, vocab: Vocab) -> Encoded:
    """Encode a string (a prompt, a sentence); words get no ``</s>`` here."""
    if vocab.level == "char":
        keys, vals = _char_table(vocab)
        return _lookup_chars(_code_points(text), keys, vals, vocab.unk_id)
    words = vocab.tokenize(text)
    ids = np.fromiter((vocab.id(w) for w in words), dtype=np.int32, count=len(words))
    unknown = sum(1 for w in words if w not in vocab.index)
    return Encoded(ids, unknown)


def decode(ids: np.ndarray | list[int], vocab: Vocab) -> str:
    """Token ids back to text (words joined by spaces, ``</s>`` as a newline)."""
    tokens = [vocab.tokens[int(i)] for i in ids]
    if vocab.level == "char":
        return "".join(tokens)
    return " ".join(tokens).replace(f" {EOS} ", "\n").replace(EOS, "\n")


def _char_table(vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted((ord(t), i) for i, t in enumerate(vocab.tokens) if len(t) == 1)
    keys = np.array([k for k, _ in pairs], dtype=np.uint32)
    vals = np.array([v for _, v in pairs], dtype=np.int32)
    return keys, vals


def _lookup_chars(cps: np.ndarray, keys: np.ndarray, vals: np.ndarray, unk_id: int) -> Encoded:
    if len(keys) == 0:
        return Encoded(np.full(len(cps), unk_id, dtype=np.int32), len(cps))
    pos = np.clip(np.searchsorted(keys, cps), 0, len(keys) - 1)
    found = keys[pos] == cps
    ids = np.where(found, vals[pos], np.int32(unk_id)).astype(np.int32)
    return Encoded(ids, int(len(cps) - np.count_nonzero(found)))


def _encode_chars(path: Path, vocab: Vocab, what: str) -> Encoded:
    keys, vals = _char_table(vocab)
    out, unknown = _Growing(), 0
    for chunk in iter_text(path, what):
        enc = _lookup_chars(_code_points(chunk), keys, vals, vocab.unk_id)
        out.extend(enc.ids)
        unknown += enc.unknown
    return Encoded(out.finish(), unknown)


def _encode_words(path: Path, vocab: Vocab, what: str) -> Encoded:
    eos = vocab.eos_id if vocab.eos_id is not None else vocab.unk_id
    out = _Growing()
    buf: list[int] = []
    unknown = 0
    index, unk = vocab.index, vocab.unk_id
    plain = vocab.tokenizer == "whitespace" and not vocab.lowercase
    for line in _lines(path, what):
        for w in line.split() if plain else vocab.tokenize(line):
            i = index.get(w, unk)
            if i == unk and w != UNK:
                unknown += 1
            buf.append(i)
        buf.append(eos)
        if len(buf) >= 1 << 20:  # flush to the compact array every million tokens
            out.extend(np.array(buf, dtype=np.int32))
            buf = []
    out.extend(np.array(buf, dtype=np.int32))
    return Encoded(out.finish(), unknown)


class _Growing:
    """An int32 array grown in place. ndarray.resize reallocates, and Linux moves a large
    block's pages (mremap) instead of copying them, so a 100M-token corpus costs its 4 bytes
    a token and not twice that, as a list of parts joined at the end does. resize zero-fills
    the new part (making it resident), so it grows by at most 4M tokens (16 MB) at a time."""

    def __init__(self) -> None:
        self.ids = np.empty(1 << 20, dtype=np.int32)
        self.size = 0

    def extend(self, part: np.ndarray) -> None:
        need = self.size + len(part)
        if need > len(self.ids):
            grown = min(2 * len(self.ids), len(self.ids) + (1 << 22))
            self.ids.resize(max(need, grown), refcheck=False)
        self.ids[self.size : need] = part
        self.size = need

    def finish(self) -> np.ndarray:
        self.ids.resize(self.size, refcheck=False)
        return self.ids
