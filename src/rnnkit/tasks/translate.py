"""Encoder-decoder: translate a source sequence into a target sequence (Multi30k de->en).

The task holds encoded sentence pairs. Each side has a :class:`~rnnkit.text.parallel.Segmenter`
(words, or SentencePiece pieces trained on the training side) and a vocabulary whose first
ids are ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2 and ``</s>`` 3. Training batches are shuffled per
epoch with ``numpy.random.default_rng(seed + epoch)`` and cut from length-sorted pools, so
batch ``index`` of ``epoch`` is the same on any call (exact resume). The loss is the mean
cross-entropy per target token (``</s>`` counted), label smoothing included when set.

Validation: the plain loss per target token and BLEU of greedy translations of the
validation sources (sacreBLEU, against the raw references; lowercased when the run
lowercases), which picks the best checkpoint.

Length policy: training pairs with a side longer than ``max_length`` units are left out (and
counted); a source longer than that to translate is a DataError naming its line, since the
model never learnt from one. A translation stops at ``</s>`` or after 2 x source length + 10
units.

Run directory files: ``src_vocab.json``, ``tgt_vocab.json`` and, with SentencePiece,
``src.spm.model`` and ``tgt.spm.model``.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError, DataError, RunError
from rnnkit.models.seq2seq import PAD_ID, Seq2Seq, Seq2SeqConfig, TranslatorDecoder
from rnnkit.tasks.base import Task, pooled_batches
from rnnkit.text.parallel import Segmenter
from rnnkit.text.vocab import BOS, EOS, UNK, Vocab

PAD = "<pad>"
SPECIALS = (PAD, UNK, BOS, EOS)
DECODE_BATCH = 64  # sentences translated together (the result does not depend on it)


def output_limit(source_length: int) -> int:
    """The most units a translation of a source this long may have (``</s>`` included)."""
    return 2 * source_length + 10


class TranslateBatch(NamedTuple):
    """src (B, S), src_lengths (B,), tgt_in (B, T) = [<s> y], tgt_out (B, T) = [y </s>]."""

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor


class Side:
    """One language: how its lines are cut (segmenter) and numbered (vocabulary)."""

    def __init__(self, segmenter: Segmenter, vocab: Vocab) -> None:
        if vocab.eos_id is None or vocab.bos_id is None or vocab.tokens[:4] != list(SPECIALS):
            raise RunError(
                "a translation vocabulary must begin with <pad> <unk> <s> </s> (the end marker "
                "ends every translation)."
            )
        self.segmenter = segmenter
        self.vocab = vocab

    def encode(self, line: str) -> np.ndarray:
        units = self.segmenter.split(line)
        return np.fromiter((self.vocab.id(u) for u in units), dtype=np.int64, count=len(units))

    def decode(self, ids: Sequence[int], unknown: dict[int, str] | None = None) -> str:
        """A line from ids; ``</s>`` and padding dropped, ``<unk>`` shown as such unless
        ``unknown`` gives the unit for its position."""
        unk = self.vocab.unk_id
        unknown = unknown or {}
        units = [
            unknown.get(t, self.vocab.tokens[i])
            for t, i in enumerate(ids)
            if i >= len(SPECIALS) or i == unk
        ]
        return self.segmenter.join(units)


def _pad(rows: Sequence[np.ndarray], before: int | None = None, after: int | None = None) -> Tensor:
    """Rows zero-padded into (B, T), with an optional id before and after each."""
    extra = (before is not None) + (after is not None)
    T = max(len(r) for r in rows) + extra
    out = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        j = 0
        if before is not None:
            out[i, 0] = before
            j = 1
        out[i, j : j + len(r)] = r
        if after is not None:
            out[i, j + len(r)] = after
    return torch.from_numpy(out)


class TranslateTask(Task):
    """Sequence-to-sequence translation; see the module docstring."""

    name = "translate"
    unit = "token"
    metric = "bleu"
    direction = "max"

    def __init__(
        self,
        source: Side,
        target: Side,
        train: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
        valid: tuple[list[np.ndarray], list[np.ndarray], list[str]] | None = None,
        batch_size: int = 64,
        seed: int = 0,
        max_length: int = 100,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
        if max_length < 1:
            raise ConfigError(f"--max-length must be at least 1, not {max_length}.")
        self.source = source
        self.target = target
        self.train_src, self.train_tgt = train if train is not None else ([], [])
        self.valid_src, self.valid_tgt, self.valid_refs = (
            valid if valid is not None else ([], [], [])
        )
        self.batch_size = batch_size
        self.seed = seed
        self.max_length = max_length
        self.skipped = 0  # training pairs left out for length
        self._epoch_batches: tuple[int, list[np.ndarray]] | None = None

    # -- preparing --------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls,
        train: tuple[list[str], list[str]],
        valid: tuple[list[str], list[str]],
        lowercase: bool = False,
        subwords: int = 0,
        min_count: int = 2,
        max_vocab_size: int | None = None,
        max_length: int = 100,
        batch_size: int = 64,
        seed: int = 0,
    ) -> TranslateTask:
        """Segmenters and vocabularies from the training pairs alone; both sides encoded.

        ``subwords`` > 0 trains a SentencePiece model of that many pieces per side; 0 cuts
        words. Units seen fewer than ``min_count`` times become ``<unk>``.
        """
        if min_count < 1:
            raise ConfigError(f"--min-count must be at least 1, not {min_count}.")
        if subwords < 0:
            raise ConfigError(f"--subwords must be 0 (words) or a piece count, not {subwords}.")
        sides = []
        for lines in train:
            seg = (
                Segmenter.train_spm(lines, subwords, lowercase)
                if subwords
                else Segmenter("words", lowercase)
            )
            counts = Counter(u for line in lines for u in seg.split(line))
            vocab = Vocab.from_counts(counts, "word", max_vocab_size, min_count, SPECIALS)
            sides.append(Side(seg, vocab))
        task = cls(sides[0], sides[1], batch_size=batch_size, seed=seed, max_length=max_length)
        src = [task.source.encode(line) for line in train[0]]
        tgt = [task.target.encode(line) for line in train[1]]
        keep = [i for i in range(len(src)) if 0 < len(src[i]) <= max_length
                and 0 < len(tgt[i]) <= max_length]  # fmt: skip
        task.skipped = len(src) - len(keep)
        if not keep:
            raise DataError(
                f"no training pair has both sides within --max-length {max_length} units."
            )
        task.train_src = [src[i] for i in keep]
        task.train_tgt = [tgt[i] for i in keep]
        task.valid_src = [task.source.encode(line) for line in valid[0]]
        task.valid_tgt = [task.target.encode(line) for line in valid[1]]
        task.valid_refs = list(valid[1])
        return task

    # -- vocabularies and the run directory --------------------------------------------------

    def save_vocabularies(self, run_dir: str | os.PathLike[str]) -> None:
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        for prefix, side in (("src", self.source), ("tgt", self.target)):
            side.vocab.save(d / f"{prefix}_vocab.json")
            side.segmenter.save(d / f"{prefix}.spm.model")

    @classmethod
    def load_vocabularies(
        cls, run_dir: str | os.PathLike[str], data: dict[str, Any], **kwargs: Any
    ) -> TranslateTask:
        """A task without data (to translate and evaluate) from a run's files."""
        d = Path(run_dir)
        kind = "spm" if int(data.get("subwords", 0)) else "words"
        lowercase = bool(data.get("lowercase", False))
        sides = []
        for prefix in ("src", "tgt"):
            vocab = Vocab.load(d / f"{prefix}_vocab.json")
            try:
                side = Side(Segmenter.load(kind, lowercase, d / f"{prefix}.spm.model"), vocab)
            except RunError as exc:
                raise RunError(f"{str(d / f'{prefix}_vocab.json')!r}: {exc}") from exc
            sides.append(side)
        return cls(sides[0], sides[1], max_length=int(data.get("max_length", 100)), **kwargs)

    @classmethod
    def open_run(
        cls, run_dir: Path, config: dict[str, Any]
    ) -> tuple[Seq2Seq, Vocab, TranslateTask]:
        task = cls.load_vocabularies(run_dir, dict(config.get("data", {})))
        return task.build_model(dict(config["model"])), task.source.vocab, task

    def build_model(self, settings: dict[str, Any]) -> Seq2Seq:
        sizes = {
            "src_vocab_size": len(self.source.vocab),
            "tgt_vocab_size": len(self.target.vocab),
            "bos_id": self.target.vocab.bos_id,
            "eos_id": self.target.vocab.eos_id,
        }
        return Seq2Seq(Seq2SeqConfig.from_dict({**settings, **sizes}))

    # -- training ---------------------------------------------------------------------------

    def _batches(self, epoch: int) -> list[np.ndarray]:
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            lengths = np.fromiter((len(t) for t in self.train_tgt), dtype=np.int64)
            batches = pooled_batches(lengths, self.batch_size, self.seed + epoch)
            self._epoch_batches = (epoch, batches)
        return self._epoch_batches[1]

    def num_batches(self, epoch: int) -> int:
        return math.ceil(len(self.train_src) / self.batch_size)

    def batch(self, epoch: int, index: int) -> TranslateBatch:
        idx = self.shard(self._batches(epoch)[index])
        return self._make_batch([self.train_src[i] for i in idx], [self.train_tgt[i] for i in idx])

    def _make_batch(self, src: Sequence[np.ndarray], tgt: Sequence[np.ndarray]) -> TranslateBatch:
        bos, eos = self.target.vocab.bos_id, self.target.vocab.eos_id
        lengths = torch.tensor([len(s) for s in src], dtype=torch.long)
        return TranslateBatch(_pad(src), lengths, _pad(tgt, before=bos), _pad(tgt, after=eos))

    def loss(self, model: nn.Module, batch: TranslateBatch, carry: Any) -> tuple[Tensor, int, Any]:
        dev = next(model.parameters()).device
        b = [t.to(dev) for t in batch]
        loss = cast(Seq2Seq, model).loss(b[0], batch.src_lengths, b[2], b[3])
        return loss, int((batch.tgt_out != PAD_ID).sum()), None

    # -- evaluation and translation ----------------------------------------------------------

    @torch.no_grad()
    def nll(self, model: nn.Module, src: Sequence[np.ndarray], tgt: Sequence[np.ndarray]) -> float:
        """Nats per target token (``</s>`` counted) under teacher forcing, no smoothing."""
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        total, count = 0.0, 0
        try:
            for idx in _by_length(src, DECODE_BATCH):
                b = self._make_batch([src[i] for i in idx], [tgt[i] for i in idx])
                lp = cast(Seq2Seq, model).token_log_probs(
                    b.src.to(dev), b.src_lengths, b.tgt_in.to(dev), b.tgt_out.to(dev)
                )
                total -= float(lp.double().sum())
                count += int((b.tgt_out != PAD_ID).sum())
        finally:
            model.train(was)
        return total / max(count, 1)

    @torch.no_grad()
    def search(
        self,
        model: nn.Module,
        src: Sequence[np.ndarray],
        beam: int = 1,
        n_best: int = 1,
        alpha: float = 0.0,
        batch_size: int = DECODE_BATCH,
    ) -> list[list[Any]]:
        """The n-best hypotheses (:class:`rnnkit.search.Hypothesis`) of each source, in order.

        ``beam`` 1 is greedy decoding. Sources go through in length-sorted batches of
        ``batch_size``; no hypothesis depends on which sources share its batch.
        """
        from rnnkit import search

        search.check_search(beam, n_best, alpha)
        was = model.training
        model.eval()
        s2s = cast(Seq2Seq, model)
        dev = next(model.parameters()).device
        out: list[list[Any]] = [[] for _ in src]
        banned = (PAD_ID, SPECIALS.index(BOS))
        try:
            for idx in _by_length(src, batch_size):
                rows = [src[i] for i in idx]
                lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
                state = s2s.encode(_pad(rows).to(dev), lengths)
                start = torch.full((len(rows),), s2s.config.bos_id, dtype=torch.long, device=dev)
                limits = torch.tensor([output_limit(len(r)) for r in rows])
                decoder = TranslatorDecoder(s2s)
                eos = s2s.config.eos_id
                if beam == 1:
                    found = [[h] for h in search.greedy(decoder, state, start, eos, limits, banned)]
                else:
                    found = search.beam_search(
                        decoder, state, start, eos, limits, beam, n_best, alpha, banned
                    )
                for i, hyps in zip(idx, found):
                    out[i] = hyps
        finally:
            model.train(was)
        return out

    def encode_sources(self, lines: Sequence[str], where: str = "input") -> list[np.ndarray]:
        """Source lines as ids; an empty or too long line is a DataError naming it."""
        out = []
        for n, line in enumerate(lines, 1):
            ids = self.source.encode(line)
            if len(ids) == 0:
                raise DataError(f"{where} line {n} is empty; every source needs text to translate.")
            if len(ids) > self.max_length:
                raise DataError(
                    f"{where} line {n} has {len(ids)} units, more than the run's --max-length "
                    f"{self.max_length}; split it into shorter sentences."
                )
            out.append(ids)
        return out

    def translate(
        self,
        model: nn.Module,
        src: Sequence[np.ndarray],
        replace_unk: Sequence[str] | None = None,
        **search_kw: Any,
    ) -> list[list[tuple[str, float]]]:
        """(text, log-probability in nats) of each source's n-best translations.

        ``replace_unk``, the source lines themselves, turns on unknown-word replacement
        (Luong et al. 2015; OpenNMT's ``-replace_unk``): each ``<unk>`` written becomes the
        source unit its step attended to most. Attention models only.
        """
        found = self.search(model, src, **search_kw)
        unknown: dict[tuple[int, int], dict[int, str]] = {}
        if replace_unk is not None:
            unknown = self._unknown_words(model, src, replace_unk, found)
        return [
            [
                (self.target.decode(h.tokens, unknown.get((i, k))), h.score)
                for k, h in enumerate(hyps)
            ]
            for i, hyps in enumerate(found)
        ]

    @torch.no_grad()
    def _unknown_words(
        self,
        model: nn.Module,
        src: Sequence[np.ndarray],
        lines: Sequence[str],
        found: Sequence[Sequence[Any]],
    ) -> dict[tuple[int, int], dict[int, str]]:
        """{(source, hypothesis): {position of an <unk>: the source unit attended to most}},
        from a forced pass of each hypothesis that has an ``<unk>`` (the same attention the
        search computed, since decoding is deterministic given the prefix)."""
        s2s = cast(Seq2Seq, model)
        if s2s.attention is None:
            raise ConfigError(
                "--replace-unk needs a translator with attention (this one was trained "
                "without --attention)."
            )
        unk = self.target.vocab.unk_id
        jobs = [
            (i, k) for i, hyps in enumerate(found) for k, h in enumerate(hyps) if unk in h.tokens
        ]
        out: dict[tuple[int, int], dict[int, str]] = {}
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        try:
            for start in range(0, len(jobs), DECODE_BATCH):
                chunk = jobs[start : start + DECODE_BATCH]
                hyps = [list(found[i][k].tokens) for i, k in chunk]
                b = self._make_batch([src[i] for i, _ in chunk], [np.asarray(h) for h in hyps])
                weights = s2s.attention_weights(b.src.to(dev), b.src_lengths, b.tgt_in.to(dev))
                where = weights.argmax(-1).cpu()  # (B, T): the source position each step read
                for row, (i, k) in enumerate(chunk):
                    units = self.source.segmenter.split(lines[i])
                    out[(i, k)] = {
                        t: units[int(where[row, t])]
                        for t, tok in enumerate(hyps[row])
                        if tok == unk
                    }
        finally:
            model.train(was)
        return out

    def validate(self, model: nn.Module) -> dict[str, float]:
        """{"loss": nats per target token, "bleu": greedy BLEU} on the validation pairs."""
        if not self.valid_src:
            raise DataError("there are no validation pairs.")
        loss = self.nll(model, self.valid_src, self.valid_tgt)
        hyps = [t[0][0] for t in self.translate(model, self.valid_src)]
        figures = bleu_scores(hyps, self.valid_refs, lowercase=self.source.segmenter.lowercase)
        return {"loss": loss, "bleu": figures["bleu"]}


def bleu_scores(
    hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False
) -> dict[str, Any]:
    """sacreBLEU's BLEU and chrF of detokenized text, cased and lowercased, with signatures.

    ``bleu`` is the lowercased BLEU when ``lowercase`` (a run trained on lowercased text),
    else the cased one.
    """
    from sacrebleu.metrics import BLEU, CHRF

    refs = [list(references)]
    cased, lower, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    c = cased.corpus_score(list(hypotheses), refs)
    lo = lower.corpus_score(list(hypotheses), refs)
    f = chrf.corpus_score(list(hypotheses), refs)
    return {
        "bleu": lo.score if lowercase else c.score,
        "bleu_cased": c.score,
        "bleu_lowercased": lo.score,
        "chrf": f.score,
        "signature_cased": str(cased.get_signature()),
        "signature_lowercased": str(lower.get_signature()),
        "signature_chrf": str(chrf.get_signature()),
    }


def _by_length(rows: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    order = np.argsort([len(r) for r in rows], kind="stable")
    return [order[s : s + size] for s in range(0, len(order), size)]


__all__ = ["SPECIALS", "Side", "TranslateBatch", "TranslateTask", "bleu_scores", "output_limit"]
