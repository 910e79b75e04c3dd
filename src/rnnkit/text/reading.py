"""Reading text files as UTF-8, in chunks, with errors that name the file and byte offset."""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from pathlib import Path

from rnnkit.errors import DataError

CHUNK_BYTES = 1 << 22  # 4 MiB: big files are never held as one Python string


def check_readable(path: str | os.PathLike[str], what: str = "corpus") -> Path:
    """The path as a Path, or a DataError naming it when it is missing or not a file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} file {str(p)!r} does not exist.")
    if p.is_dir():
        raise DataError(f"{what} path {str(p)!r} is a directory, not a text file.")
    return p


def iter_text(path: str | os.PathLike[str], what: str = "corpus") -> Iterator[str]:
    """Yield the file's text in chunks, decoded as UTF-8 (a BOM is dropped).

    Raises DataError naming the file and the byte offset of the first invalid byte.
    """
    p = check_readable(path, what)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    try:
        with p.open("rb") as f:
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
                if text:
                    yield text
                if final:
                    return
                offset += len(block)
    except OSError as exc:
        raise DataError(f"cannot read {what} file {str(p)!r}: {exc.strerror}.") from exc


def read_text(path: str | os.PathLike[str], what: str = "text") -> str:
    """The whole file as one string (for small inputs such as prompts and test sets)."""
    return "".join(iter_text(path, what))
