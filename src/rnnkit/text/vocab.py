"""The vocabulary: tokens in id order, saved as JSON with the run."""

from __future__ import annotations

import hashlib
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
        """Write the vocabulary as JSON with the checksum of its tokens (see
        :func:`tokens_sha256`), so that an edited or reordered file is refused on load."""
        save_tokens_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        p = Path(path)
        data = load_tokens_json(p, "vocabulary")
        try:
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{str(p)!r} is not a valid rnnkit vocabulary file.") from exc


#: The key of a vocabulary file's checksum (files written by earlier rnnkits have none).
CHECKSUM = "tokens_sha256"


def tokens_sha256(tokens: Iterable[str]) -> str:
    """The SHA-256 (hex) of the tokens in id order, as compact UTF-8 JSON (``["a","b"]``):
    any token changed, added, removed or moved changes it."""
    text = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_tokens_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write a vocabulary's dict (with ``tokens``) atomically, its checksum before its tokens."""
    from rnnkit.utils import atomic_write_text

    head = {k: v for k, v in data.items() if k not in ("tokens", CHECKSUM)}
    out = {**head, CHECKSUM: tokens_sha256(data["tokens"]), "tokens": list(data["tokens"])}
    atomic_write_text(path, json.dumps(out, ensure_ascii=False, indent=0) + "\n")


def load_tokens_json(path: Path, kind: str) -> dict[str, Any]:
    """A vocabulary file's dict, its ``tokens`` checked against its checksum when it has one
    (RunError naming the file otherwise: a model's ids would silently mean other tokens)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{str(path)!r} is missing; the run directory is incomplete.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{str(path)!r} is not a valid rnnkit {kind} file.") from exc
    except OSError as exc:
        raise RunError(f"cannot read {kind} file {str(path)!r}: {exc.strerror}.") from exc
    return check_tokens(data, path, kind)


def check_tokens(data: Any, path: Path, kind: str) -> dict[str, Any]:
    """``data`` read from a vocabulary file at ``path``, checked: a dict with ``tokens``
    that match its checksum when it has one (RunError naming the file otherwise)."""
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise RunError(f"{str(path)!r} is not a valid rnnkit {kind} file.")
    want = data.get(CHECKSUM)
    if want is not None and want != tokens_sha256(map(str, data["tokens"])):
        raise RunError(
            f"{kind} file {str(path)!r} does not match its checksum ({CHECKSUM}): its tokens "
            "were edited, reordered or swapped, so the model's ids would mean other tokens; "
            "restore the file from a copy of the run."
        )
    return data
