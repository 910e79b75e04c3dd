"""Sentence probabilities under a neural language model, batched and exact.

Each sentence is scored on its own, from the zero state: the model reads ``<s> w_1 .. w_n``
and predicts ``w_1 .. w_n </s>`` (KenLM's convention: the end marker is predicted and counted,
the start marker is context only). A model trained in stream mode has no ``<s>``; it reads
``</s>`` (the end of the previous line, as in training) in its place.

Sentences are sorted by length and scored in padded batches; padded positions are never
scored (only real positions reach the output layer), and a batch longer than ``max_tokens``
allows is read in windows with the state carried, so any sentence length works. The result
does not depend on the batch size or the order of the sentences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnkit.models import LanguageModel
from rnnkit.ngram.model import SentenceScores
from rnnkit.text.sentences import PAD, Sentences, encode_lines, padded
from rnnkit.text.vocab import Vocab

LN10 = math.log(10.0)


def markers(vocab: Vocab) -> tuple[int, int]:
    """The ids a sentence starts from and ends with: (``<s>`` or ``</s>``, ``</s>``)."""
    if vocab.eos_id is None:
        raise ValueError("a word vocabulary has </s>")
    return (vocab.bos_id if vocab.bos_id is not None else vocab.eos_id), vocab.eos_id


@torch.inference_mode()
def sentence_log_probs(
    model: LanguageModel,
    sents: Sentences,
    bos_id: int,
    eos_id: int,
    batch_size: int = 64,
    max_tokens: int = 4096,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """log P of every predicted token in nats, float64, flat.

    Sentence ``s`` owns entries ``offsets[s] + s`` to ``offsets[s + 1] + s`` (its words then
    ``</s>``: one more than its word count).
    """
    was_training = model.training
    model.eval()
    try:
        S = len(sents)
        lengths = sents.lengths
        out_offsets = sents.offsets + np.arange(S + 1)
        out = np.zeros(int(out_offsets[-1]), dtype=np.float64)
        order = np.argsort(lengths, kind="stable")
        for i in range(0, S, batch_size):
            rows = order[i : i + batch_size]
            x, y = padded(sents, rows, bos_id, eos_id)
            B, L = x.shape
            where = out_offsets[rows][:, None] + np.arange(L)[None, :]  # output index, (B, L)
            step = max(1, max_tokens // B)
            state = None
            for t in range(0, L, step):
                xt = torch.from_numpy(x[:, t : t + step]).to(device)
                yt = torch.from_numpy(y[:, t : t + step]).to(device)
                h, state = model.features(xt, state)
                keep = yt != PAD
                logp = model.head.score(h[keep], yt[keep])
                pos = where[:, t : t + step][keep.cpu().numpy()]
                out[pos] = logp.double().cpu().numpy()
        return out
    finally:
        model.train(was_training)


def sentence_loss(
    model: LanguageModel,
    sents: Sentences,
    bos_id: int,
    eos_id: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of the sentences and the number of predictions."""
    logp = sentence_log_probs(model, sents, bos_id, eos_id, batch_size=batch_size, device=device)
    return -float(logp.sum()), int(logp.shape[0])


