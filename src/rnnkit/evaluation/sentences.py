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

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnkit.models import LanguageModel
from rnnkit.ngram.model import SentenceScores
from rnnkit.text.sentences import PAD, Sentences, encode_lines, padded
from rnnkit.text.vocab import UNK, Vocab

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
    """Score each line as one sentence (an empty line is ``<s> </s>``).

    Every token's score is kept (per-token arrays and each line's words): for a text of any
    size, :func:`iter_line_scores` holds a block of lines at a time.
    """
    return _score_block(model, vocab, lines, batch_size, device, file)[0]


def _score_block(
    model: LanguageModel,
    vocab: Vocab,
    lines: Iterable[str],
    batch_size: int,
    device: torch.device | str,
    file: str = "<sentences>",
) -> tuple[ScoreResult, np.ndarray]:
    """The lines' ScoreResult and the log-probabilities in nats it was made from."""
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
    return ScoreResult(file, enc.texts, enc.tokens, scores), logp


# -- long texts: a block of lines at a time, a very long line a window at a time ---------

#: Lines are scored in blocks of about this many characters (with their words as Python
#: strings, ~25 MB); a text shorter than one block is scored exactly as :func:`score_lines`
#: scores it, to the last bit.
BLOCK_CHARS = 1 << 21

#: A line longer than this is scored on its own, read a window of ``max_tokens`` at a
#: time with the state carried, its words tokenised a piece at a time: its score is
#: accumulated as it goes, and no per-token array or word list is kept.
LONG_LINE_CHARS = 1 << 20


class Sum:
    """A float64 running sum with Neumaier's compensation: exact to the last bit or two over
    any number of terms, in O(1) memory. A single term is returned as it is."""

    def __init__(self) -> None:
        self.total = 0.0
        self.carry = 0.0

    def add(self, x: float) -> None:
        t = self.total + x
        if abs(self.total) >= abs(x):
            self.carry += (self.total - t) + x
        else:
            self.carry += (x - t) + self.total
        self.total = t

    @property
    def value(self) -> float:
        return self.total + self.carry


@dataclass
class LineScore:
    """One line's score: ``log10_prob`` (``</s>`` included), ``tokens`` (predictions:
    words and ``</s>``), ``oovs``; with per-token output its words and their scores."""

    text: str
    log10_prob: float
    tokens: int
    oovs: int
    words: list[str] | None = None
    token_log10: np.ndarray | None = None
    oov: np.ndarray | None = None

    def record(self) -> dict[str, Any]:
        """The dict :meth:`ScoreResult.records` gives for the line."""
        rec: dict[str, Any] = {
            "text": self.text,
            "log10_prob": self.log10_prob,
            "tokens": self.tokens,
            "oovs": self.oovs,
        }
        if self.words is not None and self.token_log10 is not None and self.oov is not None:
            rec["per_token"] = [
                {"token": w, "log10_prob": float(p), "oov": bool(o)}
                for w, p, o in zip(
                    [*self.words, "</s>"], self.token_log10.tolist(), self.oov.tolist()
                )
            ]
        return rec


@dataclass
class ScoreTotals:
    """The totals of a text scored line by line (the figures of :class:`ScoreResult`'s
    summary), accumulated as the lines go by. ``nats`` is the total in nats and
    ``unknown`` the words outside the vocabulary, a literal ``<unk>`` not counted (as
    ``rnnkit eval`` reports them)."""

    file: str = "<sentences>"
    num_sentences: int = 0
    num_tokens: int = 0
    num_oov: int = 0
    unknown: int = 0
    log10: Sum = dataclasses.field(default_factory=Sum)
    known_log10: Sum = dataclasses.field(default_factory=Sum)  # OOV tokens left out
    nats: Sum = dataclasses.field(default_factory=Sum)

    @property
    def num_words(self) -> int:
        return self.num_tokens - self.num_sentences

    @property
    def oov_rate(self) -> float:
        return self.num_oov / self.num_words if self.num_words else 0.0

    @property
    def total_log10(self) -> float:
        return self.log10.value

    @property
    def perplexity(self) -> float:
        n = self.num_tokens
        return math.inf if n == 0 else float(10.0 ** (-self.total_log10 / n))

    @property
    def perplexity_excl_oov(self) -> float:
        n = self.num_tokens - self.num_oov
        return math.inf if n == 0 else float(10.0 ** (-self.known_log10.value / n))

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


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


Mix = Callable[[list[str], SentenceScores], SentenceScores]


def iter_line_scores(
    model: LanguageModel,
    vocab: Vocab,
    lines: Iterable[str],
    totals: ScoreTotals,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    per_token: bool = False,
    mix: Mix | None = None,
    on_scored: Callable[[int], object] | None = None,
) -> Iterator[LineScore]:
    """Score each line as one sentence, in text order, holding one block of lines at a time.

    Memory: the model, one block of lines (:data:`BLOCK_CHARS`) and its padded batches; a
    line longer than :data:`LONG_LINE_CHARS` is scored on its own a window at a time (its
    text is kept, to be printed) unless ``per_token`` or ``mix`` needs its every token.
    ``totals`` is updated as the lines are scored. ``mix(lines, scores)`` may replace a
    block's per-token scores (interpolation with an n-gram model). ``on_scored(n)`` is told
    the size in bytes (UTF-8, newlines included) of the text scored so far (a progress bar).
    """
    block: list[str] = []
    size = 0
    tell = on_scored or (lambda n: None)

    def flush() -> Iterator[LineScore]:
        nonlocal block, size
        if block:
            yield from _block_scores(
                model, vocab, block, totals, batch_size, device, per_token, mix
            )
            tell(sum(_utf8_len(line) + 1 for line in block))
        block, size = [], 0

    for line in lines:
        if len(line) > LONG_LINE_CHARS and not per_token and mix is None:
            yield from flush()
            text = line.rstrip("\r\n")
            yield _long_line_score(model, vocab, text, totals, device, on_scored=tell)
            tell(len(line) - len(text) + 1)  # its line end
            continue
        block.append(line)
        size += len(line) + 1
        if size >= BLOCK_CHARS:
            yield from flush()
    yield from flush()


