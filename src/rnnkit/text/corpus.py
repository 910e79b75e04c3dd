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
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

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


def iter_lines(
    path: str | os.PathLike[str],
    what: str = "text",
    on_bytes: Callable[[int], object] | None = None,
) -> Iterator[str]:
    """Whole lines of a UTF-8 file, across chunk boundaries, without their newline."""
    return _lines(Path(path), what, on_bytes)


def _lines(path: Path, what: str, on_bytes: Callable[[int], object] | None = None) -> Iterator[str]:
    """Whole lines of the file, across chunk boundaries, without their newline."""
    return split_lines(iter_text(path, what, on_bytes))


def split_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Whole lines of a text given in chunks (only ``\n`` ends a line; no final empty line).

    A line longer than a chunk is kept as a list of parts and joined once, so a 300 MB line
    costs its own size, not a copy per chunk.
    """
    parts: list[str] = []
    for chunk in chunks:
        pieces = chunk.split("\n")
        if len(pieces) == 1:
            parts.append(pieces[0])
            continue
        parts.append(pieces[0])
        yield "".join(parts)
        yield from pieces[1:-1]
        parts = [pieces[-1]]
    rest = "".join(parts)
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
    out = _Growing()
    unknown = _encode_into(out, Path(path), vocab, what)
    return Encoded(out.finish(), unknown)


def encode_file_to_disk(
    path: str | os.PathLike[str],
    vocab: Vocab,
    what: str = "corpus",
    first: int | None = None,
    on_bytes: Callable[[int], object] | None = None,
) -> tuple[IdFile, int]:
    """Encode a file into an :class:`IdFile` (ids on disk, read back by position: a long
    evaluation holds windows, not the text) and count its unknown tokens. ``first`` is an
    id put before the text (the ``</s>`` of context a word-level stream starts from)."""
    out = IdFile()
    try:
        if first is not None:
            out.extend(np.array([first], dtype=np.int32))
        unknown = _encode_into(out, Path(path), vocab, what, on_bytes)
        out.flush()
    except BaseException:
        out.close()
        raise
    return out, unknown


def _encode_into(
    out: _Sink,
    path: Path,
    vocab: Vocab,
    what: str,
    on_bytes: Callable[[int], object] | None = None,
) -> int:
    if vocab.level == "char":
        return _encode_chars(out, path, vocab, what, on_bytes)
    return _encode_words(out, path, vocab, what, on_bytes)


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


def _encode_chars(
    out: _Sink, path: Path, vocab: Vocab, what: str, on_bytes: Callable[[int], object] | None
) -> int:
    keys, vals = _char_table(vocab)
    unknown = 0
    for chunk in iter_text(path, what, on_bytes):
        enc = _lookup_chars(_code_points(chunk), keys, vals, vocab.unk_id)
        out.extend(enc.ids)
        unknown += enc.unknown
    return unknown


def _encode_words(
    out: _Sink, path: Path, vocab: Vocab, what: str, on_bytes: Callable[[int], object] | None
) -> int:
    eos = vocab.eos_id if vocab.eos_id is not None else vocab.unk_id
    buf: list[int] = []
    unknown = 0
    index, unk = vocab.index, vocab.unk_id
    plain = vocab.tokenizer == "whitespace" and not vocab.lowercase
    for line in _lines(path, what, on_bytes):
        for words in _pieces(line, plain, vocab):
            for w in words:
                i = index.get(w, unk)
                if i == unk and w != UNK:
                    unknown += 1
                buf.append(i)
            if len(buf) >= 1 << 20:  # flush to the compact array every million tokens
                out.extend(np.array(buf, dtype=np.int32))
                buf = []
        buf.append(eos)
    out.extend(np.array(buf, dtype=np.int32))
    return unknown


#: A line longer than this is tokenised a piece at a time (cut at white space, which no
#: token holds), so a 300 MB line never becomes one list of 60 million Python strings.
PIECE_CHARS = 1 << 20


def _pieces(line: str, plain: bool, vocab: Vocab) -> Iterator[list[str]]:
    """The words of a line, as lists of at most about PIECE_CHARS characters' worth."""
    for piece in cut_at_space(line, PIECE_CHARS):
        yield piece.split() if plain else vocab.tokenize(piece)


def cut_at_space(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of at least ``size`` characters, each cut just after the first
    white space past ``size`` (the last piece holds the rest)."""
    start, n = 0, len(text)
    while n - start > size:
        m = _SPACE.search(text, start + size)
        if m is None:
            break
        yield text[start : m.end()]
        start = m.end()
    if start < n or n == 0:
        yield text[start:]


_SPACE = re.compile(r"\s")


class _Sink(Protocol):
    def extend(self, part: np.ndarray) -> None: ...


class IdFile:
    """Token ids (int32) in an anonymous temporary file, read back by position.

    Evaluating a long text holds a window of ids at a time instead of the whole array
    (the file is removed when closed, or when the process ends).
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="rnnkit-ids-")  # noqa: SIM115 (see close)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def extend(self, part: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(part, dtype=np.int32).tobytes())
        self.size += len(part)

    def flush(self) -> None:
        self.file.flush()

    def read(self, start: int, stop: int) -> np.ndarray:
        """ids[start:stop] as a new int32 array."""
        start, stop = max(0, start), min(stop, self.size)
        if stop <= start:
            return np.zeros(0, dtype=np.int32)
        data = os.pread(self.file.fileno(), 4 * (stop - start), 4 * start)
        return np.frombuffer(data, dtype=np.int32).copy()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> IdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
