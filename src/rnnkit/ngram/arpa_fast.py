"""The fast path of :func:`rnnkit.ngram.read_arpa`: an ARPA file parsed with bulk NumPy.

The file's bytes (memory-mapped, or decompressed) are cut into blocks of whole lines; each
block is tokenised at once (``np.flatnonzero`` of its whitespace; in the usual layout every
line has the same number of fields, so the separators reshape into a table with one row per
line). Numbers are parsed by a vectorised decimal parser that reads each one as two 8-byte
words (SWAR: the digits' integer, then one division by a power of ten, which is exactly
``float()``'s correctly rounded result); the rare number it does not take (an exponent, more
than 15 digits, ...) goes to NumPy's C parser. Words are hashed eight bytes at a time and
looked up in a hash table of the 1-grams, and each block's n-gram keys are found at once
from the lower orders' sorted keys, so an order is final when its section ends. No Python
object is made per n-gram or per word, only per 1-gram, and every temporary array is the
size of a block.

It reads well-formed files, which is nearly all of them. On anything unusual (an error, a
blank line inside a section, a word with non-ASCII whitespace, a hash collision, ...)
:func:`parse` returns ``None`` and the caller falls back to the line-by-line reader, which
either reads the file the same way or names the file and the line that is wrong. The two
readers give identical models (tested). A pruned model, whose n-grams may lack their
prefix, is parsed a second time keeping every word id, for the line reader's assembly
(which adds the blank prefixes).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnnkit.errors import DataError
from rnnkit.ngram.model import NgramModel

#: Bytes Python's ``str.split()`` treats as whitespace (the ASCII ones).
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_WS_BYTES = bytes(np.flatnonzero(_WS).tolist())
_WS_CLASS = rb"[ \t\r\x0b\x0c\x1c-\x1f]"
_SECTION_LINE = re.compile(rb"\\(\d+)-grams:" + _WS_CLASS + rb"*\n")
_END_LINE = re.compile(rb"\\end\\" + _WS_CLASS + rb"*(?:\n|\Z)")
#: Non-ASCII characters ``str.split()`` splits on (a 1-gram holding one: leave it to the slow path).
_UNICODE_WS = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

_BLOCK = 1 << 21  # bytes of whole lines parsed at once (the temporaries stay in the caches)
_U64 = np.uint64
_M1 = _U64(0x9E3779B97F4A7C15)
_M2 = _U64(0xD6E8FEB86659FD93)
_S29 = _U64(29)
#: _LOW[m]: the low m bytes of a little-endian uint64.
_LOW = np.array([(1 << (8 * m)) - 1 for m in range(8)] + [(1 << 64) - 1], dtype=np.uint64)

# the SWAR number parser's constants
_ONES = _U64(0x0101010101010101)
_MASK16 = _U64(0x00FF00FF00FF00FF)
_MASK32 = _U64(0x0000FFFF0000FFFF)
_MASK64 = _U64(0x00000000FFFFFFFF)
_ZEROS = _U64(0x3030303030303030)  # '0' in each byte
#: _IN_LO[m], _IN_HI[m]: 0x01 in each of the first m of 16 bytes (low word, high word).
_IN = np.tril(np.ones((17, 16), dtype=np.uint8), -1)
_IN_LO = _IN[:, :8].copy().view(np.uint64).ravel()
_IN_HI = _IN[:, 8:].copy().view(np.uint64).ravel()
_POW10 = np.array([10**j for j in range(17)], dtype=np.uint64)
_POW10F = np.array([10.0**j for j in range(17)])  # exact doubles (10^j, j <= 22)
_NONE = np.zeros(0, dtype=np.int64)


class _Unusual(Exception):
    """Something the fast path leaves to the line-by-line reader."""


def parse(path: Path, buf: Any, declared_check: Any) -> Any:
    """The model of the ARPA text in ``buf`` (bytes or mmap), or None to use the slow reader.

    ``declared_check`` is the slow reader's module (for its header parser, vocabulary and
    table assembly), passed in to keep one implementation of those.
    """
    # Freeing one large mapped block raises glibc's mmap threshold (mallopt(3)), so the
    # blocks' temporaries are then reused from the heap instead of each being mapped,
    # zeroed by the kernel and unmapped again (a quarter of the time, measured here).
    np.empty(30 << 20, dtype=np.uint8)  # freed at once
    try:
        try:
            return _parse(path, buf, declared_check, blanks=False)
        except _MissingPrefix:  # a pruned model: keep every word id for the blank entries
            return _parse(path, buf, declared_check, blanks=True)
    except (_Unusual, DataError, UnicodeDecodeError):
        return None


class _Views(NamedTuple):
    """The file's bytes seen three ways, each element starting at every byte offset."""

    a: np.ndarray  # uint8
    u64: np.ndarray  # the little-endian uint64 at each offset (hashing words)
    v16: np.ndarray  # the 16 bytes at each offset (parsing numbers), as complex128 (below)

    def at(self, s: int) -> _Views:
        """The views from byte ``s`` on (free: no copy)."""
        return _Views(self.a[s:], self.u64[s:], self.v16[s:])