def _block_scores(
    model: LanguageModel,
    vocab: Vocab,
    lines: list[str],
    totals: ScoreTotals,
    batch_size: int,
    device: torch.device | str,
    per_token: bool,
    mix: Mix | None,
) -> Iterator[LineScore]:
    result, logp = _score_block(model, vocab, lines, batch_size, device)
    if mix is not None:
        result.scores = mix(lines, result.scores)
    sc = result.scores
    totals.num_sentences += sc.num_sentences
    totals.num_tokens += sc.num_tokens
    totals.num_oov += sc.num_oov
    totals.unknown += sc.num_oov - sum(w == UNK for words in result.tokens for w in words)
    totals.log10.add(sc.total_log10)
    totals.known_log10.add(float(sc.token_log10[~sc.oov].sum()))
    totals.nats.add(-float(logp.sum()))
    sums = sc.sentence_log10()
    off = sc.offsets
    for s, text in enumerate(result.texts):
        a, b = int(off[s]), int(off[s + 1])
        yield LineScore(
            text,
            float(sums[s]),
            b - a,
            int(sc.oov[a:b].sum()),
            result.tokens[s] if per_token else None,
            sc.token_log10[a:b] if per_token else None,
            sc.oov[a:b] if per_token else None,
        )


@torch.inference_mode()
def _long_line_score(
    model: LanguageModel,
    vocab: Vocab,
    text: str,
    totals: ScoreTotals,
    device: torch.device | str,
    max_tokens: int = 4096,
    on_scored: Callable[[int], object] | None = None,
) -> LineScore:
    """One line scored as :func:`sentence_log_probs` scores a batch of one (windows of
    ``max_tokens`` steps, the state carried), read a piece of text at a time."""
    from rnnkit.text.corpus import PIECE_CHARS, cut_at_space

    bos, eos = markers(vocab)
    index, unk = vocab.index, vocab.unk_id
    log10, known, nats = Sum(), Sum(), Sum()
    counts = {"tokens": 0, "oov": 0, "unknown": 0}
    ids = np.array([bos], dtype=np.int64)  # inputs still to read; ids[1:] are targets too
    oov = np.zeros(1, dtype=bool)  # aligned with ids: is ids[i] an OOV word
    state = None
    was_training = model.training
    model.eval()

    def run(x: np.ndarray, y: np.ndarray, y_oov: np.ndarray) -> None:
        nonlocal state
        xt = torch.from_numpy(x[None, :]).to(device)
        yt = torch.from_numpy(y[None, :]).to(device)
        h, state = model.features(xt, state)
        keep = yt != PAD
        lp = model.head.score(h[keep], yt[keep]).double().cpu().numpy()
        l10 = lp / LN10
        log10.add(float(l10.sum()))
        known.add(float(l10[~y_oov].sum()))
        nats.add(-float(lp.sum()))
        counts["tokens"] += len(y)

    try:
        for piece in cut_at_space(text, PIECE_CHARS):
            words = vocab.tokenize(piece)
            new = np.fromiter((index.get(w, unk) for w in words), np.int64, len(words))
            new_oov = new == unk
            counts["oov"] += int(new_oov.sum())
            counts["unknown"] += int(new_oov.sum()) - sum(w == UNK for w in words)
            ids, oov = np.concatenate([ids, new]), np.concatenate([oov, new_oov])
            while len(ids) > max_tokens:  # a full window and the target after it
                run(ids[:max_tokens], ids[1 : max_tokens + 1], oov[1 : max_tokens + 1])
                ids, oov = ids[max_tokens:], oov[max_tokens:]
            if on_scored is not None:
                on_scored(_utf8_len(piece))
        ids, oov = np.append(ids, eos), np.append(oov, False)  # </s>: predicted, never OOV
        while len(ids) > 1:
            t = min(max_tokens, len(ids) - 1)
            run(ids[:t], ids[1 : t + 1], oov[1 : t + 1])
            ids, oov = ids[t:], oov[t:]
    finally:
        model.train(was_training)
    totals.num_sentences += 1
    totals.num_tokens += counts["tokens"]
    totals.num_oov += counts["oov"]
    totals.unknown += counts["unknown"]
    totals.log10.add(log10.value)
    totals.known_log10.add(known.value)
    totals.nats.add(nats.value)
    return LineScore(text, log10.value, counts["tokens"], counts["oov"])


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
    "LineScore",
    "ScoreResult",
    "ScoreTotals",
    "Sum",
    "iter_line_scores",
    "markers",
    "score_lines",
    "sentence_log_probs",
    "sentence_loss",
    "token_scorer",
]
