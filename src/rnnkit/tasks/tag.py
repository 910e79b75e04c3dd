"""Sequence tagging (many-to-many, synchronised): a label for every token.

CoNLL-style column files (:mod:`rnnkit.text.columns`) give the words, the labels and any
extra feature columns (the POS column when chunking). The vocabularies come from the training
file only and are saved in the run directory, one JSON file each: ``vocab.json`` (words,
with ``<unk>``), ``labels.json``, ``chars.json`` (with character features) and
``column{N}.json`` for feature column N. Chunk labels (any ``B-``/``I-`` label) are scored
with conlleval's chunk F1 (:mod:`rnnkit.evaluation.chunking`), which picks the best
checkpoint; other labels (POS tags) with token accuracy.

A validation or test label that the training file never has (CoNLL-2000's test set has two
``I-LST``) is a DataError naming file and line, or, with ``unseen_labels="score"``, scored
as the model's mistake in accuracy and F1 (as conlleval would) while its sentence is left
out of the loss, which has no finite value for it.

Training batches: each epoch shuffles the sentences with ``numpy.random.default_rng(seed +
epoch)``, sorts pools of 100 batches' worth by length (little padding) and cuts them into
batches of ``batch_size`` sentences, whose order is shuffled too; batch ``index`` of
``epoch`` is the same on every call, so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError, RunError
from rnnkit.evaluation.chunking import ChunkCounts, is_chunk_labels
from rnnkit.models.tagger import SequenceTagger, TagBatch, TaggerConfig
from rnnkit.tasks.base import Task
from rnnkit.text.columns import LabelVocab, Sentence, read_columns
from rnnkit.text.vocab import Vocab

UNSEEN_LABELS = ("error", "score")
POOL_BATCHES = 100  # batches per length-sorted pool: enough to bucket, still well shuffled


@dataclass
class TagVocabularies:
    """Words, labels, characters (or None) and one vocabulary per feature column."""

    words: Vocab
    labels: LabelVocab
    chars: Vocab | None = None
    columns: dict[int, Vocab] = field(default_factory=dict)  # feature column -> vocabulary

    def save(self, run_dir: str | os.PathLike[str]) -> None:
        run = Path(run_dir)
        self.words.save(run / "vocab.json")
        self.labels.save(run / "labels.json")
        if self.chars is not None:
            self.chars.save(run / "chars.json")
        for column, vocab in self.columns.items():
            vocab.save(run / f"column{column}.json")

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> TagVocabularies:
        run = Path(run_dir)
        chars = Vocab.load(run / "chars.json") if (run / "chars.json").exists() else None
        columns = {}
        for path in run.glob("column*.json"):
            try:
                column = int(path.stem.removeprefix("column"))
            except ValueError as exc:
                raise RunError(f"{str(path)!r} is not named column<N>.json.") from exc
            columns[column] = Vocab.load(path)
        return cls(
            Vocab.load(run / "vocab.json"),
            LabelVocab.load(run / "labels.json"),
            chars,
            dict(sorted(columns.items())),
        )

    @classmethod
    def build(
        cls,
        sentences: Sequence[Sentence],
        feature_columns: Sequence[int],
        lowercase: bool = False,
        min_count: int = 1,
        char_features: bool = False,
    ) -> TagVocabularies:
        """From the training sentences: words seen ``min_count`` times or more, all labels,
        every character (of the words as written, case kept) and every feature value."""
        words = Counter(w.lower() if lowercase else w for s in sentences for w in s.words)
        vocab = Vocab.from_counts(words, "word", min_count=min_count, lowercase=lowercase)
        chars = None
        if char_features:
            counts = Counter(c for s in sentences for w in s.words for c in w)
            chars = Vocab.from_counts(counts, "char")
        columns = {
            column: Vocab.from_counts(Counter(v for s in sentences for v in s.features[k]), "word")
            for k, column in enumerate(feature_columns)
        }
        return cls(vocab, LabelVocab.from_sentences(sentences), chars, columns)


@dataclass
class Encoded:
    """One sentence as ids: words (n), labels (n, or empty), features[k] (n), chars[t]."""

    words: list[int]
    labels: list[int]
    features: list[list[int]]
    chars: list[list[int]] | None


class TagTask(Task):
    """One label per token: CoNLL-2000 chunking, POS tagging, NER."""

    name = "tag"
    unit = "token"

    def __init__(
        self,
        vocabs: TagVocabularies,
        train: Sequence[Sentence] = (),
        valid: Sequence[Sentence] = (),
        train_file: str | os.PathLike[str] | None = None,
        valid_file: str | os.PathLike[str] | None = None,
        word_column: int = 0,
        label_column: int = -1,
        batch_size: int = 32,
        seed: int = 0,
        unseen_labels: str = "error",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
        if unseen_labels not in UNSEEN_LABELS:
            raise ConfigError(f"unseen_labels must be 'error' or 'score', not {unseen_labels!r}.")
        self.unseen_labels = unseen_labels
        self.vocabs = vocabs
        self.word_column = word_column
        self.label_column = label_column
        self.feature_columns = list(vocabs.columns)
        self.batch_size = batch_size
        self.seed = seed
        self.chunking = is_chunk_labels(vocabs.labels.tokens)
        self.metric = "f1" if self.chunking else "accuracy"
        self.direction = "max"
        self.train = [self.encode(s, train_file or "training", "error") for s in train]
        self.valid = [self.encode(s, valid_file or "validation") for s in valid]
        self.valid_labels = [s.labels for s in valid]
        self._lengths = np.array([len(e.words) for e in self.train], dtype=np.int64)
        self._plan: tuple[int, list[np.ndarray]] | None = None

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls,
        train_file: str | os.PathLike[str],
        valid_file: str | os.PathLike[str],
        word_column: int = 0,
        label_column: int = -1,
        feature_columns: Sequence[int] = (),
        lowercase: bool = False,
        min_count: int = 1,
        char_features: bool = False,
        batch_size: int = 32,
        seed: int = 0,
        unseen_labels: str = "error",
    ) -> TagTask:
        """Read both files and build the vocabularies from the training file only."""
        columns = sorted(set(feature_columns))  # one canonical order: the files' N order
        train = read_columns(train_file, word_column, label_column, columns)
        vocabs = TagVocabularies.build(train, columns, lowercase, min_count, char_features)
        valid = read_columns(valid_file, word_column, label_column, columns)
        return cls(
            vocabs, train, valid, train_file, valid_file, word_column, label_column,
            batch_size, seed, unseen_labels,
        )  # fmt: skip

    @classmethod
    def from_vocabularies(
        cls,
        vocabs: TagVocabularies,
        train_file: str | os.PathLike[str] | None = None,
        valid_file: str | os.PathLike[str] | None = None,
        word_column: int = 0,
        label_column: int = -1,
        batch_size: int = 32,
        seed: int = 0,
        unseen_labels: str = "error",
    ) -> TagTask:
        """The task over saved vocabularies (resume; or no files at all, to tag and score)."""
        columns = list(vocabs.columns)
        train = read_columns(train_file, word_column, label_column, columns) if train_file else []
        valid = read_columns(valid_file, word_column, label_column, columns) if valid_file else []
        return cls(
            vocabs, train, valid, train_file, valid_file, word_column, label_column,
            batch_size, seed, unseen_labels,
        )  # fmt: skip

    def save_vocabularies(self, run_dir: str | os.PathLike[str]) -> None:
        """vocab.json, labels.json, chars.json (with character features), column{N}.json."""
        self.vocabs.save(run_dir)

    @staticmethod
    def load_vocabularies(run_dir: str | os.PathLike[str]) -> TagVocabularies:
        return TagVocabularies.load(run_dir)

    def data_settings(self) -> dict[str, Any]:
        """What config.json needs to rebuild this task over saved vocabularies."""
        return {
            "word_column": self.word_column,
            "label_column": self.label_column,
            "feature_columns": self.feature_columns,
            "char_features": self.vocabs.chars is not None,
            "lowercase": self.vocabs.words.lowercase,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    @classmethod
    def open_run(
        cls, run_dir: Path, config: dict[str, Any]
    ) -> tuple[SequenceTagger, Vocab, TagTask]:
        """A run's model (weights not loaded), word vocabulary and data-free task."""
        data = config.get("data", {})
        task = cls.from_vocabularies(
            cls.load_vocabularies(run_dir),
            word_column=int(data.get("word_column", 0)),
            label_column=int(data.get("label_column", -1)),
        )
        return task.build_model(dict(config["model"])), task.vocabs.words, task

    def build_model(self, settings: dict[str, Any]) -> SequenceTagger:
        """A tagger with ``settings`` (TaggerConfig fields); the sizes the vocabularies fix
        (vocab_size, num_labels, extra_vocab_sizes, char_features, char_vocab_size) are
        filled in from the task and override any given."""
        v = self.vocabs
        sizes = {
            "vocab_size": len(v.words),
            "num_labels": len(v.labels),
            "extra_vocab_sizes": [len(c) for c in v.columns.values()],
            "char_features": v.chars is not None,
            "char_vocab_size": len(v.chars) if v.chars is not None else 0,
        }
        return SequenceTagger(TaggerConfig.from_dict({**settings, **sizes}))

    # --- encoding ---------------------------------------------------------------------------

    def encode(
        self, sentence: Sentence, path: str | os.PathLike[str], unseen: str | None = None
    ) -> Encoded:
        """Ids of one sentence. A label training never saw is a DataError naming the line,
        or id -1 when ``unseen`` (default: the task's ``unseen_labels``) is ``"score"``."""
        v = self.vocabs
        words = [v.words.id(w.lower() if v.words.lowercase else w) for w in sentence.words]
        features = [
            [vocab.id(x) for x in values]
            for vocab, values in zip(v.columns.values(), sentence.features)
        ]
        chars = None
        if v.chars is not None:
            chars = [[v.chars.id(c) for c in w] for w in sentence.words]
        labels = v.labels.encode(sentence, path, unseen or self.unseen_labels)
        return Encoded(words, labels, features, chars)

    @staticmethod
    def collate(sentences: Sequence[Encoded]) -> TagBatch:
        """Pad encoded sentences into one batch (CPU tensors)."""
        has_labels = all(e.labels for e in sentences)
        with_chars = sentences[0].chars is not None
        return TagBatch.from_lists(
            [e.words for e in sentences],
            [e.labels for e in sentences] if has_labels else None,
            [e.features for e in sentences],
            [cast(list[list[int]], e.chars) for e in sentences] if with_chars else None,
        )

    # --- training ---------------------------------------------------------------------------

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """The sentence indices of every batch of ``epoch``, in order (cached per epoch)."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self.train))
        size = self.batch_size
        pool = size * POOL_BATCHES
        batches: list[np.ndarray] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._plan = (epoch, batches)
        return batches

    def num_batches(self, epoch: int) -> int:
        return -(-len(self.train) // self.batch_size)

    def batch(self, epoch: int, index: int) -> TagBatch:
        return self.collate([self.train[i] for i in self.shard(self._batches(epoch)[index])])

    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, int, Any]:
        tagger = cast(SequenceTagger, model)
        loss, tokens = tagger.loss(batch.to(_device(model)))
        return loss, tokens, None

    # --- evaluation and prediction ----------------------------------------------------------

    def _run(
        self, model: nn.Module, data: Sequence[Encoded], score: bool
    ) -> tuple[list[list[int]], float, int]:
        """Predicted label ids of every sentence (in order), summed loss, tokens counted."""
        tagger = cast(SequenceTagger, model)
        device = _device(model)
        order = sorted(range(len(data)), key=lambda i: len(data[i].words))
        predictions: list[list[int]] = [[] for _ in data]
        total, tokens = 0.0, 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    batch = self.collate([data[i] for i in idx]).to(device)
                    if score:
                        # a sentence with a label training never saw has no finite loss:
                        # left out of the loss, still scored by accuracy and F1
                        known = [i for i in idx if min(data[i].labels) >= 0]
                        if len(known) < len(idx):
                            batch_known = self.collate([data[i] for i in known]) if known else None
                        else:
                            batch_known = batch
                        if batch_known is not None:
                            loss, n = tagger.loss(batch_known.to(device))
                            total += loss.item() * n
                            tokens += n
                    for i, labels in zip(idx, tagger.predict(batch)):
                        predictions[i] = labels
        finally:
            model.train(was_training)
        return predictions, total, tokens

    def _scores(
        self, model: nn.Module, data: Sequence[Encoded], gold: Sequence[Sequence[str]]
    ) -> dict[str, float]:
        predictions, total, tokens = self._run(model, data, score=True)
        names = self.vocabs.labels.tokens
        guessed = [[names[k] for k in p] for p in predictions]
        right = sum(int(a == b) for g, p in zip(gold, guessed) for a, b in zip(g, p))
        count = sum(len(g) for g in gold)
        out = {
            "loss": total / tokens if tokens else float("nan"),
            "accuracy": right / count if count else 0.0,
        }
        if self.chunking:
            counts = ChunkCounts()
            for g, p in zip(gold, guessed):
                counts.add(g, p)
            s = counts.scores()
            out.update(precision=s["precision"], recall=s["recall"], f1=s["f1"])
        return out

    def validate(self, model: nn.Module) -> dict[str, float]:
        """loss (nats per token), accuracy, and precision, recall, f1 when chunking."""
        if not self.valid:
            raise ValueError("this task holds no validation sentences")
        return self._scores(model, self.valid, self.valid_labels)

    def evaluate_file(self, model: nn.Module, file: str | os.PathLike[str]) -> dict[str, float]:
        """The figures of :meth:`validate` on a labelled column file, with its counts."""
        sentences = read_columns(file, self.word_column, self.label_column, self.feature_columns)
        data = [self.encode(s, file) for s in sentences]
        out = self._scores(model, data, [s.labels for s in sentences])
        out.update(tokens=float(sum(len(s) for s in sentences)), sentences=float(len(sentences)))
        return out

    def predict_file(
        self, model: nn.Module, file: str | os.PathLike[str]
    ) -> list[tuple[list[str], list[str]]]:
        """(words, predicted labels) of every sentence of a column file (labels not needed)."""
        sentences = read_columns(file, self.word_column, None, self.feature_columns)
        return self.predict_sentences(model, sentences)

    def predict_sentences(
        self, model: nn.Module, sentences: Iterable[Sentence]
    ) -> list[tuple[list[str], list[str]]]:
        """(words, predicted labels) of each sentence; their labels, if any, are ignored."""
        sentences = [Sentence(s.words, [], s.features, s.line) for s in sentences]
        data = [self.encode(s, "input") for s in sentences]
        predictions, _, _ = self._run(model, data, score=False)
        names = self.vocabs.labels.tokens
        return [(s.words, [names[k] for k in p]) for s, p in zip(sentences, predictions)]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


__all__ = ["Encoded", "TagTask", "TagVocabularies"]
