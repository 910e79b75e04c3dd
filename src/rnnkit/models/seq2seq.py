"""The encoder-decoder: a source sequence in, a new target sequence of any length out.

    e_1 .. e_S, c = Encoder(x_1 .. x_S)          RecurrentCore: uni- or bidirectional,
                                                 c its final state (the fixed-length vector)
    s_0 = bridge(c)                              tanh(W_b c + b_b); the identity when the
                                                 sizes already match (one layer, one direction)
    s_t = RNN(s_{t-1}, [E y_{t-1}; ...])         teacher forcing: y_{t-1} is the reference
    P(y_t | y_<t, x) = softmax(W_o o_t + b_o)

``attention="none"`` is the seeds' fixed-vector model (Cho et al. 2014): the decoder reads
c at every step beside the previous word, and the output layer sees s_t, c and the previous
word, o_t = tanh(W_c [s_t; c; E y_{t-1}]) (their deep output). The source reaches the decoder only through c.

With attention (Luong et al. 2015) the decoder looks back at every encoder state:
a_t = softmax over the real source steps of score(s_t, e_i), context q_t = sum_i a_ti e_i,
o_t = tanh(W_c [q_t; s_t]); ``score`` is ``dot`` (s_t . e_i), ``general`` (s_t W e_i) or
``bahdanau`` (additive: v . tanh(W_s s_t + W_e e_i)). ``input_feeding`` feeds o_{t-1} to the
next step beside E y_{t-1}, so the decoder knows what it attended to; training then runs
the decoder one step at a time, where without it the whole target runs through the fused
kernel at once.

Token ids: 0 is padding, and ``bos_id``/``eos_id`` start and end every target. Shapes:
src (B, S) int64, src_lengths (B,), tgt_in (B, T) = [<s>, y_1 .. y_n], tgt_out (B, T) =
[y_1 .. y_n, </s>], both padded with 0. The model does no I/O and prints nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.choices import ATTENTIONS, CELLS, NONLINEARITIES
from rnnkit.errors import ConfigError, did_you_mean
from rnnkit.models.config import check_choice, check_types
from rnnkit.models.core import RecurrentCore, make_rnn

PAD_ID = 0


@dataclass
class Seq2SeqConfig:
    """Shapes and options of a :class:`Seq2Seq`.

    ``hidden_size`` is the decoder's state and the encoder's per direction; ``num_layers``
    both stacks'. ``dropout`` applies to the embeddings, between stacked layers and before
    the output layer. ``label_smoothing`` spreads that much of each target's probability
    over the vocabulary in the training loss (validation reports the plain loss).
    """

    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    bos_id: int = 2
    eos_id: int = 3
    cell: str = "gru"
    nonlinearity: str = "tanh"
    embedding_size: int = 256
    hidden_size: int = 512
    num_layers: int = 1
    bidirectional: bool = False
    attention: str = "none"
    input_feeding: bool = True
    dropout: float = 0.3
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def memory_size(self) -> int:
        """Size of an encoder state e_i (and of c)."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def validate(self) -> None:
        check_types(self, "model")
        check_choice("cell", self.cell, CELLS)
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        check_choice("attention", self.attention, ATTENTIONS)
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ConfigError(
                f"--nonlinearity {self.nonlinearity} applies to --cell rnn only, "
                f"not --cell {self.cell}."
            )
        for name in ("src_vocab_size", "tgt_vocab_size"):
            if getattr(self, name) < 4:
                raise ConfigError(f"{name} must be at least 4, not {getattr(self, name)}.")
        for name in ("embedding_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}."
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), not {self.dropout}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}.")
        if self.attention == "dot" and self.bidirectional:
            raise ConfigError(
                "--attention dot compares decoder and encoder states directly, so it needs "
                "a unidirectional encoder; use --attention general or bahdanau."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Seq2SeqConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(f"unknown translator setting {key!r}{did_you_mean(key, names)}.")
        return cls(**dict(data))


def _wide(x: Tensor) -> Tensor:
    """At least float32 (softmax under bf16 autocast), float64 kept (exact checks)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class Attention(nn.Module):
    """Luong's dot and general scores, Bahdanau's additive score; softmax over real steps."""

    def __init__(self, kind: str, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.w = nn.Linear(query_size, memory_size, bias=False)
        elif kind == "bahdanau":
            self.w_query = nn.Linear(query_size, query_size, bias=False)
            self.w_memory = nn.Linear(memory_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """What the scores compare queries with, computed once per source."""
        return self.w_memory(memory) if self.kind == "bahdanau" else memory

    def forward(
        self, query: Tensor, memory: Tensor, keys: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query (N, T, Q), memory (A, S, M), mask (A, S) -> context (N, T, M), weights (N, T, S).

        N = A r: rows a r .. a r + r - 1 read source a (a search's beams share their source
        instead of copying it), so the scores of a source's r rows are one batched product.
        """
        N, T = query.shape[0], query.shape[1]
        A = memory.shape[0]
        q = query.reshape(A, (N // A) * T, query.shape[2])
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(self.w_query(q)[:, :, None] + keys[:, None])).squeeze(-1)
        elif self.kind == "general":
            scores = self.w(q) @ keys.transpose(1, 2)
        else:
            scores = q @ keys.transpose(1, 2)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(_wide(scores), dim=-1).to(memory.dtype)
        context = weights @ memory
        return context.reshape(N, T, -1), weights.reshape(N, T, -1)


class DecoderState(NamedTuple):
    """Everything one decoder step needs; rows are batch entries (hidden: dimension 1)."""

    hidden: Tensor | tuple[Tensor, Tensor]  # (L, N, H), or an LSTM's (h, c)
    feed: Tensor | None  # (N, H): o_{t-1} under input feeding
    memory: Tensor  # (A, S, M) encoder states; row n reads source n // (N / A)
    keys: Tensor  # (A, S, *) what attention scores against
    mask: Tensor  # (A, S) real source steps
    context: Tensor  # (N, M) the fixed vector c


class Seq2Seq(nn.Module):
    """Encoder-decoder; see the module docstring."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        cfg = self.config = config
        E, H, M = cfg.embedding_size, cfg.hidden_size, cfg.memory_size
        self.src_embedding = nn.Embedding(cfg.src_vocab_size, E, padding_idx=PAD_ID)
        self.tgt_embedding = nn.Embedding(cfg.tgt_vocab_size, E, padding_idx=PAD_ID)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = RecurrentCore(
            cfg.cell, E, H, cfg.num_layers, cfg.bidirectional, cfg.nonlinearity, cfg.dropout
        )
        # the bridge from c to s_0: needed when sizes or the layer count differ
        self.bridge = nn.Linear(M, cfg.num_layers * H) if (M != H or cfg.num_layers > 1) else None
        fixed = cfg.attention == "none"
        feeding = not fixed and cfg.input_feeding
        dec_in = E + (M if fixed else 0) + (H if feeding else 0)
        self.decoder = make_rnn(cfg.cell, dec_in, H, cfg.num_layers, False, cfg.nonlinearity,
                                cfg.dropout)  # fmt: skip
        self.attention = None if fixed else Attention(cfg.attention, H, M)
        # o_t, H wide: from [s_t; c; E y_{t-1}] in the fixed-vector model (Cho et al.'s deep
        # output, which keeps the H x V layer small), from [q_t; s_t] with attention
        self.combine = nn.Linear(H + M + E if fixed else M + H, H, bias=fixed)
        self.output = nn.Linear(H, cfg.tgt_vocab_size)

    # -- the encoder -------------------------------------------------------------------------

    def encode(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Read the sources; the decoder's state before its first step."""
        memory, final = self.encoder(self.drop(self.src_embedding(src)), src_lengths)
        mask = (
            torch.arange(src.shape[1], device=src.device)[None, :]
            < src_lengths.to(src.device)[:, None]
        )
        B, L, H = src.shape[0], self.config.num_layers, self.config.hidden_size
        if self.bridge is not None:
            h0 = torch.tanh(self.bridge(final)).view(B, L, H).transpose(0, 1).contiguous()
        else:
            h0 = final[None].contiguous()
        hidden: Tensor | tuple[Tensor, Tensor] = (
            (h0, torch.zeros_like(h0)) if self.config.cell == "lstm" else h0
        )
        feed = None
        if self.attention is not None and self.config.input_feeding:
            feed = memory.new_zeros(B, H)
        keys = self.attention.keys(memory) if self.attention is not None else memory[:, :0]
        return DecoderState(hidden, feed, memory, keys, mask, final)

    # -- the decoder -------------------------------------------------------------------------

    def _outputs(self, emb: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Decoder over target inputs emb (B, T, E) at once: pre-output o (B, T, *)."""
        if self.attention is None:
            ctx = state.context[:, None].expand(-1, emb.shape[1], -1)
            s, hidden = self.decoder(torch.cat([emb, ctx], -1), state.hidden)
            o = torch.tanh(self.combine(torch.cat([s, ctx, emb], -1)))
            return o, state._replace(hidden=hidden)
        if state.feed is None:
            s, hidden = self.decoder(emb, state.hidden)
            q, _ = self.attention(s, state.memory, state.keys, state.mask)
            o = torch.tanh(self.combine(torch.cat([q, s], -1)))
            return o, state._replace(hidden=hidden)
        outs = []
        for t in range(emb.shape[1]):  # input feeding: each step needs the last o_t
            o_t, state = self._outputs_fed(emb[:, t], state)
            outs.append(o_t)
        return torch.stack(outs, 1), state

    def _outputs_fed(self, emb_t: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        assert self.attention is not None and state.feed is not None
        x = torch.cat([emb_t, state.feed], -1)[:, None]
        s, hidden = self.decoder(x, state.hidden)
        q, _ = self.attention(s, state.memory, state.keys, state.mask)
        o = torch.tanh(self.combine(torch.cat([q, s], -1)))[:, 0]
        return o, state._replace(hidden=hidden, feed=o)

    def _features(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """o_t (B, T, H) of every target position under teacher forcing."""
        state = self.encode(src, src_lengths)
        o, _ = self._outputs(self.drop(self.tgt_embedding(tgt_in)), state)
        return o

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits (B, T, V) of every target position under teacher forcing."""
        return self.output(self.drop(self._features(src, src_lengths, tgt_in)))

    def loss(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor,
        smoothing: float | None = None,
    ) -> Tensor:  # fmt: skip
        """Mean cross-entropy (nats) over the real target tokens (padding ignored)."""
        real = tgt_out != PAD_ID
        # the H x V output layer, the costliest part, only at real positions
        o = self._features(src, src_lengths, tgt_in)[real]
        logits = self.output(self.drop(o))
        ls = self.config.label_smoothing if smoothing is None else smoothing
        return F.cross_entropy(_wide(logits), tgt_out[real], label_smoothing=ls)

    @torch.no_grad()
    def token_log_probs(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor
    ) -> Tensor:
        """log P(tgt_out[b, t] | ...) (B, T), 0 at padding: a forced pass."""
        logits = _wide(self(src, src_lengths, tgt_in))
        lp = torch.log_softmax(logits, -1).gather(-1, tgt_out[..., None]).squeeze(-1)
        return lp.masked_fill(tgt_out == PAD_ID, 0.0)

    # -- one step at a time, for search -------------------------------------------------------

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Log-probabilities (N, V) of the next token after ``tokens`` (N,), the new state."""
        emb = self.drop(self.tgt_embedding(tokens))
        if state.feed is not None:
            o, state = self._outputs_fed(emb, state)
        else:
            o3, state = self._outputs(emb[:, None], state)
            o = o3[:, 0]
        return torch.log_softmax(_wide(self.output(self.drop(o))), -1), state

    @torch.no_grad()
    def attention_weights(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """(B, T, S): where each target position looked (attention models only)."""
        if self.attention is None:
            raise ConfigError("this translator has no attention (it was trained without).")
        state = self.encode(src, src_lengths)
        rows = []
        for t in range(tgt_in.shape[1]):
            emb = self.tgt_embedding(tgt_in[:, t])
            if state.feed is not None:
                x = torch.cat([emb, state.feed], -1)[:, None]
            else:
                x = emb[:, None]
            s, hidden = self.decoder(x, state.hidden)
            q, w = self.attention(s, state.memory, state.keys, state.mask)
            o = torch.tanh(self.combine(torch.cat([q, s], -1)))[:, 0]
            state = state._replace(hidden=hidden, feed=o if state.feed is not None else None)
            rows.append(w[:, 0])
        return torch.stack(rows, 1)


class TranslatorDecoder:
    """A :class:`Seq2Seq` as :mod:`rnnkit.search` sees it: one step, rows selectable."""

    def __init__(self, model: Seq2Seq) -> None:
        self.model = model

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        return self.model.step(tokens, state)

    def select(self, state: DecoderState, index: Tensor) -> DecoderState:
        """Rows ``index`` of the state. The sources stay one copy per input while each
        input's rows stay together (as every search keeps them); otherwise one per row."""
        h = state.hidden
        hidden = (h[0][:, index], h[1][:, index]) if isinstance(h, tuple) else h[:, index]
        per = state.context.shape[0] // state.memory.shape[0]  # rows per source now
        source = index // per
        n = index.shape[0]
        groups = torch.unique_consecutive(source)
        if n % groups.shape[0] == 0 and bool(
            (source.view(groups.shape[0], -1) == groups[:, None]).all()
        ):
            pick = groups
        else:
            pick = source
        A = state.memory.shape[0]
        if pick.shape[0] == A and torch.equal(pick, torch.arange(A, device=pick.device)):
            # every source stays, in order (a beam step that only reorders beams): no copy
            memory, keys, mask = state.memory, state.keys, state.mask
        else:
            memory, mask = state.memory.index_select(0, pick), state.mask.index_select(0, pick)
            # dot and general attention score against the memory itself: one copy of both
            keys = memory if state.keys is state.memory else state.keys.index_select(0, pick)
        return DecoderState(
            hidden,
            None if state.feed is None else state.feed[index],
            memory,
            keys,
            mask,
            state.context[index],
        )


__all__ = ["ATTENTIONS", "PAD_ID", "Attention", "DecoderState", "Seq2Seq", "Seq2SeqConfig",
           "TranslatorDecoder"]  # fmt: skip
