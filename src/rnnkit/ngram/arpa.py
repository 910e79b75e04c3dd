"""ARPA back-off files: write and read, plain or gzip.

The writer follows ``lmplz``'s layout: a ``\\data\\`` header with the count of each order, then
one section per order, each line ``log10 p <TAB> w_1 .. w_k [<TAB> log10 backoff]`` (no
back-off on the highest order), then ``\\end\\``. Unigrams come in vocabulary order (``<unk>``,
``<s>``, ``</s>``, then words by first appearance); higher orders in the order of their keys.
Numbers are written with 9 significant digits, which round-trips float32 exactly.

The reader accepts any ARPA file (comments before ``\\data\\``, spaces or tabs between fields,
missing back-offs, n-grams whose prefix is missing). Anything malformed raises
:class:`~rnnkit.errors.DataError` naming the file and the line.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import mmap
import os
import re
import sys
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from rnnkit.errors import DataError
from rnnkit.ngram.corpus import BOS, EOS, SPECIALS, UNK, no_gc
from rnnkit.ngram.model import NgramModel
from rnnkit.utils import atomic_write

#: log10 probability KenLM gives ``<unk>`` when an ARPA file lacks it.
UNKNOWN_MISSING_LOG10 = -100.0

_GZIP_MAGIC = b"\x1f\x8b"
_NGRAM_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


# ------------------------------------------------------------------------------- writing
def _fmt(values: np.ndarray) -> list[str]:
    out = list(map("%.9g".__mod__, values.astype(np.float64).tolist()))
    return ["0" if s == "-0" else s for s in out] if "-0" in out else out


def arpa_lines(model: NgramModel) -> Iterator[str]:
    """The ARPA text of a model, in chunks (each ends with a newline)."""
    order = model.order
    v = np.uint64(model.vocab_size)
    counts = [int(k.shape[0]) for k in model.keys]
    yield "\\data\\\n" + "".join(f"ngram {k}={c}\n" for k, c in enumerate(counts, 1)) + "\n"
    words = np.array(model.vocab, dtype=object)
    spaced = np.array([" " + w for w in model.vocab], dtype=object)
    prev_texts = words
    step = 1 << 16
    for k in range(1, order + 1):
        keys = model.keys[k - 1]
        yield f"\\{k}-grams:\n"
        # the texts of this order are kept only while the next order needs them as prefixes
        texts = np.empty(keys.shape[0] if 1 < k < order else 0, dtype=object)
        for s in range(0, keys.shape[0], step):
            e = min(s + step, keys.shape[0])
            if k == 1:
                chunk_texts = words[s:e]
            else:
                chunk = keys[s:e]
                chunk_texts = (
                    prev_texts[(chunk // v).astype(np.int64)] + spaced[(chunk % v).astype(np.int64)]
                )
                if k < order:
                    texts[s:e] = chunk_texts
            probs = _fmt(model.log10_prob[k - 1][s:e])
            tl = chunk_texts.tolist()
            if k < order:
                bos = _fmt(model.log10_backoff[k - 1][s:e])
                yield "".join(map("{}\t{}\t{}\n".format, probs, tl, bos))
            else:
                yield "".join(map("{}\t{}\n".format, probs, tl))
        yield "\n"
        prev_texts = words if k == 1 else texts
    yield "\\end\\\n"


def write_arpa(model: NgramModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as an ARPA file; gzip-compressed when ``path`` ends with ``.gz``.

    The file is written to a temporary name in the same folder and renamed over ``path``.
    """
    if any(np.isnan(p).any() for p in model.log10_prob):
        raise ValueError("the model has blank n-grams (read from an ARPA file missing prefixes)")
    p = Path(path)

    def write(raw: IO[bytes]) -> None:
        with no_gc():
            if p.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
                    for chunk in arpa_lines(model):
                        gz.write(chunk.encode("utf-8"))
            else:
                for chunk in arpa_lines(model):
                    raw.write(chunk.encode("utf-8"))

    atomic_write(p, write)


