"""The many-to-one model: a sequence in, one class out (sentence polarity, spoken digits).

    x_t = C[token_t] (``input="tokens"``) or the t-th feature frame (``input="frames"``)
    a_1 .. a_T = RecurrentCore(x_1 .. x_T)             only the real steps, never padding
    h = pool(a_1 .. a_T)                               last | mean | max | attention
    o = W h + b                                        (B, 1) for two classes, else (B, C)

Two classes: one logit, P(class 1) = sigmoid(o), binary cross-entropy (the seeds' loss).
More: softmax over C logits, cross-entropy. Pooling runs over each sequence's real steps:

- ``last``: the core's final state (for a bidirectional core, the forward state after the
  last real step beside the backward state after reading back to step 0);
- ``mean`` / ``max``: the mean / elementwise maximum of a_t over t < length;
- ``attention``: additive attention (Yang et al. 2016): u_t = tanh(W_u a_t + b_u),
  s_t = v . u_t with a learned scoring vector v, weights softmax(s) over the real steps,
  h = sum_t w_t a_t.

So a sequence gets the same probabilities alone or inside any padded batch.

Shapes: tokens (B, T) int64 or frames (B, T, F) float; lengths (B,) int64, each >= 1;
labels (B,) int64 class ids. The model does no I/O and prints nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.choices import CELLS, NONLINEARITIES
from rnnkit.errors import ConfigError, did_you_mean
from rnnkit.models.config import check_choice, check_types
from rnnkit.models.core import RecurrentCore

INPUTS = ("tokens", "frames")
POOLINGS = ("last", "mean", "max", "attention")


@dataclass
class ClassifierConfig:
    """Shapes and options of a :class:`SequenceClassifier`.

    ``input`` ``tokens`` reads token ids through an embedding of ``vocab_size`` rows of
    ``embedding_size`` (None: ``hidden_size``); ``frames`` reads ``num_features`` real values
    per step (e.g. MFCCs). ``dropout`` applies to the inputs, between stacked layers and to
    the pooled vector.
    """

    num_classes: int = 2
    input: str = "tokens"
    vocab_size: int = 0
    embedding_size: int | None = None
    num_features: int = 0
    hidden_size: int = 128
    num_layers: int = 1
    # defaults: what did best on sentences and recordings nobody tuned for (rt-polarity,
    # free spoken digits): a bidirectional LSTM, max pooling, dropout 0.5
    cell: str = "lstm"
    nonlinearity: str = "tanh"
    bidirectional: bool = True
    dropout: float = 0.5
    skip: bool = False
    pooling: str = "max"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def input_size(self) -> int:
        """Size of x_t, the vector the first recurrent layer reads."""
        if self.input == "frames":
            return self.num_features
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    def validate(self) -> None:
        check_types(self, "model")
        check_choice("input", self.input, INPUTS)
        check_choice("cell", self.cell, CELLS)
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        check_choice("pooling", self.pooling, POOLINGS)
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ConfigError(
                f"--nonlinearity {self.nonlinearity} applies to --cell rnn only, "
                f"not --cell {self.cell}."
            )
        if self.input == "tokens" and self.vocab_size < 1:
            raise ConfigError(f"vocab_size must be at least 1, not {self.vocab_size}.")
        if self.input == "frames" and self.num_features < 1:
            raise ConfigError(
                f"num_features must be at least 1 for frame input, not {self.num_features}."
            )
        for name in ("hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}."
                )
        if self.embedding_size is not None and self.embedding_size < 1:
            raise ConfigError(f"--embedding-size must be at least 1, not {self.embedding_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), not {self.dropout}.")
        if self.num_classes < 2:
            raise ConfigError(
                f"a classifier needs at least 2 classes, not {self.num_classes}; "
                "check the labels of the training data."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(f"unknown classifier setting {key!r}{did_you_mean(key, names)}.")
        return cls(**dict(data))


def length_mask(lengths: Tensor, T: int) -> Tensor:
    """(B, T) bool, True at the real steps t < length."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class AdditiveAttention(nn.Module):
    """Attention pooling: w = softmax over real steps of v . tanh(W_u a_t + b_u)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)  # the learned scoring vector v

    def weights(self, a: Tensor, mask: Tensor) -> Tensor:
        """Attention weights (B, T): zero at padding, each row sums to one."""
        s = self.score(torch.tanh(self.proj(a))).squeeze(-1)
        return torch.softmax(s.masked_fill(~mask, float("-inf")), dim=1)

    def forward(self, a: Tensor, mask: Tensor) -> Tensor:
        """(B, T, D) states -> (B, D) pooled vector."""
        return torch.einsum("bt,btd->bd", self.weights(a, mask), a)


class SequenceClassifier(nn.Module):
    """Input -> recurrent core -> pooling over the real steps -> linear; see the module doc.

    Parameter names: ``embedding.weight`` (V, E); ``core.rnn.weight_ih_l{k}`` etc. (the
    fused stack; ``core.layers.{k}.*`` with ``skip``); ``attention.*``; ``head.weight``
    (K, D) and ``head.bias`` (K,) with K = 1 for two classes, else C.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding: nn.Embedding | None = None
        if config.input == "tokens":
            self.embedding = nn.Embedding(config.vocab_size, config.input_size)
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.drop = nn.Dropout(config.dropout)
        self.core = RecurrentCore(
            config.cell,
            config.input_size,
            config.hidden_size,
            config.num_layers,
            config.bidirectional,
            config.nonlinearity,
            config.dropout,
            config.skip,
        )
        D = self.core.output_size
        self.attention: AdditiveAttention | None = (
            AdditiveAttention(D) if config.pooling == "attention" else None
        )
        self.head = nn.Linear(D, 1 if config.num_classes == 2 else config.num_classes)

    @property
    def binary(self) -> bool:
        return self.config.num_classes == 2

    def pooled(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled vector h (B, D) of each sequence."""
        if self.embedding is not None:
            x = self.embedding(inputs)
        else:
            x = inputs.to(self.head.weight.dtype)
        B, T = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        out, final = self.core(self.drop(x), lengths)
        pooling = self.config.pooling
        if pooling == "last":
            return self.drop(final)
        mask = length_mask(lengths, T)
        if pooling == "mean":
            total = out.masked_fill(~mask[..., None], 0.0).sum(1)
            h = total / lengths[:, None].to(out.dtype)
        elif pooling == "max":
            h = out.masked_fill(~mask[..., None], float("-inf")).amax(1)
        else:
            assert self.attention is not None
            h = self.attention(out, mask)
        return self.drop(h)

    def logits(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, 1) logits of class 1 for two classes, else (B, C)."""
        return self.head(self.pooled(inputs, lengths))

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.logits(inputs, lengths)

    def loss(self, inputs: Tensor, lengths: Tensor | None, labels: Tensor) -> Tensor:
        """Mean cross-entropy (nats per sequence): binary with a sigmoid, else softmax."""
        o = self.logits(inputs, lengths)
        labels = labels.to(o.device)
        if self.binary:
            return F.binary_cross_entropy_with_logits(o.squeeze(1), labels.to(o.dtype))
        return F.cross_entropy(o, labels.long())

    def probabilities(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C) class probabilities; for two classes the columns are 1 - p and p."""
        o = self.logits(inputs, lengths)
        if self.binary:
            p = torch.sigmoid(o)
            return torch.cat([1.0 - p, p], dim=1)
        return torch.softmax(o, dim=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_from_lm(
        self,
        lm_state: Mapping[str, Tensor],
        lm_vocab_tokens: list[str],
        own_vocab_tokens: list[str],
    ) -> str:
        """Start from a language model's weights (``rnnkit.models.RNNLanguageModel`` names).

        Copies the embedding row of every word both vocabularies hold (matched by token, so
        the two may order and size their vocabularies differently) and the recurrent weights
        ``rnn.{weight,bias}_{ih,hh}_l{k}`` of each layer both models have (the forward
        direction of a bidirectional core; a tensor whose shape differs, such as layer k > 0
        reading both directions, is left as initialised). Returns a one-line summary.
        Raises ConfigError when the cells, hidden sizes or embedding sizes disagree.
        """
        cfg = self.config
        if self.embedding is None:
            raise ConfigError(
                "a language model can initialise a classifier of tokens only, not of frames."
            )
        if "rnn.weight_hh_l0" not in lm_state:
            raise ConfigError(
                "the language model has no recurrent weights rnn.weight_hh_l0; "
                "only an --arch rnn language model can initialise a classifier."
            )
        w_hh = lm_state["rnn.weight_hh_l0"]
        lm_hidden = int(w_hh.shape[1])
        gates = int(w_hh.shape[0]) // max(lm_hidden, 1)
        lm_cell = {1: "rnn", 3: "gru", 4: "lstm"}.get(gates, "unknown")
        if lm_cell != cfg.cell:
            raise ConfigError(
                f"the language model's cell is {lm_cell} but the classifier's is {cfg.cell}; "
                f"use --cell {lm_cell}."
            )
        if lm_hidden != cfg.hidden_size:
            raise ConfigError(
                f"the language model's hidden size is {lm_hidden} but the classifier's is "
                f"{cfg.hidden_size}; use --hidden-size {lm_hidden}."
            )
        if "embedding.weight" not in lm_state:
            raise ConfigError(
                "the language model reads one-hot vectors and has no embedding to copy; "
                "train it with an embedding (without --one-hot)."
            )
        lm_emb = lm_state["embedding.weight"]
        if int(lm_emb.shape[1]) != cfg.input_size:
            raise ConfigError(
                f"the language model's embedding size is {lm_emb.shape[1]} but the "
                f"classifier's is {cfg.input_size}; use --embedding-size {lm_emb.shape[1]}."
            )
        if len(lm_vocab_tokens) != lm_emb.shape[0]:
            raise ConfigError(
                f"the language model's vocabulary has {len(lm_vocab_tokens)} tokens but its "
                f"embedding has {lm_emb.shape[0]} rows; the run directory is inconsistent."
            )
        if len(own_vocab_tokens) != self.embedding.num_embeddings:
            raise ConfigError(
                f"the classifier's vocabulary has {len(own_vocab_tokens)} tokens but its "
                f"embedding has {self.embedding.num_embeddings} rows."
            )

        lm_index = {t: i for i, t in enumerate(lm_vocab_tokens)}
        own_rows, lm_rows = [], []
        for i, token in enumerate(own_vocab_tokens):
            j = lm_index.get(token)
            if j is not None:
                own_rows.append(i)
                lm_rows.append(j)
        weight = self.embedding.weight
        if own_rows:
            weight[torch.tensor(own_rows)] = lm_emb[torch.tensor(lm_rows)].to(weight)

        own = self.state_dict()
        copied_layers = []
        lm_layers = sum(1 for k in lm_state if k.startswith("rnn.weight_hh_l"))
        for k in range(min(lm_layers, cfg.num_layers)):
            copied = 0
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                src = lm_state.get(f"rnn.{name}_l{k}")
                if self.core.layers is not None:
                    dst_name = f"core.layers.{k}.{name}_l0"
                else:
                    dst_name = f"core.rnn.{name}_l{k}"
                dst = own.get(dst_name)
                if src is not None and dst is not None and src.shape == dst.shape:
                    dst.copy_(src)
                    copied += 1
            if copied:
                copied_layers.append(f"{k} ({copied} tensors)")
        layers = ", ".join(copied_layers) if copied_layers else "none"
        return (
            f"copied {len(own_rows)} of {len(own_vocab_tokens)} embedding rows "
            f"(words shared with the language model's {len(lm_vocab_tokens)}) and the "
            f"recurrent weights of layers: {layers}."
        )


__all__ = [
    "INPUTS",
    "POOLINGS",
    "AdditiveAttention",
    "ClassifierConfig",
    "SequenceClassifier",
    "length_mask",
]
