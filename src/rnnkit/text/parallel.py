"""Parallel text for translation: two line-aligned files, and how a line becomes units.

Files are UTF-8, plain or gzip-compressed (``.gz``, as Multi30k ships), line i of the source
file translated by line i of the target file. Every line must hold text: an empty line is a
DataError naming the file and line (an empty source has no translation to learn).

A :class:`Segmenter` cuts a line into the units a model reads and writes, and joins them back:

``words``
    rnnkit's words-and-punctuation tokenizer (:mod:`rnnkit.text.tokenize`); output is
    detokenized by joining with spaces and closing the spaces before ``. , ! ? ; : ) ]``
    and after ``( [`` (sacreBLEU's 13a tokenization cuts the same places again, so the
    score does not depend on this).
``spm``
    a SentencePiece unigram model of ``size`` pieces per side, trained by the sentencepiece
    library on the training side only (no download); decoding is its exact inverse.

``lowercase`` lowercases every line first (the usual setting for Multi30k figures).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rnnkit.errors import DataError, RunError
from rnnkit.text.reading import check_readable, gunzip, open_input
from rnnkit.text.tokenize import tokenize

SEGMENTERS = ("words", "spm")
_CLOSE = re.compile(r" ([.,!?;:)\]])")
_OPEN = re.compile(r"([(\[]) ")


def read_lines(path: str | os.PathLike[str], what: str = "text") -> list[str]:
    """The lines of a UTF-8 file (plain or .gz), without line ends; every line non-empty."""
    p = check_readable(path, what)
    lines: list[str] = []
    try:
        with open_input(p, what) as src, gunzip(src, p) as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{what} file {str(p)!r} line {n} is not valid UTF-8 ({exc.reason})."
                    ) from exc
                if not line.strip():
                    raise DataError(
                        f"{what} file {str(p)!r} line {n} is empty; every line needs text to "
                        "translate or to learn from."
                    )
                lines.append(line)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        why = str(exc).rstrip(".") or type(exc).__name__
        raise DataError(f"cannot read {what} file {str(p)!r}: {why}.") from exc
    if not lines:
        raise DataError(f"{what} file {str(p)!r} has no lines.")
    return lines


def read_parallel(
    source: str | os.PathLike[str], target: str | os.PathLike[str]
) -> tuple[list[str], list[str]]:
    """The source and target lines of two line-aligned files (same count, none empty)."""
    src = read_lines(source, "source")
    tgt = read_lines(target, "target")
    if len(src) != len(tgt):
        raise DataError(
            f"source file {str(source)!r} has {len(src):,} lines but target file "
            f"{str(target)!r} has {len(tgt):,}; parallel files must be line-aligned."
        )
    return src, tgt


def detokenize(tokens: Sequence[str]) -> str:
    """Words joined with spaces, without the spaces before closing punctuation."""
    return _OPEN.sub(r"\1", _CLOSE.sub(r"\1", " ".join(tokens)))


class Segmenter:
    """How one side's lines become units and back (see the module docstring)."""

    def __init__(self, kind: str = "words", lowercase: bool = False, model: bytes = b"") -> None:
        if kind not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, not {kind!r}")
        self.kind = kind
        self.lowercase = lowercase
        self.model = model
        self._sp: Any = None
        if kind == "spm":
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_proto=model)

    @classmethod
    def train_spm(cls, lines: Iterable[str], size: int, lowercase: bool = False) -> Segmenter:
        """A SentencePiece unigram model of ``size`` pieces learnt from ``lines``."""
        import sentencepiece as spm

        buffer = io.BytesIO()
        text = [line.lower() if lowercase else line for line in lines]
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(text),
                model_writer=buffer,
                vocab_size=size,
                model_type="unigram",
                character_coverage=1.0,
                # rnnkit's vocabulary keeps its own specials; the pieces need none
                unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                minloglevel=2,
            )  # fmt: skip
        except RuntimeError as exc:
            raise DataError(
                f"SentencePiece could not learn {size:,} pieces from the training side "
                f"({str(exc).splitlines()[0]}); lower --subwords."
            ) from exc
        return cls("spm", lowercase, buffer.getvalue())

    def split(self, line: str) -> list[str]:
        """The units of one line."""
        if self.lowercase:
            line = line.lower()
        if self._sp is not None:
            return list(self._sp.encode(line, out_type=str))
        return tokenize(line, "words")

    def join(self, units: Sequence[str]) -> str:
        """A line from units (the inverse of :meth:`split` up to case and spacing)."""
        if self._sp is not None:
            return str(self._sp.decode_pieces(list(units)))
        return detokenize(units)

    def save(self, path: Path) -> None:
        """SentencePiece segmenters keep their model in the run (words need no file)."""
        if self.kind == "spm":
            from rnnkit.utils import atomic_write

            model = self.model
            atomic_write(path, lambda f: f.write(model))

    @classmethod
    def load(cls, kind: str, lowercase: bool, path: Path) -> Segmenter:
        if kind != "spm":
            return cls(kind, lowercase)
        try:
            return cls("spm", lowercase, path.read_bytes())
        except OSError as exc:
            raise RunError(f"{str(path)!r} is missing; the run directory is incomplete.") from exc


__all__ = ["SEGMENTERS", "Segmenter", "detokenize", "read_lines", "read_parallel"]