# ------------------------------------------------------------------------------- reading
def _read_bytes(path: Path) -> Any:
    """The file's bytes: a read-only memory map for a plain file, decompressed for gzip."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such ARPA file; check the path.") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory, not an ARPA file.") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}).") from exc
    with f:
        head = f.read(2)
        if head == _GZIP_MAGIC:
            f.seek(0)
            try:
                return gzip.decompress(f.read())
            except (OSError, EOFError) as exc:
                raise DataError(f"{path}: is not a valid gzip file ({exc}).") from exc
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or a file that cannot be mapped
            f.seek(0)
            return f.read()


def _decode(path: Path, data: Any) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {exc.start} (of the uncompressed text)."
        ) from exc


class _Lines:
    """Lines of an ARPA file with 1-based numbers, skipping blank lines where asked."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.split("\n")
        self.i = 0

    def error(self, line_no: int, msg: str) -> DataError:
        return DataError(f"{self.path}:{line_no}: {msg}")

    def next_nonblank(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            line = self.lines[self.i].strip()
            self.i += 1
            if line:
                return self.i, line
        return None


def _parse_section(
    lines: _Lines, k: int, count: int, is_highest: bool
) -> tuple[list[list[str]], np.ndarray, np.ndarray, int]:
    """Parse ``count`` n-gram lines of order ``k``: (rows of fields, log10 probabilities,
    log10 back-offs (0 where absent), line number of the first row)."""
    start = lines.i
    body = lines.lines[start : start + count]
    if len(body) < count:
        raise lines.error(
            len(lines.lines), f"the file ends inside the {k}-grams section; it is truncated."
        )
    lines.i = start + count
    rows = [ln.split() for ln in body]
    del body
    lengths = set(map(len, rows))
    if not lengths <= {k + 1, k + 2} or (is_highest and k + 2 in lengths):
        for j, r in enumerate(rows):
            if not r or r[0].startswith("\\"):
                raise lines.error(
                    start + j + 1,
                    f"the {k}-grams section ends after {j} lines but the header declares "
                    f"{count}; fix the count in \\data\\ or add the missing lines.",
                )
            if len(r) not in (k + 1, k + 2) or (is_highest and len(r) == k + 2):
                want = f"{k + 1}" if is_highest else f"{k + 1} or {k + 2}"
                raise lines.error(
                    start + j + 1,
                    f"a {k}-gram line needs {want} fields (log10 probability, {k} words"
                    f"{'' if is_highest else ', optional back-off'}), found {len(r)}.",
                )
    probs = _floats(lines, start, [r[0] for r in rows], "probability")
    if lengths == {k + 2}:
        backoffs = _floats(lines, start, [r[-1] for r in rows], "back-off")
    else:
        backoffs = np.zeros(count, dtype=np.float64)
        with_bo = [j for j, r in enumerate(rows) if len(r) == k + 2]
        if with_bo:
            backoffs[with_bo] = _floats(
                lines, start, [rows[j][-1] for j in with_bo], "back-off", with_bo
            )
    return rows, probs, backoffs, start + 1


def _floats(
    lines: _Lines, start: int, texts: list[str], what: str, index: list[int] | None = None
) -> np.ndarray:
    try:
        vals = np.array(texts, dtype=np.float64)
    except ValueError:
        vals = None
    if vals is not None and not np.isnan(vals).any():
        return vals
    for j, t in enumerate(texts):
        try:
            ok = not math.isnan(float(t))
        except ValueError:
            ok = False
        if not ok:
            line_no = start + (index[j] if index is not None else j) + 1
            raise lines.error(line_no, f"the log10 {what} {t!r} is not a number.")
    raise AssertionError("unreachable")  # pragma: no cover


def read_arpa(path: str | os.PathLike[str], *, fast: bool = True) -> NgramModel:
    """Read an ARPA file (plain or gzip, detected from its first bytes) into a model.

    A missing ``<unk>`` is added with log10 probability -100 (KenLM's default); a missing
    ``<s>`` or ``</s>`` is an error. The file is parsed in bulk with NumPy
    (:mod:`rnnkit.ngram.arpa_fast`); a file that path cannot read (an error, or an unusual
    layout) is read line by line, which names the line at fault. ``fast=False`` always reads
    line by line (the reference the fast path is tested against).
    """
    from rnnkit.ngram import arpa_fast

    p = Path(path)
    data = _read_bytes(p)
    try:
        if fast and len(data):
            with no_gc():
                model = arpa_fast.parse(p, data, sys.modules[__name__])
            if model is not None:
                return cast(NgramModel, model)
        with no_gc():
            return _read(_Lines(p, _decode(p, data)))
    finally:
        if isinstance(data, mmap.mmap):
            with contextlib.suppress(BufferError):  # a view still alive: the GC closes it
                data.close()


def _read_header(lines: _Lines) -> list[int]:
    p = lines.path
    first = lines.next_nonblank()
    while first is not None and first[1] != "\\data\\":
        if not first[1].startswith("#"):
            raise lines.error(
                first[0], "expected the ARPA header '\\data\\'; this is not an ARPA file."
            )
        first = lines.next_nonblank()
    if first is None:
        raise DataError(f"{p}: no '\\data\\' header; this is not an ARPA file.")
    declared: list[int] = []
    line_no, line = first
    while True:
        item = lines.next_nonblank()
        if item is None:
            raise DataError(f"{p}: the file ends inside the \\data\\ header; it is truncated.")
        line_no, line = item
        m = _NGRAM_COUNT.match(line)
        if not m:
            lines.i -= 1
            break
        k, c = int(m.group(1)), int(m.group(2))
        if k != len(declared) + 1:
            raise lines.error(
                line_no, f"expected 'ngram {len(declared) + 1}=COUNT', found {line!r}."
            )
        declared.append(c)
    if not declared:
        raise lines.error(line_no, f"expected 'ngram 1=COUNT' after \\data\\, found {line!r}.")
    if declared[0] == 0:
        raise lines.error(line_no, "the header declares no 1-grams; a model needs <s> and </s>.")
    return declared


def _section_header(lines: _Lines, k: int) -> None:
    item = lines.next_nonblank()
    if item is None:
        raise DataError(
            f"{lines.path}: the file ends before the \\{k}-grams: section; it is truncated."
        )
    line_no, line = item
    m = _SECTION.match(line)
    if not m or int(m.group(1)) != k:
        raise lines.error(line_no, f"expected '\\{k}-grams:', found {line[:60]!r}.")


def _read(lines: _Lines) -> NgramModel:
    declared = _read_header(lines)
    order = len(declared)

    _section_header(lines, 1)
    rows, uni_p, uni_b, first = _parse_section(lines, 1, declared[0], order == 1)
    vocab, p1, b1, _ = _unigrams(lines, [r[1] for r in rows], uni_p, uni_b, first)
    word_to_id = {w: i for i, w in enumerate(vocab)}
    del rows

    grams: list[np.ndarray] = []  # grams[k-2]: word ids of the order-k n-grams, (k, n) int32
    sections: list[tuple[np.ndarray, np.ndarray, int]] = []
    for k in range(2, order + 1):
        _section_header(lines, k)
        rows, pk, bk, first = _parse_section(lines, k, declared[k - 1], k == order)
        flat = list(chain.from_iterable(r[1 : k + 1] for r in rows))
        try:
            ids = np.fromiter(map(word_to_id.__getitem__, flat), dtype=np.int64, count=len(flat))
        except KeyError:
            for j, r in enumerate(rows):
                for w in r[1 : k + 1]:
                    if w not in word_to_id:
                        raise lines.error(
                            first + j, f"the word {w!r} of this {k}-gram is not among the 1-grams."
                        ) from None
            raise
        del rows, flat
        grams.append(np.ascontiguousarray(ids.reshape(-1, k).T, dtype=np.int32))
        sections.append((pk, bk, first))

    item = lines.next_nonblank()
    if item is None:
        raise DataError(f"{lines.path}: missing the closing '\\end\\' line; the file is truncated.")
    if item[1] != "\\end\\":
        line_no, line = item
        if not line.startswith("\\"):
            raise lines.error(
                line_no,
                f"more {order}-grams than the {declared[-1]} the header declares: {line[:60]!r}.",
            )
        raise lines.error(line_no, f"expected '\\end\\', found {line[:60]!r}.")

    return _finish(vocab, p1, b1, grams, sections, lines)


def _finish(
    vocab: list[str],
    p1: np.ndarray,
    b1: np.ndarray,
    grams: list[np.ndarray],
    sections: list[tuple[np.ndarray, np.ndarray, int]],
    lines: _Lines,
) -> NgramModel:
    """The model from the 1-grams and the higher orders' word ids (``grams[k-2]``: (k, n)
    int32, one row per word position), probabilities and back-offs (in file order)."""
    v = np.uint64(len(vocab))
    higher = _assemble(v, grams, sections, lines, blanks=False)
    if higher is None:  # some prefix is missing (pruned models): add blank entries
        higher = _assemble(v, grams, sections, lines, blanks=True)
        assert higher is not None
    keys = [np.arange(len(vocab), dtype=np.uint64)] + [h[0] for h in higher]
    probs = [p1] + [h[1] for h in higher]
    backoffs = [b1] + [h[2] for h in higher]
    backoffs[-1] = np.zeros_like(backoffs[-1])
    return NgramModel(
        vocab,
        keys,
        [x.astype(np.float32, copy=False) for x in probs],
        [x.astype(np.float32, copy=False) for x in backoffs],
    )


def _unigrams(
    lines: _Lines, words: list[str], probs: np.ndarray, backoffs: np.ndarray, first: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The vocabulary (``<unk>``, ``<s>``, ``</s>``, then file order), unigram arrays, and
    each 1-gram's id (in file order)."""
    present = set(words)
    if len(present) < len(words):
        seen: set[str] = set()
        for j, w in enumerate(words):
            if w in seen:
                raise lines.error(first + j, f"the unigram {w!r} appears twice.")
            seen.add(w)
    for special in (BOS, EOS):
        if special not in present:
            raise DataError(
                f"{lines.path}: the 1-grams lack {special!r}; every ARPA model needs it."
            )
    vocab = list(SPECIALS) + [w for w in words if w not in SPECIALS]
    # ids without a dictionary: the specials first, then the others in file order
    where = {sp: words.index(sp) for sp in SPECIALS if sp in present}
    is_special = np.zeros(len(words), dtype=bool)
    is_special[list(where.values())] = True
    perm = np.cumsum(~is_special) + (len(SPECIALS) - 1)
    for i, sp in enumerate(SPECIALS):
        if sp in where:
            perm[where[sp]] = i
    p1 = np.full(len(vocab), np.nan)
    b1 = np.zeros(len(vocab))
    p1[perm] = probs
    b1[perm] = backoffs
    if UNK not in present:
        p1[0] = UNKNOWN_MISSING_LOG10
    return vocab, p1, b1, perm


def _assemble(
    v: np.uint64,
    grams: list[np.ndarray],
    sections: list[tuple[np.ndarray, np.ndarray, int]],
    lines: _Lines,
    blanks: bool,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """Sorted keys, probabilities and back-offs of orders 2..N; None if a prefix is missing
    (and ``blanks`` is False)."""
    extra = _blank_prefixes(grams) if blanks else {}
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    keys: list[np.ndarray] = [np.arange(int(v), dtype=np.uint64)]
    for k in range(2, len(sections) + 2):
        pk, bk, first = sections[k - 2]
        cols = grams[k - 2]  # cols[j]: word j+1 of each n-gram
        add = extra.get(k)
        if add is not None and add.shape[0]:
            cols = np.concatenate([cols, add.T.astype(cols.dtype)], axis=1)
            pk = np.concatenate([pk, np.full(add.shape[0], np.nan)])
            bk = np.concatenate([bk, np.zeros(add.shape[0])])
        prefix_id = _ids_of(keys, cols[: k - 1], v)
        if prefix_id is None:
            return None
        key = prefix_id.view(np.uint64) * v
        key += cols[k - 1].astype(np.uint64)
        del cols, prefix_id
        if key.shape[0] > 1 and not (key[1:] > key[:-1]).all():  # not in key order already
            sort = np.argsort(key, kind="stable")
            key = key[sort]
            dup = np.flatnonzero(key[1:] == key[:-1])
            if dup.size:
                j = int(sort[dup[0] + 1])
                raise lines.error(first + j, f"this {k}-gram appears twice in the section.")
            pk, bk = pk[sort], bk[sort]
        keys.append(key)
        out.append((key, pk, bk))
    return out


def _ids_of(keys: list[np.ndarray], cols: np.ndarray, v: np.uint64) -> np.ndarray | None:
    """Ids (int64) of n-grams in the tables ``keys``, given their words as columns
    (``cols[j]``: the (j+1)-th word of each; int32, or int64 from the bulk reader); None if
    one is absent."""
    gid = cols[0].astype(np.int64, copy=False)
    for j in range(1, cols.shape[0]):
        table = keys[j]
        key = gid.view(np.uint64) * v
        key += cols[j].view(np.uint64) if cols.dtype == np.int64 else cols[j].astype(np.uint64)
        # n-grams in a row that share this prefix (most files are sorted) are searched once
        first = np.empty(key.shape[0], dtype=bool)
        first[:1] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        runs = int(np.count_nonzero(first))
        if 8 * runs < 7 * key.shape[0]:  # worth it if it saves an eighth of the searches
            run_of = np.cumsum(first) - 1
            key = key[first]
        else:
            run_of = None
        idx = np.searchsorted(table, key)
        if table.shape[0] == 0 or (idx == table.shape[0]).any():
            return None
        if not (table[idx] == key).all():
            return None
        gid = idx if run_of is None else idx[run_of]
    return gid


def _blank_prefixes(grams: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Prefixes some n-gram needs but the file lacks, per order, as rows of word ids.

    ``grams[k-2]`` holds the order-``k`` n-grams' words as columns. Works top-down so that a
    blank's own prefix is checked too. Python sets: only used for files that need it.
    """
    order = len(grams) + 1
    have = {k: set(map(tuple, grams[k - 2].T.tolist())) for k in range(2, order + 1)}
    added: dict[int, set[tuple[int, ...]]] = {}
    for k in range(order, 2, -1):
        rows = set(map(tuple, grams[k - 2][: k - 1].T.tolist()))
        rows |= {r[: k - 1] for r in added.get(k, set())}
        missing = rows - have[k - 1]
        if missing:
            added.setdefault(k - 1, set()).update(missing)
    return {k: np.array(sorted(r), dtype=np.int64).reshape(-1, k) for k, r in added.items()}
