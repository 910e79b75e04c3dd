"""The fast path of :func:`rnnkit.ngram.read_arpa`: an ARPA file parsed with bulk NumPy.

The file's bytes (memory-mapped, or decompressed) are cut into blocks of whole lines; each
block is tokenised at once (a lookup table marks whitespace, ``np.diff`` finds the token
edges), its numbers are parsed by a vectorised decimal parser (exact: integer mantissa
divided by a power of ten, correctly rounded as ``strtod``), and its words are hashed eight
bytes at a time and looked up in a hash table of the 1-grams. No Python object is made per
n-gram or per word, only per 1-gram.

It reads well-formed files, which is nearly all of them. On anything unusual (an error, a
blank line inside a section, a word with non-ASCII whitespace, a hash collision, ...)
:func:`parse` returns ``None`` and the caller falls back to the line-by-line reader, which
either reads the file the same way or names the file and the line that is wrong. The two
readers give identical models (tested).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnnkit.errors import DataError
from rnnkit.ngram.corpus import UNK

#: Bytes Python's ``str.split()`` treats as whitespace (the ASCII ones).
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_CONTROL = np.flatnonzero(~_WS[:33])
_WS_CLASS = rb"[ \t\r\x0b\x0c\x1c-\x1f]"
_SECTION_LINE = re.compile(rb"\\(\d+)-grams:" + _WS_CLASS + rb"*\n")
_END_LINE = re.compile(rb"\\end\\" + _WS_CLASS + rb"*(?:\n|\Z)")
#: Non-ASCII characters ``str.split()`` splits on (a 1-gram holding one: leave it to the slow path).
_UNICODE_WS = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

_BLOCK = 1 << 22  # bytes of whole lines parsed at once
_U64 = np.uint64
_M1 = _U64(0x9E3779B97F4A7C15)
_M2 = _U64(0xD6E8FEB86659FD93)
_S29 = _U64(29)
#: _LOW[m]: the low m bytes of a little-endian uint64.
_LOW = np.array([(1 << (8 * m)) - 1 for m in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


class _Unusual(Exception):
    """Something the fast path leaves to the line-by-line reader."""


def parse(path: Path, buf: Any, declared_check: Any) -> Any:
    """The model of the ARPA text in ``buf`` (bytes or mmap), or None to use the slow reader.

    ``declared_check`` is the slow reader's module (for its header parser, vocabulary and
    table assembly), passed in to keep one implementation of those.
    """
    try:
        return _parse(path, buf, declared_check)
    except (_Unusual, DataError, UnicodeDecodeError):
        return None


def _parse(path: Path, buf: Any, slow: Any) -> Any:
    a = np.frombuffer(buf, dtype=np.uint8)
    size = a.shape[0]
    first = buf.find(b"\n\\1-grams:")
    if first < 0:
        raise _Unusual
    header = slow._Lines(path, bytes(buf[: first + 1]).decode("utf-8") + "\\1-grams:")
    declared = slow._read_header(header)
    item = header.next_nonblank()
    if item is None or item[1] != "\\1-grams:" or header.next_nonblank() is not None:
        raise _Unusual
    order = len(declared)
    # unaligned little-endian uint64 at every byte offset (for hashing words)
    u64 = np.ndarray(shape=(max(size - 7, 0),), dtype="<u8", buffer=buf, offset=0, strides=(1,))
    pos = first + 1
    vocab_index: _HashIndex | None = None
    grams: list[np.ndarray] = []
    sections: list[tuple[np.ndarray, np.ndarray, int]] = []
    vocab: list[str] = []
    p1 = b1 = np.zeros(0)
    for k in range(1, order + 1):
        m = _SECTION_LINE.match(buf, pos)
        if m is None or int(m.group(1)) != k:
            raise _Unusual
        start = m.end()
        q = buf.find(b"\n\\", start - 1)
        if q < 0:
            raise _Unusual
        end = q + 1
        probs, backoffs, ids, (w_starts, w_ends) = _section(
            buf, a, u64, start, end, k, k == order, declared[k - 1], vocab_index
        )
        if k == 1:
            words = [
                bytes(buf[s:e]).decode("utf-8") for s, e in zip(w_starts.tolist(), w_ends.tolist())
            ]
            if _UNICODE_WS.search("".join(words)):
                raise _Unusual
            vocab, p1, b1 = slow._unigrams(slow._Lines(path, ""), words, probs, backoffs, 0)
            word_to_id = {w: i for i, w in enumerate(vocab)}
            uni_ids = np.fromiter(map(word_to_id.__getitem__, words), np.int64, len(words))
            vocab_index = _HashIndex(_hash_words(u64, w_starts, w_ends), uni_ids)
        else:
            grams.append(ids)
            sections.append((probs, backoffs, 0))
        pos = end
    if _END_LINE.match(buf, pos) is None:
        raise _Unusual
    if UNK not in vocab:
        raise _Unusual  # cannot happen: _unigrams puts it first
    return slow._finish(vocab, p1, b1, grams, sections, slow._Lines(path, ""))


def _section(
    buf: Any,
    a: np.ndarray,
    u64: np.ndarray,
    start: int,
    end: int,
    k: int,
    is_highest: bool,
    count: int,
    vocab_index: _HashIndex | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The ``count`` n-gram lines of order ``k`` in ``a[start:end]`` (then blank lines only):
    log10 probabilities, back-offs (0 where absent), word ids ((rows, k) int32; for k >= 2,
    through ``vocab_index``) and, for 1-grams, the words' byte offsets (starts, ends)."""
    probs = np.zeros(count, dtype=np.float32)
    backoffs = np.zeros(count, dtype=np.float32)
    ids = np.zeros((count if k > 1 else 0, k), dtype=np.int32)
    w_starts = np.zeros(count if k == 1 else 0, dtype=np.int64)
    w_ends = np.zeros_like(w_starts)
    out = _Out(probs, backoffs, ids, w_starts, w_ends)
    rows = 0
    ended = False
    s = start
    while s < end:
        e = min(s + _BLOCK, end)
        if e < end:
            cut = buf.rfind(b"\n", s, e)
            e = cut + 1 if cut >= 0 else end
        got = _block(a, u64, s, e, k, is_highest, vocab_index, out, rows)
        s = e
        if got is None:  # only blank lines
            ended = True
            continue
        if ended:
            raise _Unusual  # n-gram lines after a blank line
        n_rows, ended = got
        rows += n_rows
    if rows != count:
        raise _Unusual
    return probs, backoffs, ids, (w_starts, w_ends)


