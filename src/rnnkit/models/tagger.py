"""The sequence tagger: one label per token (many-to-many, synchronised).

    x_t = [C w_t ; F_1 f1_t ; ... ; charBiLSTM(w_t)]        word embedding, extra columns'
                                                             embeddings, character features
    a_t = RecurrentCore(x)_t                                 (B, T, D); D = 2H bidirectional
    e_t = W_ya a_t + b_y                                     emission scores (B, T, L)

Training minimises the softmax cross-entropy of each token's label (mean over real tokens)
or, with ``crf``, a linear-chain CRF's negative log-likelihood of the whole label sequence
(:mod:`rnnkit.models.crf`), summed over sentences and divided by the number of real tokens,
so both losses are nats per token. Prediction is the per-token argmax or the Viterbi path.

A padded batch is packed through the recurrent cores (the word-level one and the character
BiLSTM), so a sentence gets the same emissions and labels alone or inside any batch. No I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.errors import ConfigError, did_you_mean
from rnnkit.models.config import check_cell, check_types
from rnnkit.models.core import RecurrentCore
from rnnkit.models.crf import CRF


@dataclass
class TaggerConfig:
    """Shapes and options of a :class:`SequenceTagger`.

    ``extra_vocab_sizes``: one embedding table of ``extra_embedding_size`` per extra input
    column (e.g. the POS column when chunking). ``char_features``: a character BiLSTM
    (``char_embedding_size`` in, ``char_hidden_size`` per direction) reads each word; its two
    final states join the word's embedding (Lample et al. 2016).
    """

    vocab_size: int
    num_labels: int
    embedding_size: int = 100
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    nonlinearity: str = "tanh"
    bidirectional: bool = True
    dropout: float = 0.0
    skip: bool = False
    crf: bool = False
    char_features: bool = False
    char_vocab_size: int = 0
    char_embedding_size: int = 25
    char_hidden_size: int = 25
    extra_vocab_sizes: list[int] = field(default_factory=list)
    extra_embedding_size: int = 16

    def __post_init__(self) -> None:
        self.validate()

    @property
    def input_size(self) -> int:
        """Size of x_t, the vector the recurrent core reads."""
        size = self.embedding_size + len(self.extra_vocab_sizes) * self.extra_embedding_size
        return size + (2 * self.char_hidden_size if self.char_features else 0)

    def validate(self) -> None:
        check_types(self, "model")
        check_cell(self.cell, self.nonlinearity)
        sizes = ["vocab_size", "num_labels", "embedding_size", "hidden_size", "num_layers"]
        if self.char_features:
            sizes += ["char_vocab_size", "char_embedding_size", "char_hidden_size"]
        if self.extra_vocab_sizes:
            sizes.append("extra_embedding_size")
        for name in sizes:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}.")
        for k, size in enumerate(self.extra_vocab_sizes):
            if int(size) < 1:
                raise ConfigError(f"extra_vocab_sizes[{k}] must be at least 1, not {size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), not {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaggerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown tagger setting {unknown[0]!r}{did_you_mean(unknown[0], names)}."
            )
        return cls(**data)


@dataclass
class TagBatch:
    """A padded batch of sentences; every tensor is int64 and padding holds 0.

    words (B, T); lengths (B,) real tokens per sentence, each >= 1; labels (B, T) or None
    (text to tag); features: one (B, T) tensor per extra column; chars (B, T, C) character
    ids of each word and char_lengths (B, T) (0 at padded words), or None without
    character features.
    """

    words: Tensor
    lengths: Tensor
    labels: Tensor | None = None
    features: list[Tensor] = field(default_factory=list)
    chars: Tensor | None = None
    char_lengths: Tensor | None = None

    @property
    def mask(self) -> Tensor:
        """(B, T) bool: True at real tokens."""
        T = self.words.shape[1]
        return torch.arange(T, device=self.words.device).unsqueeze(0) < self.lengths.unsqueeze(1)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def to(self, device: torch.device | str) -> TagBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return TagBatch(
            self.words.to(device, non_blocking=True),
            self.lengths.to(device, non_blocking=True),
            move(self.labels),
            [f.to(device, non_blocking=True) for f in self.features],
            move(self.chars),
            move(self.char_lengths),
        )

    @classmethod
    def from_lists(
        cls,
        words: Sequence[Sequence[int]],
        labels: Sequence[Sequence[int]] | None = None,
        features: Sequence[Sequence[Sequence[int]]] = (),
        chars: Sequence[Sequence[Sequence[int]]] | None = None,
    ) -> TagBatch:
        """Pad sentences into a batch: words[b][t]; features[b][k][t]; chars[b][t][c]."""
        B = len(words)
        lengths = [len(w) for w in words]
        if B == 0 or min(lengths) < 1:
            raise ValueError("a batch needs at least one sentence, each of at least one token")
        T = max(lengths)

        def pad(rows: Sequence[Sequence[int]]) -> Tensor:
            out = np.zeros((len(rows), T), dtype=np.int64)
            for b, row in enumerate(rows):
                out[b, : len(row)] = row
            return torch.from_numpy(out)

        num_features = len(features[0]) if len(features) else 0
        batch = cls(
            words=pad(words),
            lengths=torch.tensor(lengths, dtype=torch.long),
            labels=None if labels is None else pad(labels),
            features=[pad([f[k] for f in features]) for k in range(num_features)],
        )
        if chars is not None:
            C = max(len(c) for sent in chars for c in sent)
            ids = np.zeros((B, T, C), dtype=np.int64)
            char_lengths = np.zeros((B, T), dtype=np.int64)
            for b, sent in enumerate(chars):
                for t, c in enumerate(sent):
                    ids[b, t, : len(c)] = c
                    char_lengths[b, t] = len(c)
            batch.chars = torch.from_numpy(ids)
            batch.char_lengths = torch.from_numpy(char_lengths)
        return batch


def _full(x: Tensor) -> Tensor:
    """float32 for half-precision scores (autocast); float32 and float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class SequenceTagger(nn.Module):
    """Embeddings -> recurrent core -> emissions -> softmax or CRF (see the module doc)."""

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size)
        self.extra_embeddings = nn.ModuleList(
            nn.Embedding(size, c.extra_embedding_size) for size in c.extra_vocab_sizes
        )
        self.char_embedding: nn.Embedding | None = None
        self.char_core: RecurrentCore | None = None
        if c.char_features:
            self.char_embedding = nn.Embedding(c.char_vocab_size, c.char_embedding_size)
            self.char_core = RecurrentCore(
                "lstm", c.char_embedding_size, c.char_hidden_size, bidirectional=True
            )
        self.drop = nn.Dropout(c.dropout)
        self.core = RecurrentCore(
            c.cell,
            c.input_size,
            c.hidden_size,
            c.num_layers,
            c.bidirectional,
            c.nonlinearity,
            c.dropout,
            c.skip,
        )
        self.emission = nn.Linear(self.core.output_size, c.num_labels)
        self.crf: CRF | None = CRF(c.num_labels) if c.crf else None

    def char_states(self, batch: TagBatch) -> Tensor:
        """The character BiLSTM's final states of each word, (B, T, 2 * char_hidden_size)."""
        if self.char_embedding is None or self.char_core is None:
            raise ValueError("this tagger has no character features")
        if batch.chars is None or batch.char_lengths is None:
            raise ValueError("the tagger reads character features but the batch has none")
        B, T = batch.words.shape
        real = batch.char_lengths > 0  # padded words have no characters: leave them out
        chars = batch.chars[real]  # (N, C)
        _, final = self.char_core(self.char_embedding(chars), batch.char_lengths[real])
        out = final.new_zeros(B, T, final.shape[1])
        out[real] = final
        return out

    def inputs(self, batch: TagBatch) -> Tensor:
        """x_t for every token, (B, T, input_size)."""
        parts = [self.embedding(batch.words)]
        if len(batch.features) != len(self.extra_embeddings):
            raise ValueError(
                f"the tagger reads {len(self.extra_embeddings)} extra columns, "
                f"the batch has {len(batch.features)}"
            )
        parts += [emb(f) for emb, f in zip(self.extra_embeddings, batch.features)]
        if self.char_core is not None:
            parts.append(self.char_states(batch))
        return torch.cat(parts, dim=-1)

    def emissions(self, batch: TagBatch) -> Tensor:
        """Emission scores e_t (B, T, num_labels); zero-input rows at padding are ignored."""
        x = self.drop(self.inputs(batch))
        a, _ = self.core(x, batch.lengths)
        return self.emission(self.drop(a))

    def forward(self, batch: TagBatch) -> Tensor:
        return self.emissions(batch)

    def loss(self, batch: TagBatch) -> tuple[Tensor, int]:
        """Mean loss in nats per real token, and the number of real tokens."""
        if batch.labels is None:
            raise ValueError("the batch has no labels to score")
        e = self.emissions(batch)
        mask = batch.mask
        n = batch.num_tokens
        if self.crf is not None:
            # the forward algorithm sums many terms: at least float32, even under autocast
            nll = self.crf.nll(_full(e), batch.labels, mask)
            return nll.sum() / n, n
        total = F.cross_entropy(_full(e[mask]), batch.labels[mask], reduction="sum")
        return total / n, n

    @torch.no_grad()
    def predict(self, batch: TagBatch) -> list[list[int]]:
        """The label ids of each sentence, cut to its length (argmax or Viterbi)."""
        e = self.emissions(batch)
        if self.crf is not None:
            return self.crf.decode(_full(e), batch.mask)
        best = e.argmax(dim=-1).tolist()
        return [row[:n] for row, n in zip(best, batch.lengths.tolist())]


__all__ = ["SequenceTagger", "TagBatch", "TaggerConfig"]