def _parse(path: Path, buf: Any, slow: Any, blanks: bool) -> Any:
    """:func:`parse`. Each order's keys are found block by block from the lower orders'
    (complete by then); with ``blanks``, the word ids of every order are kept instead and
    the slow reader's assembly adds the blank prefixes a pruned model lacks."""
    size = len(buf)
    first = buf.find(b"\n\\1-grams:")
    if first < 0 or size < 16:
        raise _Unusual
    header = slow._Lines(path, bytes(buf[: first + 1]).decode("utf-8") + "\\1-grams:")
    declared = slow._read_header(header)
    item = header.next_nonblank()
    if item is None or item[1] != "\\1-grams:" or header.next_nonblank() is not None:
        raise _Unusual
    order = len(declared)
    views = _Views(
        np.frombuffer(buf, dtype=np.uint8),
        np.ndarray(shape=(size - 7,), dtype="<u8", buffer=buf, strides=(1,)),
        # 16-byte items gathered as complex128: NumPy copies those with two moves (the bits
        # unchanged), "V16" item by item with memmove (slower)
        np.ndarray(shape=(size - 15,), dtype=np.complex128, buffer=buf, strides=(1,)),
    )
    pos = first + 1
    vocab: list[str] = []
    index: _HashIndex | None = None
    keys: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    backoffs: list[np.ndarray] = []
    grams: list[np.ndarray] = []  # with blanks
    for k in range(1, order + 1):
        m = _SECTION_LINE.match(buf, pos)
        if m is None or int(m.group(1)) != k or declared[k - 1] == 0:
            raise _Unusual
        start = m.end()
        end, pos = _section_end(buf, start)
        sec = _Section(k, k == order, declared[k - 1], index, None if blanks else keys, slow)
        sec.read(buf, views, start, end)
        if k == 1:
            w_starts, w_lens = sec.out
            words = [
                bytes(buf[s : s + n]).decode("utf-8")
                for s, n in zip(w_starts.tolist(), w_lens.tolist())
            ]
            if _UNICODE_WS.search("".join(words)):
                raise _Unusual
            lines = slow._Lines(path, "")
            vocab, p1, b1, uni_ids = slow._unigrams(lines, words, sec.probs, sec.bos, 0)
            index = _HashIndex(_hash_words(views.u64, w_starts, w_lens), uni_ids)
            keys.append(np.arange(len(vocab), dtype=np.uint64))
            probs.append(p1.astype(np.float32))
            backoffs.append(b1.astype(np.float32))
        elif blanks:
            grams.append(sec.out)
            probs.append(sec.probs)
            backoffs.append(sec.bos)
        else:
            key, p, bo = sec.out, sec.probs, sec.bos
            if key.shape[0] > 1 and not (key[1:] > key[:-1]).all():  # not in key order
                sort = np.argsort(key, kind="stable")
                key = key[sort]
                if (key[1:] == key[:-1]).any():
                    raise _Unusual  # an n-gram twice: the slow reader names the line
                p, bo = p[sort], bo[sort]
            keys.append(key)
            probs.append(p)
            backoffs.append(bo)
    if _END_LINE.match(buf, pos) is None:
        raise _Unusual
    bytes(buf[pos:]).decode("utf-8")  # as the line reader, which decodes the whole file
    if blanks:
        sections = [(p, bo, 0) for p, bo in zip(probs[1:], backoffs[1:])]
        return slow._finish(vocab, probs[0], backoffs[0], grams, sections, slow._Lines(path, ""))
    backoffs[-1] = np.zeros_like(backoffs[-1])  # as _finish: none at the highest order
    return NgramModel(vocab, keys, probs, backoffs)