class _Out(NamedTuple):
    """A section's arrays, filled block by block."""

    probs: np.ndarray
    backoffs: np.ndarray
    ids: np.ndarray
    w_starts: np.ndarray
    w_ends: np.ndarray


def _block(
    a: np.ndarray,
    u64: np.ndarray,
    s: int,
    e: int,
    k: int,
    is_highest: bool,
    vocab_index: _HashIndex | None,
    out: _Out,
    row0: int,
) -> tuple[int, bool] | None:
    """Parse the lines ``a[s:e]`` into ``out`` from row ``row0``: (rows, whether the block
    ends with a blank line), or None for a block of blank lines only."""
    x = a[s:e]
    # whitespace: bytes <= 32 (checked to be the ones str.split() splits on)
    white = np.flatnonzero(x <= 32)
    if np.bincount(x[white], minlength=33)[_CONTROL].any():
        raise _Unusual  # a control character
    tail = 0 if white.shape[0] and white[-1] == x.shape[0] - 1 else 1
    bounds = np.empty(white.shape[0] + 1 + tail, dtype=np.intp)
    bounds[0] = -1
    bounds[1 : white.shape[0] + 1] = white
    if tail:
        bounds[-1] = x.shape[0]  # a token lies between two of these
    t_start, t_end = bounds[:-1] + 1, bounds[1:]
    del white, bounds
    if not (t_end > t_start).all():  # runs of whitespace: keep the non-empty tokens
        keep = t_end > t_start
        t_start, t_end = t_start[keep], t_end[keep]
    n_tok = t_start.shape[0]
    if n_tok == 0:
        return None
    # The usual layout: every line holds the same number of fields and ends right after
    # its last one. Otherwise count the fields of each line.
    tok = None
    for fields in (k + 1,) if is_highest else (k + 2, k + 1):
        if n_tok % fields == 0:
            n_rows = n_tok // fields
            last = t_end[fields - 1 :: fields]
            if (
                int(last[-1]) < x.shape[0]
                and (x[last] == 10).all()
                and np.count_nonzero(x[: int(last[-1]) + 1] == 10) == n_rows
            ):
                tok = np.arange(0, n_tok, fields)
                per_line = np.full(n_rows, fields)
                trailing_blank = bool(np.count_nonzero(x[int(last[-1]) + 1 :] == 10))
                break
    if tok is None:
        nl = np.flatnonzero(x == 10)
        if nl.shape[0] == 0 or nl[-1] != x.shape[0] - 1:
            nl = np.append(nl, x.shape[0])  # the last line of the file without its line break
        per_line = np.diff(np.searchsorted(t_start, nl), prepend=0)
        nonblank = per_line > 0
        n_rows = int(np.count_nonzero(nonblank))
        if not nonblank[:n_rows].all():
            raise _Unusual  # a blank line between n-gram lines
        per_line = per_line[:n_rows]
        trailing_blank = n_rows < nl.shape[0]
        tok = np.cumsum(per_line) - per_line
    if row0 + n_rows > out.probs.shape[0]:
        raise _Unusual  # more lines than the header declares
    rows = slice(row0, row0 + n_rows)
    t_start = t_start + s
    t_end = t_end + s
    if per_line[0] == k + 2 and (per_line == k + 2).all():
        nums = _floats(a, np.concatenate([tok, tok + k + 1]), t_start, t_end)
        out.probs[rows], out.backoffs[rows] = nums[:n_rows], nums[n_rows:]
    elif per_line[0] == k + 1 and (per_line == k + 1).all():
        out.probs[rows] = _floats(a, tok, t_start, t_end)
    else:
        with_bo = per_line == k + 2
        if not ((per_line == k + 1) | (with_bo & (not is_highest))).all():
            raise _Unusual  # a wrong number of fields
        out.probs[rows] = _floats(a, tok, t_start, t_end)
        out.backoffs[rows][with_bo] = _floats(a, tok[with_bo] + k + 1, t_start, t_end)
    if per_line[0] * n_rows == n_tok:  # every line alike: the words are columns 1..k
        w_start = t_start.reshape(n_rows, -1)[:, 1 : k + 1].ravel()
        w_end = t_end.reshape(n_rows, -1)[:, 1 : k + 1].ravel()
    else:
        w_tok = (tok[:, None] + np.arange(1, k + 1)).ravel()
        w_start, w_end = t_start[w_tok], t_end[w_tok]
    if vocab_index is None:
        out.w_starts[rows], out.w_ends[rows] = w_start, w_end
    else:
        found = vocab_index.get(_hash_words(u64, w_start, w_end))
        if found.shape[0] and int(found.min()) < 0:
            raise _Unusual  # a word not among the 1-grams: the slow reader names it
        out.ids[rows] = found.reshape(n_rows, k)
    return n_rows, trailing_blank


