"""Reading text for n-gram models: one sentence per line, tokens separated by whitespace.

Lines are split on ``"\\n"`` only and tokens with Python's :meth:`str.split` (the same
tokenisation as the ``kenlm`` Python module), so an empty line is a sentence with no words
(it still predicts ``</s>``). Words are encoded once into a flat NumPy ``int32`` array plus one
length per sentence; no per-token Python objects outlive a chunk of the file.

The special words follow KenLM: ``<unk>`` has id 0, ``<s>`` id 1 and ``</s>`` id 2; the other
words get ids in order of first appearance. A ``<unk>`` in the training text is the unknown
word itself (Penn Treebank's convention) and is counted like any other word.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError
from rnnkit.text.reading import input_error  # torch-free, as ngram/ must stay

UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = (UNK, BOS, EOS)

_CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class EncodedText:
    """Sentences as word ids: ``ids`` (int32, words only, no markers), ``lengths`` (int64).

    Sentence ``s`` is ``ids[offsets[s]:offsets[s + 1]]`` with ``offsets = [0, *cumsum(lengths)]``.
    """

    ids: np.ndarray
    lengths: np.ndarray

    @property
    def num_sentences(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_words(self) -> int:
        return int(self.ids.shape[0])


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small lists/strings.

    They hold no cycles, and CPython's collector would otherwise rescan them over and over
    (five times slower).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def new_vocab() -> dict[str, int]:
    """A vocabulary holding only the three special words, with KenLM's ids."""
    return {w: i for i, w in enumerate(SPECIALS)}


class _UnkLookup(dict[str, int]):
    """A word-to-id dict that answers ``<unk>``'s id for unknown words (C-speed hits)."""

    def __missing__(self, key: str) -> int:
        return UNK_ID


def _chunks(path: Path) -> Iterator[tuple[int, int, str]]:
    """Yield ``(byte offset, first line number, text)`` chunks that end at a line break."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file; check the path.") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory, not a text file.") from exc
    except OSError as exc:  # a symbolic link loop, no permission: the inputs' one check
        raise input_error(path, "text", exc) from exc
    with f:
        offset = 0
        line_no = 1
        rest = b""
        while True:
            block = f.read(_CHUNK_BYTES)
            data = rest + block
            if not block:
                if data:
                    yield offset, line_no, _decode(path, data, offset)
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            head, rest = data[: cut + 1], data[cut + 1 :]
            yield offset, line_no, _decode(path, head, offset)
            offset += len(head)
            line_no += head.count(b"\n")


def _decode(path: Path, data: bytes, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        pos = offset + exc.start
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {pos}; convert the file to UTF-8."
        ) from exc


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text ends with a line break: no extra empty sentence
    return lines


def _encode_tokens(
    tokens: list[list[str]], vocab: dict[str, int], grow: bool
) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    flat = list(chain.from_iterable(tokens))
    if grow:
        for w in dict.fromkeys(flat):  # new words in order of first appearance
            if w not in vocab:
                vocab[w] = len(vocab)
        lookup = vocab
    else:
        lookup = vocab if isinstance(vocab, _UnkLookup) else _UnkLookup(vocab)
    ids = np.fromiter(map(lookup.__getitem__, flat), dtype=np.int32, count=len(flat))
    return ids, lengths


def _check_markers(path: Path, ids: np.ndarray, lengths: np.ndarray, first_line: int) -> None:
    bad = np.flatnonzero((ids == BOS_ID) | (ids == EOS_ID))
    if bad.size:
        sentence = int(np.searchsorted(np.cumsum(lengths), bad[0], side="right"))
        raise DataError(
            f"{path}:{first_line + sentence}: the training text contains the sentence marker "
            f"{SPECIALS[int(ids[bad[0]])]!r}; remove it, rnnkit adds <s> and </s> itself."
        )


def read_training_text(path: str | os.PathLike[str]) -> tuple[dict[str, int], EncodedText]:
    """Read a training file into a new vocabulary and its encoded sentences.

    Raises :class:`DataError` for a missing or non-UTF-8 file, a file with no words, or a
    literal ``<s>`` / ``</s>`` in the text (its line number in the message).
    """
    p = Path(path)
    vocab = new_vocab()
    all_ids: list[np.ndarray] = []
    all_lengths: list[np.ndarray] = []
    for _, first_line, text in _chunks(p):
        with no_gc():
            tokens = [line.split() for line in _split_lines(text)]
            ids, lengths = _encode_tokens(tokens, vocab, grow=True)
        del tokens
        _check_markers(p, ids, lengths, first_line)
        all_ids.append(ids)
        all_lengths.append(lengths)
    enc = EncodedText(
        np.concatenate(all_ids) if all_ids else np.zeros(0, np.int32),
        np.concatenate(all_lengths) if all_lengths else np.zeros(0, np.int64),
    )
    if enc.num_words == 0:
        raise DataError(f"{p}: the training file contains no words; give a non-empty text file.")
    return vocab, enc


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file (without line breaks), for scoring."""
    p = Path(path)
    lines: list[str] = []
    for _, _, text in _chunks(p):
        lines.extend(_split_lines(text))
    return lines


def encode_sentences(
    sentences: Iterable[str | Sequence[str]], vocab: dict[str, int]
) -> EncodedText:
    """Encode sentences (strings split on whitespace, or token lists) with a fixed vocabulary.

    Unknown words become ``<unk>`` (id 0).
    """
    with no_gc():
        tokens = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        ids, lengths = _encode_tokens(tokens, vocab, grow=False)
    return EncodedText(ids, lengths)


def frame(enc: EncodedText) -> tuple[np.ndarray, np.ndarray]:
    """Add ``<s>`` before and ``</s>`` after every sentence.

    Returns ``(seq, pos)``: ``seq`` (int32) is the framed id stream, and ``pos`` (int32) the
    position of each entry within its sentence (0 for ``<s>``, 1 for the first word, ...).
    """
    framed = enc.lengths + 2
    total = int(framed.sum())
    starts = np.zeros(framed.shape[0], dtype=np.int64)
    np.cumsum(framed[:-1], out=starts[1:])
    seq = np.empty(total, dtype=np.int32)
    is_word = np.ones(total, dtype=bool)
    ends = starts + framed - 1
    is_word[starts] = False
    is_word[ends] = False
    seq[is_word] = enc.ids
    seq[starts] = BOS_ID
    seq[ends] = EOS_ID
    if total >= 2**31:
        raise DataError("the text is too long to encode (2**31 tokens or more); split it.")
    pos = np.arange(total, dtype=np.int32)
    pos -= np.repeat(starts.astype(np.int32), framed)
    return seq, pos
