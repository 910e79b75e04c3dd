"""The one-to-many model: one input per example in, a sequence of tokens out.

The seeds' one-to-many network (a caption from an image vector, a sentence from a class)::

    z   = E_c[label]  (``condition_kind="label"``)   or   tanh(W_z v + b_z)  (``"vector"``)
    a_0 = tanh(W_0 z + b_0)        --condition init | both     (a_0 = 0 with input)
    x_t = C[y_{t-1}] ; z           --condition input | both    (C[y_{t-1}] alone with init)
    a_t = RNN(a_{t-1}, x_t)        Elman, GRU or LSTM, one or more layers
    P(y_t | y_<t, z) = softmax(W_y a_t + b_y)

y_0 is ``<s>``; the target ends with ``</s>``. ``--condition init`` sets the first state
from the condition through a learned projection (one a_0 per layer, and c_0 too for an
LSTM), ``input`` feeds z beside the previous token at every step, ``both`` (the default)
does both. Training is teacher forcing: the loss is the cross-entropy of every real target
token (padding ignored), averaged over tokens.

:meth:`ConditionalGenerator.decoder` returns a :class:`ConditionalDecoder` for
:mod:`rnnkit.search` (greedy, sampling, beam search): ``step(tokens, state)`` runs torch's
single-step cell kernels with the same weights as the fused training pass, and the state is
batch-first (``h`` (N, L, H), ``c`` (N, L, H) or None, ``z`` (N, C)), so ``select`` is one
``index_select`` per tensor.

Shapes: tokens (B, T) int64 (``<s>`` then the target, padded at the end; padding never
changes a real position's output, the recurrence reads left to right); conditions (B,) int64
label ids or (B, D) float vectors. The model does no I/O and prints nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.choices import CELLS, NONLINEARITIES
from rnnkit.errors import ConfigError, did_you_mean
from rnnkit.models.config import check_choice, check_types
from rnnkit.models.core import make_rnn

CONDITION_KINDS = ("label", "vector")
CONDITIONINGS = ("init", "input", "both")


@dataclass
class ConditionalConfig:
    """Shapes and options of a :class:`ConditionalGenerator`.

    ``condition_kind`` ``label`` embeds one of ``num_labels`` class ids; ``vector`` reads
    ``vector_size`` floats (image features, ...). ``condition_size`` is the size of z (None:
    the embedding size). ``condition``: ``init`` (z sets a_0), ``input`` (z is fed at every
    step) or ``both``. ``dropout`` applies to the token embeddings, between stacked layers
    and to a_t before the output layer.
    """

    vocab_size: int = 0
    condition_kind: str = "label"
    num_labels: int = 0
    vector_size: int = 0
    condition: str = "both"
    condition_size: int | None = None
    embedding_size: int | None = None
    hidden_size: int = 256
    num_layers: int = 1
    cell: str = "lstm"
    nonlinearity: str = "tanh"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.validate()

    @property
    def input_size(self) -> int:
        """Size of the token embedding C[y]."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    @property
    def z_size(self) -> int:
        """Size of the condition's vector z."""
        return self.condition_size if self.condition_size is not None else self.input_size

    @property
    def feeds(self) -> bool:
        """Whether z is fed beside the token at every step."""
        return self.condition in ("input", "both")

    @property
    def inits(self) -> bool:
        """Whether z sets the first state a_0."""
        return self.condition in ("init", "both")

    def validate(self) -> None:
        check_types(self, "model")
        check_choice("condition-kind", self.condition_kind, CONDITION_KINDS)
        check_choice("condition", self.condition, CONDITIONINGS)
        check_choice("cell", self.cell, CELLS)
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ConfigError(
                f"--nonlinearity {self.nonlinearity} applies to --cell rnn only, "
                f"not --cell {self.cell}."
            )
        if self.vocab_size < 1:
            raise ConfigError(f"vocab_size must be at least 1, not {self.vocab_size}.")
        if self.condition_kind == "label" and self.num_labels < 1:
            raise ConfigError(
                f"a label-conditioned generator needs at least 1 label, not {self.num_labels}."
            )
        if self.condition_kind == "vector" and self.vector_size < 1:
            raise ConfigError(
                f"vector_size must be at least 1 for vector conditions, not {self.vector_size}."
            )
        for name in ("hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}."
                )
        for name in ("embedding_size", "condition_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {value}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), not {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConditionalConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(
                    f"unknown conditional generator setting {key!r}{did_you_mean(key, names)}."
                )
        return cls(**dict(data))