@dataclass
class ScoreResult:
    """Sentence scores of a text, KenLM's convention (log10; ``</s>`` predicted, ``<s>`` not).

    ``scores`` holds every predicted token's log10 probability, sentence after sentence, and
    its OOV flag (``</s>`` is never an OOV); ``tokens`` the words of each sentence as the
    tokeniser cut them (``</s>`` not included).
    """

    file: str
    texts: list[str]
    tokens: list[list[str]]
    scores: SentenceScores

    @property
    def num_sentences(self) -> int:
        return self.scores.num_sentences

    @property
    def num_tokens(self) -> int:
        """Predicted tokens: words and one ``</s>`` per sentence."""
        return self.scores.num_tokens

    @property
    def num_words(self) -> int:
        return self.num_tokens - self.num_sentences

    @property
    def num_oov(self) -> int:
        return self.scores.num_oov

    @property
    def oov_rate(self) -> float:
        """OOVs per word (``</s>`` not counted)."""
        return self.num_oov / self.num_words if self.num_words else 0.0

    @property
    def total_log10(self) -> float:
        return self.scores.total_log10

    @property
    def perplexity(self) -> float:
        """``10 ** (-total / tokens)``, OOVs included (KenLM's "Perplexity including OOVs")."""
        return self.scores.perplexity(include_oov=True)

    @property
    def perplexity_excl_oov(self) -> float:
        """The same with the OOV tokens left out of the total and the count."""
        return self.scores.perplexity(include_oov=False)

    def sentence_log10(self) -> np.ndarray:
        return self.scores.sentence_log10()

    def summary(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sentences": self.num_sentences,
            "tokens": self.num_tokens,
            "oovs": self.num_oov,
            "log10_prob": self.total_log10,
            "perplexity": self.perplexity,
            "perplexity_excl_oov": self.perplexity_excl_oov,
        }

    def records(self, per_token: bool = False) -> Iterator[dict[str, Any]]:
        """One dict per sentence: ``text``, ``log10_prob``, ``tokens`` (count, ``</s>``
        included), ``oovs``, and with ``per_token`` a ``per_token`` list of
        ``{"token", "log10_prob", "oov"}``."""
        sums = self.sentence_log10()
        off, logp, oov = self.scores.offsets, self.scores.token_log10, self.scores.oov
        for s, text in enumerate(self.texts):
            a, b = int(off[s]), int(off[s + 1])
            rec: dict[str, Any] = {
                "text": text,
                "log10_prob": float(sums[s]),
                "tokens": b - a,
                "oovs": int(oov[a:b].sum()),
            }
            if per_token:
                words = [*self.tokens[s], "</s>"]
                rec["per_token"] = [
                    {"token": w, "log10_prob": float(p), "oov": bool(o)}
                    for w, p, o in zip(words, logp[a:b].tolist(), oov[a:b].tolist())
                ]
            yield rec


def score_lines(
    model: LanguageModel,
    vocab: Vocab,
    lines: Iterable[str],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    file: str = "<sentences>",
) -> ScoreResult:
    """Score each line as one sentence (an empty line is ``<s> </s>``)."""
    bos, eos = markers(vocab)
    enc = encode_lines(lines, vocab)
    sents = enc.sentences
    logp = sentence_log_probs(model, sents, bos, eos, batch_size=batch_size, device=device)
    S = len(sents)
    offsets = sents.offsets + np.arange(S + 1)
    oov = np.zeros(logp.shape[0], dtype=bool)
    word_pos = np.arange(sents.ids.shape[0]) + np.repeat(np.arange(S), sents.lengths)
    oov[word_pos] = enc.oov
    scores = SentenceScores(logp / LN10, offsets.astype(np.int64), oov)
    return ScoreResult(file, enc.texts, enc.tokens, scores)


def token_scorer(
    model: LanguageModel, vocab: Vocab, batch_size: int = 64, device: torch.device | str = "cpu"
) -> Callable[[Sequence[str]], list[np.ndarray]]:
    """A scorer for rescoring and interpolation: sentences to per-token log10 probabilities.

    Each sentence is tokenised as the training text was; its array holds one log10
    probability per word and one for ``</s>``, last (see
    :data:`rnnkit.evaluation.interpolation.TokenScorer`).
    """
    bos, eos = markers(vocab)

    def score(sentences: Sequence[str]) -> list[np.ndarray]:
        enc = encode_lines(sentences, vocab)
        logp = sentence_log_probs(model, enc.sentences, bos, eos, batch_size, device=device)
        log10 = logp / LN10
        ends = enc.sentences.offsets + np.arange(len(enc.sentences) + 1)
        return [log10[ends[s] : ends[s + 1]] for s in range(len(enc.sentences))]

    return score


__all__ = [
    "ScoreResult",
    "markers",
    "score_lines",
    "sentence_log_probs",
    "sentence_loss",
    "token_scorer",
]
