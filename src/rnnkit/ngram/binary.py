"""rnnkit's binary n-gram format: one file of aligned arrays, memory-mapped to load at once.

Layout (all little-endian)::

    bytes 0..7     magic  b"RNNKITNG"
    bytes 8..11    uint32 format version (1)
    bytes 12..15   uint32 length H of the JSON header
    bytes 16..19   uint32 CRC-32 of the JSON header
    bytes 20..     the JSON header (UTF-8), then zero padding to a multiple of 64
    then           the arrays, each starting at a multiple of 64 bytes

The JSON header holds ``order``, ``vocab_size``, ``counts`` (stored n-grams per order,
blanks included), ``file_size`` and ``arrays``: for each array its ``offset``, ``dtype``,
``shape`` and CRC-32. The arrays are, per order ``k = 1..N``: ``keys.k`` (uint64, sorted:
``id(prefix) * V + last word``, see :mod:`rnnkit.ngram.model`), ``prob.k`` and
``backoff.k`` (float32 log10; NaN probability for a blank prefix-only entry); and ``vocab``
(uint8: the words in id order, UTF-8, each followed by ``\\n``). Unigram keys are the word
ids themselves, so ``keys.1`` is not stored.

:func:`read_binary` maps the file and checks its structure (magic, version, header CRC,
every array inside the file, the file's size); ``verify=True`` also checks each array's
CRC-32 (reads the whole file). Scoring then searches the mapped arrays with
:func:`numpy.searchsorted`: only the pages a text needs are read from disk.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from rnnkit.errors import DataError
from rnnkit.ngram.model import NgramModel
from rnnkit.utils import atomic_write

MAGIC = b"RNNKITNG"
VERSION = 1
#: The extension ``rnnkit ngram train`` and ``build-binary`` give binary models.
SUFFIX = ".ngram"
_PREAMBLE = struct.Struct("<8sIII")
_ALIGN = 64


def _pad(n: int) -> int:
    return -n % _ALIGN


def _raw(arr: np.ndarray) -> memoryview:
    """The bytes of a contiguous array, without a copy."""
    return arr.reshape(-1).view(np.uint8).data


def _arrays(model: NgramModel) -> list[tuple[str, np.ndarray]]:
    vocab = "".join(w + "\n" for w in model.vocab).encode("utf-8")
    out: list[tuple[str, np.ndarray]] = [("vocab", np.frombuffer(vocab, dtype=np.uint8))]
    for k in range(1, model.order + 1):
        if k > 1:
            out.append((f"keys.{k}", np.ascontiguousarray(model.keys[k - 1], dtype="<u8")))
        out.append((f"prob.{k}", np.ascontiguousarray(model.log10_prob[k - 1], dtype="<f4")))
        out.append((f"backoff.{k}", np.ascontiguousarray(model.log10_backoff[k - 1], dtype="<f4")))
    return out


def write_binary(model: NgramModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` in the binary format (through a temporary file renamed into place)."""
    if any("\n" in w or not w for w in model.vocab):
        raise ValueError("a word of the vocabulary is empty or holds a line break")
    arrays = _arrays(model)
    crcs = [zlib.crc32(_raw(arr)) for _, arr in arrays]
    # the offsets depend on the header's length, which depends on the offsets: iterate (the
    # length only grows with ``start``, so this ends after a step or two)
    start = 0
    while True:
        header: dict[str, Any] = {
            "format": "rnnkit-ngram",
            "version": VERSION,
            "order": model.order,
            "vocab_size": model.vocab_size,
            "counts": [int(k.shape[0]) for k in model.keys],
            "arrays": {},
        }
        offset = start
        for (name, arr), crc in zip(arrays, crcs):
            header["arrays"][name] = {
                "offset": offset,
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "crc32": crc,
            }
            offset += arr.nbytes + _pad(arr.nbytes)
        header["file_size"] = offset
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        needed = _PREAMBLE.size + len(text) + _pad(_PREAMBLE.size + len(text))
        if needed == start:
            break
        start = needed

    def write(f: IO[bytes]) -> None:
        f.write(_PREAMBLE.pack(MAGIC, VERSION, len(text), zlib.crc32(text)))
        f.write(text)
        f.write(b"\0" * (start - _PREAMBLE.size - len(text)))
        for _name, arr in arrays:
            f.write(_raw(arr))
            f.write(b"\0" * _pad(arr.nbytes))

    atomic_write(Path(path), write)