class DecoderState(NamedTuple):
    """A batch of decoder states, batch first: h (N, L, H), c (N, L, H) or None, z (N, C)."""

    h: Tensor
    c: Tensor | None
    z: Tensor


class ConditionalGenerator(nn.Module):
    """Condition -> z -> recurrent decoder over the target tokens; see the module docstring.

    Parameter names: ``embedding.weight`` (V, E); ``condition_embedding.weight`` (K, C) for
    labels or ``condition_projection.{weight,bias}`` (C, D) for vectors; ``init.{weight,
    bias}`` (L*H, C) (twice as many rows for an LSTM: a_0 then c_0) with ``init`` or
    ``both``; ``rnn.*`` the fused stack; ``head.{weight,bias}`` (V, H).
    """

    def __init__(self, config: ConditionalConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        V, H, L, C = config.vocab_size, config.hidden_size, config.num_layers, config.z_size
        self.embedding = nn.Embedding(V, config.input_size)
        self.condition_embedding: nn.Embedding | None = None
        self.condition_projection: nn.Linear | None = None
        if config.condition_kind == "label":
            self.condition_embedding = nn.Embedding(config.num_labels, C)
        else:
            self.condition_projection = nn.Linear(config.vector_size, C)
        self.lstm = config.cell == "lstm"
        self.init: nn.Linear | None = (
            nn.Linear(C, L * H * (2 if self.lstm else 1)) if config.inits else None
        )
        rnn_input = config.input_size + (C if config.feeds else 0)
        self.rnn = make_rnn(
            config.cell, rnn_input, H, L, nonlinearity=config.nonlinearity, dropout=config.dropout
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.rnn.reset_parameters()
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.condition_embedding is not None:
            nn.init.uniform_(self.condition_embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.head.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)

    # -- the condition ------------------------------------------------------------------------

    def encode(self, conditions: Tensor) -> Tensor:
        """z (B, C) of label ids (B,) or vectors (B, D)."""
        if self.condition_embedding is not None:
            return self.condition_embedding(conditions.long())
        assert self.condition_projection is not None
        w = self.condition_projection.weight
        return torch.tanh(self.condition_projection(conditions.to(w.dtype)))

    def initial_state(self, z: Tensor) -> DecoderState:
        """The state before ``<s>``: a_0 (and c_0) from z, or zeros; batch first."""
        B, L, H = z.shape[0], self.config.num_layers, self.config.hidden_size
        if self.init is None:
            h = z.new_zeros(B, L, H)
            return DecoderState(h, h.clone() if self.lstm else None, z)
        out = self.init(z)
        if self.lstm:
            h, c = out.split(L * H, dim=1)
            return DecoderState(torch.tanh(h).reshape(B, L, H), c.reshape(B, L, H), z)
        return DecoderState(torch.tanh(out).reshape(B, L, H), None, z)

    # -- training: the whole target at once ---------------------------------------------------

    def _inputs(self, tokens: Tensor, z: Tensor) -> Tensor:
        x = self.drop(self.embedding(tokens))
        if self.config.feeds:
            x = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1).to(x.dtype)], dim=2)
        return x

    def logits(self, conditions: Tensor, tokens: Tensor) -> Tensor:
        """(B, T, V) logits of the next token after each input token (teacher forcing)."""
        z = self.encode(conditions)
        state = self.initial_state(z)
        h0 = state.h.transpose(0, 1).contiguous()  # torch's (L, B, H)
        init: Any = h0 if state.c is None else (h0, state.c.transpose(0, 1).contiguous())
        a, _ = self.rnn(self._inputs(tokens, z), init)
        return self.head(self.drop(a))

    def forward(self, conditions: Tensor, tokens: Tensor) -> Tensor:
        return self.logits(conditions, tokens)

    def loss(
        self, conditions: Tensor, tokens: Tensor, targets: Tensor, ignore_index: int = -100
    ) -> Tensor:
        """Mean cross-entropy (nats per target token) of ``targets`` (B, T) given ``tokens``
        (B, T), the targets shifted right behind ``<s>``; ``ignore_index`` marks padding."""
        logits = self.logits(conditions, tokens)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index
        )

    def token_log_probs(self, conditions: Tensor, tokens: Tensor, targets: Tensor) -> Tensor:
        """log P(target_t | ...) (B, T) in nats; zero where the target is negative (padding)."""
        logp = torch.log_softmax(self.logits(conditions, tokens).float(), dim=-1)
        real = targets >= 0
        picked = logp.gather(2, targets.clamp(min=0)[..., None]).squeeze(2)
        return picked * real

    # -- generation: one step at a time -------------------------------------------------------

    def decoder(self, conditions: Tensor) -> tuple[ConditionalDecoder, DecoderState]:
        """A decoder for :mod:`rnnkit.search` and its state before ``<s>`` for each condition
        (label ids (N,) or vectors (N, D), on the model's device)."""
        return ConditionalDecoder(self), self.initial_state(self.encode(conditions))

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One token per row, (N,) ids: log-probabilities of the next token (N, V) and the
        new state, by torch's single-step cell kernels (the fused stack's weights)."""
        x = self.embedding(tokens)
        if self.config.feeds:
            x = torch.cat([x, state.z.to(x.dtype)], dim=1)
        cell, relu = self.config.cell, self.config.nonlinearity == "relu"
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k in range(self.config.num_layers):
            w = [getattr(self.rnn, f"{n}_l{k}") for n in _PARAMS]
            if state.c is not None:
                h, c = torch.lstm_cell(x, (state.h[:, k], state.c[:, k]), *w)
                cs.append(c)
            elif cell == "gru":
                h = torch.gru_cell(x, state.h[:, k], *w)
            elif relu:
                h = torch.rnn_relu_cell(x, state.h[:, k], *w)
            else:
                h = torch.rnn_tanh_cell(x, state.h[:, k], *w)
            hs.append(h)
            x = h
        logp = torch.log_softmax(self.head(x).float(), dim=-1)
        new_c = torch.stack(cs, 1) if cs else None
        return logp, DecoderState(torch.stack(hs, 1), new_c, state.z)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class ConditionalDecoder:
    """The :class:`rnnkit.search.Decoder` of a :class:`ConditionalGenerator`."""

    def __init__(self, model: ConditionalGenerator) -> None:
        self.model = model

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        return self.model.step(tokens, state)

    def select(self, state: DecoderState, index: Tensor) -> DecoderState:
        """Rows ``index`` of the state, in that order."""
        c = None if state.c is None else state.c.index_select(0, index)
        return DecoderState(state.h.index_select(0, index), c, state.z.index_select(0, index))


class GuidedDecoder:
    """Contrastive ("classifier-free") guidance for a label-conditioned generator (Sanchez et
    al. 2023, after Ho and Salimans 2022): each step's scores are

        log_softmax((1 + g) log P(y | y_<t, label) - g log P(y | y_<t, others))

    where ``others`` is the mean log-probability under every other label, so words that the
    requested label makes likelier than the others do are pushed up. ``g`` 0 is the plain
    model. The state is the pair of states, one per side, advanced on the same tokens."""

    def __init__(self, model: ConditionalGenerator, guidance: float) -> None:
        self.model = model
        self.guidance = guidance

    def initial_state(self, labels: Tensor) -> tuple[DecoderState, DecoderState, int]:
        """The guided rows' states and, stacked after them, (L - 1) rows per label: the
        other labels', which the guidance contrasts with."""
        n_labels = self.model.config.num_labels
        others = torch.stack(
            [torch.tensor([j for j in range(n_labels) if j != int(i)]) for i in labels.cpu()]
        ).to(labels.device)  # (N, L - 1)
        own = self.model.initial_state(self.model.encode(labels))
        contrast = self.model.initial_state(self.model.encode(others.reshape(-1)))
        return own, contrast, n_labels - 1

    def step(
        self, tokens: Tensor, state: tuple[DecoderState, DecoderState, int]
    ) -> tuple[Tensor, tuple[DecoderState, DecoderState, int]]:
        own, contrast, k = state
        logp, own = self.model.step(tokens, own)
        other, contrast = self.model.step(tokens.repeat_interleave(k), contrast)
        mean_other = other.view(len(tokens), k, -1).mean(1)
        g = self.guidance
        return torch.log_softmax((1 + g) * logp - g * mean_other, dim=-1), (own, contrast, k)

    def select(
        self, state: tuple[DecoderState, DecoderState, int], index: Tensor
    ) -> tuple[DecoderState, DecoderState, int]:
        own, contrast, k = state
        rows = (index[:, None] * k + torch.arange(k, device=index.device)).reshape(-1)
        select = ConditionalDecoder(self.model).select
        return select(own, index), select(contrast, rows), k


__all__ = [
    "CONDITIONINGS",
    "CONDITION_KINDS",
    "ConditionalConfig",
    "ConditionalDecoder",
    "ConditionalGenerator",
    "DecoderState",
    "GuidedDecoder",
]