class _MissingPrefix(Exception):
    """An n-gram whose prefix is not among the lower order's n-grams (a pruned model)."""


def _section_end(buf: Any, start: int) -> tuple[int, int]:
    """(the end of the last non-blank line, the start of the next header line) of the section
    whose lines begin at ``start``."""
    q = start - 1
    while True:  # the next line that starts with a backslash (memchr, not a 2-byte search)
        q = buf.find(b"\\", q + 1)
        if q < 0:
            raise _Unusual
        if buf[q - 1] == 10:
            break
    # blank lines between the last n-gram line and the next header
    tail = bytes(buf[max(start, q - 64) : q])
    kept = tail.rstrip(_WS_BYTES)
    if not kept:
        raise _Unusual  # an empty section, or a long run of blank lines
    last = q - len(tail) + len(kept)  # just past the last non-blank byte
    return buf.find(b"\n", last) + 1, q


class _Section:
    """The ``count`` n-gram lines of order ``k``, parsed block by block into ``probs``,
    ``bos`` (back-offs, 0 where absent; float32) and ``out``: for 1-grams the words' byte
    offsets and lengths; for k >= 2 the keys (uint64, in file order) looked up in
    ``keys`` (the lower orders' sorted keys), or with ``keys`` None the word ids as
    columns ((k, count) int32)."""

    def __init__(
        self,
        k: int,
        is_highest: bool,
        count: int,
        index: _HashIndex | None,
        keys: list[np.ndarray] | None,
        slow: Any,
    ) -> None:
        self.k, self.is_highest, self.count = k, is_highest, count
        self.index, self.keys, self.ids_of = index, keys, slow._ids_of
        self.v = np.uint64(keys[0].shape[0] if keys else 0)  # the vocabulary's size
        self.probs = np.zeros(count, dtype=np.float32)
        self.bos = np.zeros(count, dtype=np.float32)
        self.out: Any
        if k == 1:
            self.out = (np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64))
        elif keys is not None:
            self.out = np.zeros(count, dtype=np.uint64)
        else:
            self.out = np.zeros((k, count), dtype=np.int32)

    def read(self, buf: Any, views: _Views, start: int, end: int) -> None:
        """Parse the lines ``buf[start:end]``, in blocks of whole lines."""
        rows = 0
        s = start
        while s < end:
            e = min(s + _BLOCK, end)
            if e < end:
                cut = buf.rfind(b"\n", s, e)
                e = cut + 1 if cut >= 0 else end
            rows = self._block(views.at(s), e - s, rows, s)
            s = e
        if rows != self.count:
            raise _Unusual

    def _block(self, v: _Views, size: int, rows: int, s: int) -> int:
        k = self.k
        f = _fields(v.a[:size], k, self.is_highest)
        n = f.words.shape[0]
        if rows + n > self.count:
            raise _Unusual  # more lines than the header declares
        out = slice(rows, rows + n)
        nums = _floats(v, f.nums[0], f.nums[1])
        self.probs[out] = nums[:n]
        if f.bo_rows is None:
            self.bos[out] = nums[n:]
        elif f.bo_rows.shape[0]:
            self.bos[rows + f.bo_rows] = nums[n:]
        if self.index is None:
            self.out[0][out] = f.words[:, 0] + s
            self.out[1][out] = f.lens[:, 0]
            return rows + n
        # a word not among the 1-grams: _Unusual (the slow reader names it)
        cols = self.index.get(_hash_words(v.u64, f.words.ravel(), f.lens.ravel())).reshape(n, k).T
        if self.keys is None:
            self.out[:, out] = cols
            return rows + n
        prefix = self.ids_of(self.keys, cols[: k - 1], self.v)
        if prefix is None:
            raise _MissingPrefix
        key = self.out[out]
        np.multiply(prefix.view(np.uint64), self.v, out=key)
        key += cols[k - 1].view(np.uint64)
        return rows + n


