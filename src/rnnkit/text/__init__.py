"""Text: reading UTF-8, tokenising, the vocabulary, encoding to int32 arrays, batching."""

from rnnkit.choices import LEVELS
from rnnkit.text.corpus import (
    BUILTIN_CORPORA,
    Encoded,
    build_vocab,
    decode,
    encode_file,
    encode_text,
    resolve_corpus,
)
from rnnkit.text.reading import iter_text, read_text
from rnnkit.text.vocab import BOS, EOS, UNK, Vocab

__all__ = [
    "BOS",
    "BUILTIN_CORPORA",
    "EOS",
    "LEVELS",
    "UNK",
    "Encoded",
    "Vocab",
    "build_vocab",
    "decode",
    "encode_file",
    "encode_text",
    "iter_text",
    "read_text",
    "resolve_corpus",
]
