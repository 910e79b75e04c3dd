"""The vocabulary: tokens in id order, saved as JSON with the run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rnnkit.errors import RunError
from rnnkit.text.tokenize import tokenize

UNK = "<unk>"
EOS = "</s>"
BOS = "<s>"


class Vocab:
    """Tokens in id order; ``unk_id`` is where tokens never seen in training go.

    At character level a token is one Unicode code point, so the multi-character special
    ``<unk>`` can never collide with a real token. At word level ``</s>`` ends each line
    (and ``<s>``, in sentence mode, starts it); ``tokenizer`` and ``lowercase`` say how a line
    becomes words (see :mod:`rnnkit.text.tokenize`), so text is always cut the same way as
    the training data was.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        level: str,
        specials: Iterable[str] = (UNK,),
        tokenizer: str = "whitespace",
        lowercase: bool = False,
    ):
        self.tokens: list[str] = list(tokens)
        self.level = level
        self.specials: list[str] = list(specials)
        self.tokenizer = tokenizer
        self.lowercase = bool(lowercase)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")
        if UNK not in self.index:
            raise ValueError("vocabulary must contain <unk>")
        self.unk_id = self.index[UNK]
        self.eos_id = self.index.get(EOS)
        self.bos_id = self.index.get(BOS)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def id(self, token: str) -> int:
        return self.index.get(token, self.unk_id)

    def tokenize(self, line: str) -> list[str]:
        """The words of one line, cut as the training text was (word level only)."""
        return tokenize(line, self.tokenizer, self.lowercase)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"level": self.level, "specials": self.specials}
        if self.level == "word":
            data.update(tokenizer=self.tokenizer, lowercase=self.lowercase)
        return {**data, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocab:
        return cls(
            data["tokens"],
            data["level"],
            data.get("specials", [UNK]),
            tokenizer=data.get("tokenizer", "whitespace"),
            lowercase=bool(data.get("lowercase", False)),
        )

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        level: str,
        max_size: int | None = None,
        min_count: int = 1,
        specials: Iterable[str] = (UNK,),
        tokenizer: str = "whitespace",
        lowercase: bool = False,
    ) -> Vocab:
        """Specials first, then the most frequent tokens (ties in code-point order).

        ``max_size`` counts the specials too; tokens seen fewer than ``min_count`` times and
        those past ``max_size`` become ``<unk>``.
        """
        specials = list(specials)
        kept = [t for t, c in counts.items() if c >= min_count and t not in specials]
        kept.sort(key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(specials))]
        if level == "char":
            kept.sort()  # char ids in code-point order: readable and stable
        return cls([*specials, *kept], level, specials, tokenizer, lowercase)

    def save(self, path: str | os.PathLike[str]) -> None:
        from rnnkit.utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise RunError(f"{str(p)!r} is missing; the run directory is incomplete.") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{str(p)!r} is not a valid rnnkit vocabulary file.") from exc