class _Fields(NamedTuple):
    """The byte offsets of the fields of a block's lines: ``nums`` (starts, ends) of the
    probabilities, then of the back-offs (of the lines ``bo_rows``, or of all if None);
    ``words`` and ``lens`` (rows, k): each word's start and length."""

    nums: tuple[np.ndarray, np.ndarray]
    bo_rows: np.ndarray | None
    words: np.ndarray
    lens: np.ndarray


def _fields(x: np.ndarray, k: int, is_highest: bool) -> _Fields:
    """The fields of the n-gram lines ``x`` (whole lines, the last ends with a line break,
    none is blank); offsets from the start of ``x``."""
    white = np.flatnonzero(x <= 32)
    xw = x[white]
    newline = xw == 10
    other = xw != 32
    other &= xw != 9
    other &= ~newline
    if other.any() and not _WS[xw].all():
        raise _Unusual  # a control character
    n_rows = int(np.count_nonzero(newline))
    # The usual layout: fields separated by one whitespace byte each, the same number of
    # fields on every line; the separators then form a table, one row per line.
    for fields in (k + 1,) if is_highest else (k + 2, k + 1):
        if (
            white.shape[0] == n_rows * fields
            and newline[fields - 1 :: fields].all()
            and white[0] > 0
            and int(np.diff(white).min(initial=2)) > 1
        ):
            sep = white.reshape(n_rows, fields)
            words = sep[:, :k] + 1
            lens = sep[:, 1 : k + 1] - words
            n_nums = 2 * n_rows if fields == k + 2 else n_rows
            starts = np.empty(n_nums, dtype=np.int64)
            stops = np.empty(n_nums, dtype=np.int64)
            starts[0] = 0
            starts[1:n_rows] = sep[:-1, -1] + 1
            stops[:n_rows] = sep[:, 0]
            if fields == k + 2:
                starts[n_rows:] = sep[:, k] + 1
                stops[n_rows:] = sep[:, k + 1]
            return _Fields((starts, stops), None if fields == k + 2 else _NONE, words, lens)
    return _ragged(white, newline, k, is_highest)


def _ragged(white: np.ndarray, newline: np.ndarray, k: int, is_highest: bool) -> _Fields:
    """:func:`_fields` for other layouts: runs of whitespace (``\\r\\n``, several spaces),
    back-offs on some lines only."""
    bounds = np.empty(white.shape[0] + 1, dtype=np.int64)
    bounds[0] = -1
    bounds[1:] = white
    t_start, t_end = bounds[:-1] + 1, bounds[1:]
    keep = t_end > t_start  # the non-empty tokens
    ends_at = np.cumsum(keep)[newline]  # tokens up to each line's end
    per_line = np.diff(ends_at, prepend=0)
    if not (per_line > 0).all():
        raise _Unusual  # a blank line between n-gram lines
    t_start, t_end = t_start[keep], t_end[keep]
    tok = ends_at - per_line  # each line's first token
    with_bo = per_line == k + 2
    if not ((per_line == k + 1) | (with_bo & (not is_highest))).all():
        raise _Unusual  # a wrong number of fields
    w_tok = tok[:, None] + np.arange(1, k + 1)
    b_rows = np.flatnonzero(with_bo)
    n_tok = np.concatenate([tok, tok[b_rows] + k + 1])
    words = t_start[w_tok]
    return _Fields(
        (t_start[n_tok], t_end[n_tok]),
        None if b_rows.shape[0] == per_line.shape[0] else b_rows,
        words,
        t_end[w_tok] - words,
    )


