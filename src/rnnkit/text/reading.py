"""Reading input files: one check for every path, UTF-8 in chunks, non-seekable inputs once.

Every input a verb reads (corpus, ``--valid``, text to evaluate, score, classify, tag or
translate) goes through :func:`check_readable` and :func:`open_input`, so a missing file, a
folder, a symbolic link loop or an unreadable file is one sentence naming the path.

A non-seekable input (a FIFO, a process substitution ``<(cat f)`` seen as ``/dev/fd/N``,
``/dev/stdin``) can be read only once, but training reads its corpus more than once (the
vocabulary, then the ids). The first :func:`open_input` of such a path copies it into an
anonymous temporary file (on disk, not in memory; removed when the process ends) and every
open, that one included, reads the copy: once per process, so a FIFO named again in the same
Python session reads its first copy.
"""

from __future__ import annotations

import atexit
import codecs
import errno
import gzip
import io
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from rnnkit.errors import DataError

CHUNK_BYTES = 1 << 22  # 4 MiB: big files are never held as one Python string

# (absolute path, st_dev, st_ino) of a non-seekable input -> the anonymous temporary file
# holding its bytes: read once per process (the path too, as a pipe's inode number may be
# reused once it is closed)
_SPOOLED: dict[tuple[str, int, int], IO[bytes]] = {}


@atexit.register
def _close_spools() -> None:
    for spool in _SPOOLED.values():
        spool.close()
    _SPOOLED.clear()


def input_error(path: str | os.PathLike[str], what: str, exc: OSError) -> DataError:
    """The one-sentence DataError for an OSError met opening or reading an input file."""
    name = repr(str(path))
    code = exc.errno
    if code == errno.ELOOP:
        return DataError(f"{what} file {name} is a symbolic link loop; point it at a real file.")
    if code in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            return DataError(
                f"{what} file {name} is a symbolic link to a file that does not exist."
            )
        return DataError(f"{what} file {name} does not exist.")
    if code == errno.EISDIR:
        return DataError(f"{what} path {name} is a directory, not a text file.")
    if code in (errno.EACCES, errno.EPERM):
        return DataError(f"{what} file {name} cannot be read: permission denied.")
    why = (exc.strerror or type(exc).__name__).rstrip(".")
    return DataError(f"cannot read {what} file {name}: {why}.")


def check_readable(path: str | os.PathLike[str], what: str = "corpus") -> Path:
    """The path as a Path, or a DataError naming it when it is missing, a folder, a symbolic
    link loop or otherwise cannot be opened."""
    p = Path(path)
    try:
        st = os.stat(p)  # follows links: a loop is ELOOP, a dangling link ENOENT
    except OSError as exc:
        raise input_error(p, what, exc) from exc
    except ValueError as exc:  # an embedded NUL byte
        raise DataError(f"{what} file {str(p)!r} is not a valid path.") from exc
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{what} path {str(p)!r} is a directory, not a text file.")
    return p


def input_path(path: str | os.PathLike[str], what: str = "corpus") -> str:
    """The absolute path to record in a run's config.json (a file or a folder); a symbolic
    link loop is a DataError here (``Path.resolve`` raises RuntimeError on one).

    Symbolic links are resolved, except to a pipe or process substitution (``/dev/fd/63``
    links to ``pipe:[...]``, which is no path): that is kept as given, made absolute, and read
    through its spooled copy.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            raise input_error(p, what, exc) from exc
        return str(p.resolve())  # missing or bad: its reader says so, in its own words
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return os.path.abspath(p)
    try:
        return str(p.resolve(strict=True))
    except (OSError, RuntimeError) as exc:  # a loop made after the stat above
        raise DataError(
            f"{what} file {str(p)!r} is a symbolic link loop; point it at a real file."
        ) from exc


def open_input(path: str | os.PathLike[str], what: str = "corpus") -> IO[bytes]:
    """The input opened for reading bytes from its start; see the module docstring for
    non-seekable inputs. Errors are DataErrors naming the path."""
    p = check_readable(path, what)
    try:
        st = os.stat(p)
        if stat.S_ISREG(st.st_mode):
            return p.open("rb")
        key = (os.path.abspath(p), st.st_dev, st.st_ino)
        spool = _SPOOLED.get(key)
        if spool is None:
            spool = tempfile.TemporaryFile(prefix="rnnkit-input-")  # noqa: SIM115 (kept open)
            with p.open("rb") as src:
                while block := src.read(CHUNK_BYTES):
                    spool.write(block)
            spool.flush()
            _SPOOLED[key] = spool
        return io.BufferedReader(_SpoolReader(spool.fileno()), CHUNK_BYTES)
    except OSError as exc:
        raise input_error(p, what, exc) from exc


class _SpoolReader(io.RawIOBase):
    """Reads a spooled copy from the start with its own offset (os.pread), so two readers
    of the same input never move each other's position."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = os.pread(self.fd, len(buffer), self.pos)
        n = len(data)
        memoryview(buffer)[:n] = data
        self.pos += n
        return n


def iter_text(
    path: str | os.PathLike[str],
    what: str = "corpus",
    on_bytes: Callable[[int], object] | None = None,
) -> Iterator[str]:
    """Yield the file's text in chunks, decoded as UTF-8 (a BOM is dropped).

    Raises DataError naming the file and the byte offset of the first invalid byte.
    ``on_bytes(n)`` is told each block's size in bytes as it is read (a progress bar).
    """
    p = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    try:
        with open_input(p, what) as f:
            while True:
                block = f.read(CHUNK_BYTES)
                final = not block
                try:
                    text = decoder.decode(block, final=final)
                except UnicodeDecodeError as exc:
                    pending = len(decoder.getstate()[0]) if not final else 0
                    at = offset - pending + exc.start
                    raise DataError(
                        f"{what} file {str(p)!r} is not valid UTF-8 (byte offset {max(at, 0)}); "
                        "convert it to UTF-8 first."
                    ) from exc
                if on_bytes is not None and block:
                    on_bytes(len(block))
                if text:
                    yield text
                if final:
                    return
                offset += len(block)
    except OSError as exc:
        raise input_error(p, what, exc) from exc


def gunzip(f: IO[bytes], path: str | os.PathLike[str]) -> IO[bytes]:
    """``f`` decompressed when ``path`` ends in ``.gz`` (closing it leaves ``f`` open)."""
    if str(path).endswith(".gz"):
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    return f


def read_bytes(path: str | os.PathLike[str], what: str = "corpus") -> bytes:
    """The whole input as bytes (small inputs: labeled texts, manifests)."""
    p = Path(path)
    try:
        with open_input(p, what) as f:
            return f.read()
    except OSError as exc:
        raise input_error(p, what, exc) from exc


def read_text(path: str | os.PathLike[str], what: str = "text") -> str:
    """The whole file as one string (for small inputs such as prompts and test sets)."""
    return "".join(iter_text(path, what))
