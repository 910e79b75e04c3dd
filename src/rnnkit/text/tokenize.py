"""Word tokenisers: whitespace (PTB style) and words-and-punctuation for raw text.

``whitespace``
    ``line.split()``: the text is already tokenised (Penn Treebank as Mikolov distributes it).
``words``
    For raw text (reddit comments, books): the line is NFC-normalised, then cut into words
    (letters, digits and the combining marks of any script, with inner apostrophes and
    hyphens kept: ``don't``, ``well-known``), numbers (``3.14``, ``1,000``) and single
    punctuation or symbol characters::

        "Don't panic—it's 3.14 km!"  ->  Don't panic — it's 3.14 km !

``lowercase`` lowercases every token (Unicode-aware ``str.lower``), with either tokeniser.

:func:`split_sentences` cuts raw text into sentences at ``.``, ``!`` or ``?`` followed by
white space, and at line breaks, the way the seeds' tutorial uses ``nltk.sent_tokenize``
(a simple rule, no abbreviation list).
"""

from __future__ import annotations

import re
import unicodedata

from rnnkit.choices import TOKENIZERS
from rnnkit.errors import ConfigError, did_you_mean

# Combining marks (Unicode category M*) are not matched by \w; the blocks below hold those of
# the Latin, Greek, Cyrillic, Hebrew, Arabic, Indic, Thai and CJK scripts.
_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"
    "\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e4\u06e7\u06e8\u06ea-\u06ed"
    "\u0900-\u0903\u093a-\u094f\u0951-\u0957\u0962\u0963\u0981-\u0983\u09bc-\u09d7"
    "\u0a01-\u0a03\u0a3c-\u0a51\u0a81-\u0a83\u0abc-\u0acd\u0b01-\u0b03\u0b3c-\u0b57"
    "\u0b82\u0bbe-\u0bcd\u0c00-\u0c04\u0c3e-\u0c56\u0c81-\u0c83\u0cbc-\u0cd6\u0d00-\u0d03"
    "\u0d3b-\u0d4d\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd"
    "\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\u302a-\u302f\u3099\u309a\ufe20-\ufe2f"
)
_W = rf"[\w{_MARKS}]"
_WORD_RE = re.compile(rf"\d+(?:[.,]\d+)+|{_W}+(?:['’\-]{_W}+)*|[^\w\s{_MARKS}]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’)\]])\s+|\s*\n\s*")


def check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ConfigError(
            f"--tokenizer must be whitespace or words, not {tokenizer!r}"
            f"{did_you_mean(tokenizer, TOKENIZERS)}."
        )


def tokenize(line: str, tokenizer: str = "whitespace", lowercase: bool = False) -> list[str]:
    """The tokens of one line (see the module docstring)."""
    if tokenizer == "whitespace":
        tokens = line.split()
    elif tokenizer == "words":
        tokens = _WORD_RE.findall(unicodedata.normalize("NFC", line))
    else:
        check_tokenizer(tokenizer)
        tokens = []
    if lowercase:
        return [t.lower() for t in tokens]
    return tokens


def split_sentences(text: str) -> list[str]:
    """Raw text cut into sentences (non-empty, stripped): at ``.!?`` + space and line breaks."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


__all__ = ["TOKENIZERS", "check_tokenizer", "split_sentences", "tokenize"]