def _floats(v: _Views, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The decimal numbers ``v.a[starts:ends]`` as float64, exactly as ``float()`` reads them.

    Nearly every number of an ARPA file is a log10 written ``-D.DDDDDDDD``, up to 16 bytes.
    These are read here, all alike: the 16 bytes from the sign as two little-endian words,
    the digit D moved onto the point and the sign zeroed, the 16 digits' integer found eight
    bytes at a time (see :func:`_swar8`), then divided by 10^13: the integer and 10^13 are
    exact doubles, so the one division is correctly rounded, as ``float()`` is. The others
    go to :func:`_floats_any`.
    """
    n = starts.shape[0]
    if n == 0 or v.v16.shape[0] == 0:
        return _floats_any(v, starts, ends)
    length = ends - starts
    usual = (length - 4).view(np.uint64) <= _U64(12)  # 4 to 16 bytes: 1 to 13 decimals
    at = starts
    if int(starts.max()) >= v.v16.shape[0]:  # among the file's last 15 bytes
        usual &= starts < v.v16.shape[0]
        at = np.minimum(starts, v.v16.shape[0] - 1)
    w = v.v16[at].view(np.uint64).reshape(n, 2)
    c = w.view(np.uint8)  # (n, 16): the bytes from each number's start
    usual &= c[:, 0] == 45  # '-'
    usual &= c[:, 2] == 46  # '.'
    digit = c - np.uint8(48)
    gv = (digit < 10).view(np.uint64)  # 0x01 bytes: the digits
    inside = np.where(usual, length, 0)
    in_lo, in_hi = _IN_LO[inside], _IN_HI[inside]
    g_lo = gv[:, 0] & in_lo
    g_hi = gv[:, 1] & in_hi
    usual &= (in_lo ^ g_lo) == _U64(0x010001)  # all digits but the sign and the point
    usual &= in_hi == g_hi
    x_lo = w[:, 0] ^ _ZEROS  # digits to 0-9 (xor: no borrow between bytes)
    x_lo &= g_lo * _U64(255)
    x_hi = w[:, 1] ^ _ZEROS
    x_hi &= g_hi * _U64(255)
    lead = x_lo & _U64(0xFF00)  # D onto the point: 0 0 D D D ..., 0 past the end
    x_lo ^= lead
    x_lo |= lead << _U64(8)
    # byte j weighs 10^(15 - j): the 16 digits' integer is M * 10^(16 - L) (< 10^14), and
    # M / 10^(L - 3) is that over 10^13
    mant = _swar8(x_lo)
    mant *= _U64(10**8)
    mant += _swar8(x_hi)
    vals = mant.astype(np.float64)
    vals /= -1e13
    if not usual.all():
        rows = np.flatnonzero(~usual)
        vals[rows] = _floats_any(v, starts[rows], ends[rows])
    return vals


def _join(x_lo: np.ndarray, x_hi: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The integer (as float64, exact) of ``length`` (0 to 16) decimal digits, one per byte
    (values 0-9), the first in the lowest byte of ``x_lo``, then on into ``x_hi``; below
    2^53 (15 digits). ``x_lo`` and ``x_hi`` are overwritten."""
    len_lo = np.minimum(length, 8).view(np.uint64)
    len_hi = length.view(np.uint64) - len_lo
    # each word's digits moved to its top (leading zeros below: a shift by 64 gives 0)
    x_lo <<= _U64(64) - (len_lo << _U64(3))
    x_hi <<= _U64(64) - (len_hi << _U64(3))
    mant = _swar8(x_lo)
    mant *= _POW10[len_hi]
    mant += _swar8(x_hi)
    return mant.astype(np.float64)


def _floats_any(v: _Views, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The decimal numbers ``v.a[starts:ends]`` as float64, exactly as ``float()`` reads them.

    A number ``[-]digits[.digits]`` of up to 16 bytes and 15 digits is read as two
    little-endian 8-byte words: the sign and the point are zeroed, the bytes before the
    point move up one place (so the digits are contiguous, after a leading 0), the digits'
    integer M is found eight bytes at a time (SWAR: pairs, quads, octets combined by
    multiplication), and the value is M / 10^f for f digits after the point. M < 2^53 and
    10^f are exact doubles, so the one division is correctly rounded, as ``float()`` is.
    Anything else (an exponent, ``inf``, more digits, a number among the last bytes of the
    file, a token that is no number) goes to :func:`_floats_c`.
    """
    n = starts.shape[0]
    if n == 0:
        return np.zeros(0)
    length = ends - starts
    odd = (length - 1).view(np.uint64) > _U64(15)  # not 1 to 16 bytes
    if int(starts.max()) >= v.v16.shape[0]:
        odd |= starts >= v.v16.shape[0]  # among the file's last 15 bytes
    if odd.any():
        if odd.all():
            return _floats_c(v.a, starts, ends)
        # the others; the odd ones stand in for a good one meanwhile
        good = int(np.argmin(odd))
        vals = _floats_any(v, np.where(odd, starts[good], starts), np.where(odd, ends[good], ends))
        rows = np.flatnonzero(odd)
        vals[rows] = _floats_c(v.a, starts[rows], ends[rows])
        return vals
    w = v.v16[starts].view(np.uint64).reshape(n, 2)
    c = w.view(np.uint8)  # (n, 16): the bytes from each number's start
    neg = c[:, 0] == 45  # '-'
    gv = ((c - np.uint8(48)) < 10).view(np.uint64)
    dv = (c == 46).view(np.uint64)  # '.'
    # per number, the 16 byte flags as two words (0x01 bytes), inside the token only
    in_lo, in_hi = _IN_LO[length], _IN_HI[length]
    g_lo, g_hi = gv[:, 0] & in_lo, gv[:, 1] & in_hi
    d_lo, d_hi = dv[:, 0] & in_lo, dv[:, 1] & in_hi
    sign = neg.astype(np.uint64)  # byte 0
    bad = (g_lo | d_lo | sign) ^ in_lo
    bad |= (g_hi | d_hi) ^ in_hi
    n_dots = _bytesum(d_lo + d_hi)
    n_digits = length.view(np.uint64) - n_dots - sign
    odd |= bad != 0
    odd |= n_dots > 1
    odd |= (n_digits - _U64(1)) > _U64(14)  # not 1 to 15 digits
    # the bytes before the point (the point is a lone 0x01 byte d: d - 1 has them 0xFF)
    below_lo = (d_lo - _U64(1)) * n_dots  # all 8 when the point is in the high word
    below_hi = (d_hi - _U64(1)) * (d_hi != 0)
    point = _bytesum((below_lo & _ONES) + (below_hi & _ONES))
    frac = (length.view(np.uint64) - _U64(1) - point) * n_dots
    # the digits' values (sign, point and what lies past the token: 0)
    x_lo = w[:, 0] ^ _ZEROS  # digits to 0-9 (xor: no borrow between bytes)
    x_lo &= g_lo * _U64(255)
    x_hi = w[:, 1] ^ _ZEROS
    x_hi &= g_hi * _U64(255)
    # squeeze the point out
    move_lo, move_hi = x_lo & below_lo, x_hi & below_hi
    x_lo ^= move_lo
    x_lo |= move_lo << _U64(8)
    x_hi ^= move_hi
    x_hi |= move_hi << _U64(8)
    x_hi |= move_lo >> _U64(56)
    vals = _join(x_lo, x_hi, length)
    vals /= _POW10F[frac]
    np.negative(vals, out=vals, where=neg)
    if odd.any():
        rows = np.flatnonzero(odd)
        vals[rows] = _floats_c(v.a, starts[rows], ends[rows])
    return vals


def _bytesum(x: np.ndarray) -> np.ndarray:
    """The sum of the eight bytes of each uint64 (when below 256)."""
    x = x * _ONES
    x >>= _U64(56)
    return x


def _swar8(x: np.ndarray) -> np.ndarray:
    """The integer of eight decimal digits, one per byte (values 0-9, the first digit in the
    lowest byte), for each uint64 of ``x``."""
    x = x * _U64(10) + (x >> _U64(8))
    x &= _MASK16
    x = x * _U64(100) + (x >> _U64(16))
    x &= _MASK32
    x = x * _U64(10000) + (x >> _U64(32))
    x &= _MASK64
    return x


def _floats_c(a: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The decimal numbers ``a[starts:ends]`` as float64, laid side by side, space-separated,
    and parsed by NumPy's C parser (Python's own ``PyOS_string_to_double``: correctly
    rounded, as ``float()``). A token it cannot read whole as one number (``1_0``, ``1.5x``,
    ``1-2``, ``nan``) sends the file to the slow reader.
    """
    n = starts.shape[0]
    lens = ends - starts
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
    return vals


def _hash_words(u64: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each byte string ``buf[starts:starts + lens]`` (non-empty, no NUL
    byte), eight bytes at a time (``u64[i]``: the little-endian uint64 at byte ``i``).

    Words of up to 8 bytes hash to their bytes times an odd constant: no two collide.
    """
    if starts.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    if int((starts + lens).max()) > u64.shape[0]:  # reads reach byte start + len - 1 + 7
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
        by_hash = np.sort(hashes)
        if n > 1 and (by_hash[1:] == by_hash[:-1]).any():
            raise _Unusual  # two words with one hash: let the slow reader do it
        # by bucket, and in a bucket the smallest value (the word seen first: most often
        # the commonest) first, where one probe finds it
        order = np.lexsort((values, hashes >> self.shift))
        h = hashes[order]
        self.h = h
        self.values = values[order].astype(np.int64)
        bucket = (h >> self.shift).view(np.int64)
        self.starts = np.searchsorted(bucket, np.arange((1 << bits) + 1)).astype(np.int64)
        # each bucket's first entry, hash and value side by side (one memory access a lookup)
        first = np.minimum(self.starts[:-1], max(n - 1, 0))
        table = np.zeros((1 << bits, 2), dtype=np.uint64)
        table[:, 1] = _U64(2**64 - 1)  # -1: empty
        if n:
            filled = self.starts[:-1] < self.starts[1:]
            table[:, 0] = h[first]
            table[filled, 1] = self.values[first[filled]].view(np.uint64)
        self.first = table.view(np.complex128).ravel()  # 16-byte items: see _parse

    def get(self, q: np.ndarray) -> np.ndarray:
        """The value of each hash of ``q``; :class:`_Unusual` if one is absent."""
        bk = (q >> self.shift).view(np.int64)
        pair = self.first[bk].view(np.uint64).reshape(-1, 2)
        hit = pair[:, 0] == q
        out = pair[:, 1].view(np.int64).copy()
        rows = np.flatnonzero(~hit)
        if rows.shape[0]:
            pos = self.starts[bk[rows]] + 1
            stop = self.starts[bk[rows] + 1]
            while rows.shape[0]:
                if not (pos < stop).all():
                    raise _Unusual  # not in the table
                found = self.h[pos] == q[rows]
                out[rows[found]] = self.values[pos[found]]
                rows, pos, stop = rows[~found], pos[~found] + 1, stop[~found]
        return out
