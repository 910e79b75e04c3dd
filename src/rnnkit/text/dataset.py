"""A corpus made ready for training: the vocabulary from the training part, both parts as ids.

Every token is one int32 id; the vocabulary is cut to the training part's tokens
(and --vocab-size / --min-count) and the ids remapped in place, so a 100M-token corpus never
holds a second copy of its ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnkit.choices import MODES
from rnnkit.errors import ConfigError, DataError, did_you_mean
from rnnkit.text.corpus import build_vocab, check_level, encode_file, resolve_corpus
from rnnkit.text.tokenize import check_tokenizer
from rnnkit.text.vocab import Vocab


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens.

    ``mode`` ``stream``: the text is one token stream (``</s>`` at each line end at word
    level), the hidden state carried across lines (PTB); ``sentence``: each line is an
    independent sentence ``<s> .. </s>`` (word level only), read in padded batches from the
    zero state. ``tokenizer`` (``whitespace`` or ``words``) and ``lowercase`` cut lines into
    words (see :mod:`rnnkit.text.tokenize`).
    """

    corpus: str = "shakespeare"  # a path, or the name of a built-in corpus
    valid: str | None = None  # a validation file; None: the last valid_fraction of corpus
    valid_fraction: float = 0.1
    level: str = "char"
    vocab_size: int | None = None  # keep at most this many tokens (specials included)
    min_count: int = 1
    mode: str = "stream"
    tokenizer: str = "whitespace"
    lowercase: bool = False

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"--mode must be stream or sentence, not {self.mode!r}{did_you_mean(self.mode, MODES)}."
            )
        if self.level == "char" and (
            self.mode != "stream" or self.tokenizer != "whitespace" or self.lowercase
        ):
            raise ConfigError("--mode sentence, --tokenizer and --lowercase need --level word.")
        check_tokenizer(self.tokenizer)
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(
                f"--valid-fraction must be between 0 and 1, not {self.valid_fraction}."
            )
        if self.vocab_size is not None and self.vocab_size < 2:
            raise ConfigError(f"--vocab-size must be at least 2, not {self.vocab_size}.")
        if self.min_count < 1:
            raise ConfigError(f"--min-count must be at least 1, not {self.min_count}.")


@dataclass
class PreparedData:
    """A corpus as int32 id arrays, with the vocabulary built from its training part."""

    vocab: Vocab
    train_ids: np.ndarray
    valid_ids: np.ndarray


def prepare_data(data: DataConfig, vocab: Vocab | None) -> PreparedData:
    """Encode the corpus; build the vocabulary from the training part alone."""
    check_level(data.level)
    path = resolve_corpus(data.corpus)
    sentence = data.mode == "sentence"
    if vocab is None:
        full = build_vocab(
            path,
            data.level,
            tokenizer=data.tokenizer,
            lowercase=data.lowercase,
            sentence_markers=sentence,
        )
        ids = encode_file(path, full).ids
    else:
        full, ids = vocab, encode_file(path, vocab).ids
    if data.valid is not None:
        train_ids = ids
        valid_ids = encode_file(data.valid, full, what="validation").ids
        if len(valid_ids) < 2:
            raise DataError(f"validation file {data.valid!r} is empty or too short to score.")
    else:
        cut = int(len(ids) * (1.0 - data.valid_fraction))  # as nanoGPT: first 90% / last 10%
        if sentence and full.eos_id is not None:  # cut between sentences, near the fraction
            ends = np.flatnonzero(ids[: len(ids) - 1] == full.eos_id) + 1
            if len(ends):
                cut = int(ends[max(0, int(np.searchsorted(ends, cut, side="right")) - 1)])
        train_ids, valid_ids = ids[:cut], ids[cut:]
        if len(valid_ids) < 2 or len(train_ids) < 2:
            raise DataError(
                f"corpus {str(path)!r} is too short to split for validation; give --valid FILE."
            )
    if vocab is not None:
        return PreparedData(vocab, train_ids, valid_ids)
    # Keep only tokens seen in the training part (and the size limits): valid and test words
    # never enter the vocabulary.
    counts = bincount(train_ids, len(full))
    kept = Vocab.from_counts(
        {t: int(c) for t, c in zip(full.tokens, counts) if c > 0},
        data.level,
        max_size=data.vocab_size,
        min_count=data.min_count,
        specials=full.specials,
        tokenizer=full.tokenizer,
        lowercase=full.lowercase,
    )
    remap = np.array([kept.id(t) for t in full.tokens], dtype=np.int32)
    return PreparedData(kept, remap_in_place(train_ids, remap), remap_in_place(valid_ids, remap))


def bincount(ids: np.ndarray, size: int, chunk: int = 1 << 22) -> np.ndarray:
    """np.bincount a block at a time: it casts int32 ids to int64, a copy twice the corpus."""
    counts = np.zeros(size, dtype=np.int64)
    for i in range(0, len(ids), chunk):
        counts += np.bincount(ids[i : i + chunk], minlength=size)
    return counts


def remap_in_place(ids: np.ndarray, remap: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """ids = remap[ids], a block at a time: no second copy of a 100M-token id array."""
    if not ids.flags.writeable:
        ids = ids.copy()
    for i in range(0, len(ids), chunk):
        ids[i : i + chunk] = remap[ids[i : i + chunk]]
    return ids


__all__ = ["DataConfig", "PreparedData", "bincount", "prepare_data", "remap_in_place"]