def is_binary(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the binary format's magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_binary(path: str | os.PathLike[str], *, verify: bool = False) -> NgramModel:
    """Map a binary model (see the module docstring); its arrays are read-only views of the
    file. Raises :class:`DataError` naming the file if it is not one, or truncated/corrupt."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _PREAMBLE.size:
                raise DataError(f"{p}: is too short to be an rnnkit binary n-gram model.")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such n-gram model file; check the path.") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{p}: is a directory, not an n-gram model file.") from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot be read ({exc.strerror}).") from exc
    magic, version, hlen, hcrc = _PREAMBLE.unpack_from(mm, 0)
    if magic != MAGIC:
        raise DataError(f"{p}: is not an rnnkit binary n-gram model (wrong magic bytes).")
    if version != VERSION:
        raise DataError(
            f"{p}: is a binary n-gram model of format version {version}; this rnnkit reads "
            f"version {VERSION}: rebuild it with `rnnkit ngram build-binary`."
        )
    corrupt = (
        f"{p}: the binary n-gram model is truncated or corrupt; rebuild it with "
        "`rnnkit ngram build-binary` from its ARPA file."
    )
    text = mm[_PREAMBLE.size : _PREAMBLE.size + hlen]
    if len(text) != hlen or zlib.crc32(text) != hcrc:
        raise DataError(corrupt)
    try:
        header = json.loads(text)
        order = int(header["order"])
        vocab_size = int(header["vocab_size"])
        counts = [int(c) for c in header["counts"]]
        specs = header["arrays"]
        file_size = int(header["file_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(corrupt) from exc
    if file_size != size:
        raise DataError(
            f"{p}: the binary n-gram model should be {file_size:,} bytes but is {size:,}, so it "
            "is truncated or corrupt; rebuild it with `rnnkit ngram build-binary`."
        )

    data_start = _PREAMBLE.size + hlen + _pad(_PREAMBLE.size + hlen)
    used: list[tuple[int, int]] = []

    def array(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            spec = specs[name]
            offset = int(spec["offset"])
            ok = spec["dtype"] == dtype and tuple(spec["shape"]) == shape
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(corrupt) from exc
        n = int(np.prod(shape))
        nbytes = n * np.dtype(dtype).itemsize
        if not ok or offset < data_start or offset % _ALIGN or offset + nbytes > size:
            raise DataError(corrupt)
        used.append((offset, offset + nbytes))
        arr = np.frombuffer(mm, dtype=np.dtype(dtype), count=n, offset=offset).reshape(shape)
        if verify and zlib.crc32(_raw(arr)) != spec.get("crc32"):
            raise DataError(f"{p}: the array {name} fails its checksum: the file is corrupt.")
        return arr

    if order < 1 or len(counts) != order or counts[0] != vocab_size:
        raise DataError(corrupt)
    vocab_spec = specs.get("vocab", {}) if isinstance(specs, dict) else {}
    vocab_bytes = array("vocab", "|u1", (int((vocab_spec.get("shape") or [0])[0]),))
    try:
        vocab = vocab_bytes.tobytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(corrupt) from exc
    if vocab[-1:] != [""] or len(vocab) - 1 != vocab_size:
        raise DataError(corrupt)
    vocab.pop()
    keys = [np.arange(vocab_size, dtype=np.uint64)]
    probs, backoffs = [], []
    for k in range(1, order + 1):
        if k > 1:
            keys.append(array(f"keys.{k}", "<u8", (counts[k - 1],)))
        probs.append(array(f"prob.{k}", "<f4", (counts[k - 1],)))
        backoffs.append(array(f"backoff.{k}", "<f4", (counts[k - 1],)))
    used.sort()
    if any(b[0] < a[1] for a, b in itertools.pairwise(used)):
        raise DataError(corrupt)  # two arrays overlap
    # a key beyond its table's range would only give wrong scores; check the largest (sorted)
    for k in range(2, order + 1):
        if counts[k - 1] and int(keys[k - 1][-1]) >= counts[k - 2] * vocab_size:
            raise DataError(corrupt)
    try:
        return NgramModel(vocab, keys, probs, backoffs)
    except ValueError as exc:
        raise DataError(corrupt) from exc


def load_model(path: str | os.PathLike[str]) -> NgramModel:
    """An n-gram model from a binary file or an ARPA file (plain or gzip), by its content."""
    from rnnkit.ngram.arpa import read_arpa

    if is_binary(path):
        return read_binary(path)
    return read_arpa(path)


def binary_path(arpa: str | os.PathLike[str]) -> Path:
    """Where the binary model beside an ARPA file goes: ``kn5.arpa[.gz]`` -> ``kn5.ngram``."""
    p = Path(arpa)
    name = p.name
    for suffix in (".arpa.gz", ".arpa", ".gz"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return p.with_name(name[: -len(suffix)] + SUFFIX)
    return p.with_name(name + SUFFIX)