def _floats(a: np.ndarray, tok: np.ndarray, t_start: np.ndarray, t_end: np.ndarray) -> np.ndarray:
    """The decimal numbers of tokens ``tok`` as float32 (through float64, as ``float()``).

    The tokens are laid side by side, space-separated, and parsed by NumPy's C parser
    (Python's own ``PyOS_string_to_double``: correctly rounded, as ``float()``). A token it
    cannot read whole as one number (``1_0``, ``1.5x``, ``1-2``, ``nan``) sends the file to
    the slow reader.
    """
    n = tok.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    starts = t_start[tok]
    lens = t_end[tok] - starts
    width = int(lens.max()) + 1
    if int(starts.max()) + width > a.shape[0]:
        raise _Unusual  # a number among the last bytes of the file
    windows = np.lib.stride_tricks.as_strided(
        a, shape=(a.shape[0] - width + 1, width), strides=(1, 1), writeable=False
    )
    m = windows[starts]
    m[np.arange(width) >= lens[:, None]] = 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            vals = np.fromstring(m.tobytes(), dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            raise _Unusual from None
    if vals.shape[0] != n or np.isnan(vals).any():
        raise _Unusual  # a token that is not one number
    return vals.astype(np.float32)


def _hash_words(u64: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each byte string ``buf[starts:ends]`` (non-empty, no NUL byte),
    eight bytes at a time (``u64[i]``: the little-endian uint64 at byte ``i`` of ``buf``).

    Words of up to 8 bytes hash to their bytes times an odd constant: no two collide.
    """
    if starts.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    lens = ends - starts
    if int(ends.max()) > u64.shape[0]:  # reads reach byte ends - 1 + 7
        raise _Unusual  # a word among the last bytes of the file: not a well-formed file
    h = u64[starts]
    h &= _LOW[np.minimum(lens, 8)]
    h *= _M1
    long = np.flatnonzero(lens > 8)
    off = 8
    while long.shape[0]:
        hl = h[long]
        x = u64[starts[long] + off] & _LOW[np.minimum(lens[long] - off, 8)]
        hl ^= hl >> _S29
        hl ^= x
        hl *= _M2
        h[long] = hl
        off += 8
        long = long[lens[long] > off]
    return h


class _HashIndex:
    """A read-only hash table from 64-bit hashes to values (int64), vectorised lookups."""

    def __init__(self, hashes: np.ndarray, values: np.ndarray) -> None:
        n = hashes.shape[0]
        bits = max(4, int(np.ceil(np.log2(max(n, 1) * 4))))
        self.shift = _U64(64 - bits)
        order = np.argsort(hashes, kind="stable")
        h = hashes[order]
        if n > 1 and (h[1:] == h[:-1]).any():
            raise _Unusual  # two words with one hash: let the slow reader do it
        self.h = h
        self.values = values[order].astype(np.int64)
        bucket = (h >> self.shift).view(np.int64)
        self.starts = np.searchsorted(bucket, np.arange((1 << bits) + 1)).astype(np.int64)
        # the first entry of each bucket, for a one-probe hit
        first = np.minimum(self.starts[:-1], max(n - 1, 0))
        self.first_h = h[first] if n else np.zeros(1 << bits, dtype=np.uint64)
        self.first_v = np.where(
            self.starts[:-1] < self.starts[1:], self.values[first] if n else -1, -1
        )
        self.max_bucket = int(np.diff(self.starts).max()) if n else 0

    def get(self, q: np.ndarray) -> np.ndarray:
        """The value of each hash of ``q``, -1 where absent."""
        bk = (q >> self.shift).view(np.int64)
        out = np.where(self.first_h[bk] == q, self.first_v[bk], -1)
        miss = np.flatnonzero(out < 0)
        if miss.shape[0] and self.max_bucket > 1:
            pos = self.starts[bk[miss]] + 1
            stop = self.starts[bk[miss] + 1]
            rows = miss
            for _ in range(self.max_bucket - 1):
                live = pos < stop
                rows, pos, stop = rows[live], pos[live], stop[live]
                if rows.shape[0] == 0:
                    break
                hit = self.h[pos] == q[rows]
                out[rows[hit]] = self.values[pos[hit]]
                rows, pos, stop = rows[~hit], pos[~hit] + 1, stop[~hit]
        return out
