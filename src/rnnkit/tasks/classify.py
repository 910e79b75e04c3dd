"""Many-to-one: classify whole sequences (sentence polarity from text, spoken digits from audio).

The task holds encoded examples, each a sequence and one label id: token ids (T,) int64 for
text, feature frames (T, F) float32 for audio (see :mod:`rnnkit.audio`). Training batches are
shuffled per epoch with ``numpy.random.default_rng(seed + epoch)`` and cut from
length-sorted pools, so padding stays low and batch ``index`` of ``epoch`` is the same on any
call (exact resume). The loss is the model's mean cross-entropy, in nats per sentence.

Run directory files (beside config.json and the weights): ``vocab.json`` (text: the words),
``labels.json`` (the class names in id order with their checksum, as a vocabulary file), ``features.json`` (audio: the
feature settings and the training set's per-feature mean and std, plain JSON lists).

The caller chooses the split: :meth:`ClassifyTask.from_examples` takes train and valid
examples (a valid file, a fraction, or a cross-validation fold from
:func:`rnnkit.text.labeled.stratified_folds`); :meth:`from_text_files` and
:meth:`from_audio_folder` read files and split for you.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError, DataError, RunError
from rnnkit.models.classifier import ClassifierConfig, SequenceClassifier
from rnnkit.tasks.base import Task, pooled_batches
from rnnkit.text.labeled import LabeledText, read_labeled
from rnnkit.text.vocab import UNK, Vocab, check_tokens, save_tokens_json
from rnnkit.utils import atomic_write_json

if TYPE_CHECKING:
    from rnnkit.audio import AudioFeatures

AudioItem = tuple[Path, str]  # (WAV path, label)


class ClassifyBatch(NamedTuple):
    """inputs (B, T) int64 or (B, T, F) float32, zero-padded; lengths (B,); labels (B,)."""

    inputs: Tensor
    lengths: Tensor
    labels: Tensor


def pad(sequences: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Zero-padded batch (B, T[, F]) and lengths (B,) int64 of (T_i[, F]) arrays."""
    lengths = [len(s) for s in sequences]
    T = max(lengths)
    first = sequences[0]
    out = np.zeros((len(sequences), T, *first.shape[1:]), dtype=first.dtype)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return torch.from_numpy(out), torch.tensor(lengths, dtype=torch.long)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def fraction_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) index arrays: a random ``fraction`` of n held out (at least one)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--valid-fraction must be between 0 and 1, not {fraction}.")
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, round(n * fraction))
    if k >= n:
        raise ConfigError(f"--valid-fraction {fraction} leaves no training examples of {n}.")
    return np.sort(perm[k:]), np.sort(perm[:k])


class ClassifyTask(Task):
    """Sequence classification; see the module docstring."""

    name = "classify"
    unit = "sentence"
    metric = "accuracy"
    direction = "max"

    def __init__(
        self,
        labels: Sequence[str],
        vocab: Vocab | None = None,
        features: AudioFeatures | None = None,
        train: tuple[list[np.ndarray], np.ndarray] | None = None,
        valid: tuple[list[np.ndarray], np.ndarray] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        seed: int = 0,
        word_dropout: float = 0.0,
    ) -> None:
        """``labels`` class names in id order; exactly one of ``vocab`` (text) and
        ``features`` (an :class:`rnnkit.audio.AudioFeatures`, audio); ``train``/``valid``
        encoded (sequences, label ids), None for a task that only predicts."""
        if (vocab is None) == (features is None):
            raise ValueError("give exactly one of vocab (text) and features (audio)")
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
        self.labels = list(labels)
        self.label_index = {c: i for i, c in enumerate(self.labels)}
        self.vocab = vocab
        self.features = features
        self.train_x, self.train_y = train if train is not None else ([], np.zeros(0, np.int64))
        self.valid_x, self.valid_y = valid if valid is not None else ([], np.zeros(0, np.int64))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        if not 0.0 <= word_dropout < 1.0:
            raise ConfigError(f"--word-dropout must be in [0, 1), not {word_dropout}.")
        self.word_dropout = word_dropout
        self._epoch_batches: tuple[int, list[np.ndarray]] | None = None

    # -- preparing --------------------------------------------------------------------------

    @classmethod
    def from_examples(
        cls,
        train: Sequence[LabeledText],
        valid: Sequence[LabeledText],
        min_count: int = 1,
        max_vocab_size: int | None = None,
        tokenizer: str = "whitespace",
        lowercase: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        seed: int = 0,
        word_dropout: float = 0.0,
    ) -> ClassifyTask:
        """A text task; the vocabulary and the labels come from ``train`` alone.

        Tokens seen fewer than ``min_count`` times in training (or past ``max_vocab_size``,
        specials included) become ``<unk>``. ``tokenizer``/``lowercase`` are recorded in the
        vocabulary, so prediction cuts raw text the same way the examples were cut.
        """
        if not train:
            raise DataError("there are no training examples.")
        if not valid:
            raise DataError(
                "there are no validation examples; give a validation file or a fraction."
            )
        if min_count < 1:
            raise ConfigError(f"--min-count must be at least 1, not {min_count}.")
        counts = Counter(t for ex in train for t in ex.tokens)
        vocab = Vocab.from_counts(
            counts, "word", max_vocab_size, min_count, (UNK,), tokenizer, lowercase
        )
        labels = sorted({ex.label for ex in train}, key=_natural)
        task = cls(labels, vocab=vocab, batch_size=batch_size,
                   eval_batch_size=eval_batch_size, seed=seed,
                   word_dropout=word_dropout)  # fmt: skip
        task.train_x, task.train_y = task.encode_texts(train)
        task.valid_x, task.valid_y = task.encode_texts(valid)
        return task

    @classmethod
    def from_text_files(
        cls,
        train_paths: Sequence[str | os.PathLike[str]],
        valid_paths: Sequence[str | os.PathLike[str]] | None = None,
        valid_fraction: float = 0.1,
        format: str = "auto",
        encoding: str = "utf-8",
        tokenizer: str = "whitespace",
        lowercase: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> ClassifyTask:
        """A text task from a TSV or per-label files (see :mod:`rnnkit.text.labeled`).

        Validation: ``valid_paths`` (same format), or a random ``valid_fraction`` of the
        training files (drawn with ``seed``). ``kwargs`` go to :meth:`from_examples`.
        """
        examples = read_labeled(train_paths, format, tokenizer, lowercase, encoding)
        if valid_paths:
            valid = read_labeled(valid_paths, format, tokenizer, lowercase, encoding)
            train = examples
        else:
            tr, va = fraction_split(len(examples), valid_fraction, seed)
            train = [examples[i] for i in tr]
            valid = [examples[i] for i in va]
        return cls.from_examples(
            train, valid, tokenizer=tokenizer, lowercase=lowercase, seed=seed, **kwargs
        )

    @classmethod
    def from_audio_examples(
        cls,
        train: Sequence[AudioItem],
        valid: Sequence[AudioItem],
        features: AudioFeatures | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        seed: int = 0,
    ) -> ClassifyTask:
        """An audio task from (WAV path, label) pairs; normalisation fitted on ``train``."""
        from rnnkit.audio import AudioFeatures

        if not train:
            raise DataError("there are no training recordings.")
        if not valid:
            raise DataError("there are no validation recordings; give a split rule or a fraction.")
        feats = features if features is not None else AudioFeatures()
        raw_train = [feats.raw(p) for p, _ in train]
        feats.fit(raw_train)
        labels = sorted({label for _, label in train}, key=_natural)
        task = cls(labels, features=feats, batch_size=batch_size,
                   eval_batch_size=eval_batch_size, seed=seed)  # fmt: skip
        task.train_x = [feats.normalize(f) for f in raw_train]
        task.train_y = task.encode_labels([label for _, label in train], [str(p) for p, _ in train])
        task.valid_x, task.valid_y = task.encode_audio(valid)
        return task

    @classmethod
    def from_audio_folder(
        cls,
        folder: str | os.PathLike[str] | None = None,
        manifest: str | os.PathLike[str] | None = None,
        label_pattern: str | None = None,
        split: str | None = None,
        valid_fraction: float = 0.1,
        seed: int = 0,
        **kwargs: Any,
    ) -> ClassifyTask:
        """An audio task from a folder of WAVs (labels from names) or a manifest TSV.

        ``split="fsdd"`` validates on free-spoken-digit's test split (index 0-4); otherwise a
        random ``valid_fraction`` is held out. ``kwargs`` go to :meth:`from_audio_examples`.
        """
        from rnnkit.audio import DEFAULT_LABEL_PATTERN, list_folder, read_manifest, split_items

        if manifest is not None:
            items = read_manifest(manifest)
        elif folder is not None:
            items = list_folder(folder, label_pattern or DEFAULT_LABEL_PATTERN)
        else:
            raise ConfigError("give an audio folder or a manifest.")
        if split is not None:
            train, valid = split_items(items, split)
        else:
            tr, va = fraction_split(len(items), valid_fraction, seed)
            train, valid = [items[i] for i in tr], [items[i] for i in va]
        return cls.from_audio_examples(train, valid, seed=seed, **kwargs)

    # -- encoding ---------------------------------------------------------------------------

    def encode_labels(self, labels: Sequence[str], sources: Sequence[str]) -> np.ndarray:
        """Label ids (N,) int64; a label training never saw is a DataError naming its source."""
        out = np.empty(len(labels), dtype=np.int64)
        for i, (label, src) in enumerate(zip(labels, sources)):
            j = self.label_index.get(label)
            if j is None:
                raise DataError(
                    f"{_where(src)} has label {label!r}, which the training data does not have "
                    f"(labels: {', '.join(self.labels)})."
                )
            out[i] = j
        return out

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids (T,) int64."""
        assert self.vocab is not None
        return np.fromiter((self.vocab.id(t) for t in tokens), dtype=np.int64, count=len(tokens))

    def encode_texts(self, examples: Sequence[LabeledText]) -> tuple[list[np.ndarray], np.ndarray]:
        for ex in examples:
            if not ex.tokens:
                raise DataError(f"{ex.source or 'an example'} has no tokens; give it its text.")
        xs = [self.encode_tokens(ex.tokens) for ex in examples]
        ys = self.encode_labels([ex.label for ex in examples], [ex.source for ex in examples])
        return xs, ys

    def encode_audio(self, items: Sequence[AudioItem]) -> tuple[list[np.ndarray], np.ndarray]:
        assert self.features is not None
        xs = [self.features(p) for p, _ in items]
        ys = self.encode_labels([label for _, label in items], [str(p) for p, _ in items])
        return xs, ys

    def encode_inputs(self, inputs: Sequence[str | os.PathLike[str]]) -> list[np.ndarray]:
        """Raw inputs as sequences: text lines (tokenised as in training) or WAV paths."""
        if self.features is not None:
            return [self.features(p) for p in inputs]
        assert self.vocab is not None
        out = []
        for n, line in enumerate(inputs, 1):
            tokens = self.vocab.tokenize(str(line))
            if not tokens:
                raise DataError(f"input {n} has no tokens; every text to classify needs one.")
            out.append(self.encode_tokens(tokens))
        return out

    # -- vocabularies -----------------------------------------------------------------------

    def save_vocabularies(self, run_dir: str | os.PathLike[str]) -> None:
        """Write vocab.json (text) or features.json (audio), and labels.json, into run_dir."""
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        if self.vocab is not None:
            self.vocab.save(d / "vocab.json")
        if self.features is not None:
            atomic_write_json(d / "features.json", self.features.to_dict())
        save_tokens_json(d / "labels.json", {"tokens": self.labels})  # with their checksum

    @classmethod
    def load_vocabularies(cls, run_dir: str | os.PathLike[str], **kwargs: Any) -> ClassifyTask:
        """A task without data (for predict and evaluate) from a run directory's files."""
        d = Path(run_dir)
        labels = _read_json(d / "labels.json")
        if isinstance(labels, dict):  # {"tokens_sha256", "tokens"}; a bare list before 0.2
            labels = check_tokens(labels, d / "labels.json", "label list")["tokens"]
        if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
            raise RunError(f"{str(d / 'labels.json')!r} is not a JSON list of label names.")
        if (d / "features.json").exists():
            from rnnkit.audio import AudioFeatures

            data = _read_json(d / "features.json")
            try:
                features = AudioFeatures.from_dict(data)
            except (ConfigError, TypeError) as exc:
                raise RunError(f"{str(d / 'features.json')!r} is not valid: {exc}") from exc
            return cls(labels, features=features, **kwargs)
        return cls(labels, vocab=Vocab.load(d / "vocab.json"), **kwargs)

    @classmethod
    def open_run(
        cls, run_dir: Path, config: dict[str, Any]
    ) -> tuple[SequenceClassifier, Vocab, ClassifyTask]:
        """A run's model (weights not loaded), word vocabulary and data-free task."""
        task = cls.load_vocabularies(run_dir)
        vocab = task.vocab if task.vocab is not None else Vocab([UNK], "frames")
        return task.build_model(dict(config["model"])), vocab, task

    # -- the model --------------------------------------------------------------------------

    def build_model(self, settings: Mapping[str, Any]) -> SequenceClassifier:
        """A classifier with ``settings`` (ClassifierConfig keys) and this task's sizes."""
        sizes: dict[str, Any] = {"num_classes": len(self.labels)}
        if self.vocab is not None:
            sizes.update(input="tokens", vocab_size=len(self.vocab))
        elif self.features is not None:
            sizes.update(input="frames", num_features=self.features.num_features)
        return SequenceClassifier(ClassifierConfig.from_dict({**settings, **sizes}))

    # -- training ---------------------------------------------------------------------------

    def _batches(self, epoch: int) -> list[np.ndarray]:
        if self._epoch_batches is not None and self._epoch_batches[0] == epoch:
            return self._epoch_batches[1]
        n = len(self.train_x)
        if n == 0:
            raise DataError("there are no training examples.")
        lengths = np.fromiter((len(x) for x in self.train_x), dtype=np.int64, count=n)
        result = pooled_batches(lengths, self.batch_size, self.seed + epoch)
        self._epoch_batches = (epoch, result)
        return result

    def num_batches(self, epoch: int) -> int:
        return math.ceil(len(self.train_x) / self.batch_size)

    def batch(self, epoch: int, index: int) -> ClassifyBatch:
        idx = self.shard(self._batches(epoch)[index])
        inputs, lengths = pad([self.train_x[i] for i in idx])
        if self.word_dropout > 0 and self.vocab is not None:
            # word dropout: each training word becomes <unk> with this probability, drawn
            # from (seed, epoch, index) so a resumed run sees the same batches; it trains the
            # <unk> row that unseen words get at test time, and keeps the model from leaning
            # on any single word
            rng = np.random.default_rng([self.seed, epoch, index])
            drop = torch.from_numpy(rng.random(tuple(inputs.shape)) < self.word_dropout)
            real = torch.arange(inputs.shape[1])[None, :] < lengths[:, None]
            inputs = inputs.masked_fill(drop & real, self.vocab.unk_id)
        return ClassifyBatch(inputs, lengths, torch.from_numpy(self.train_y[idx]))

    def loss(self, model: nn.Module, batch: ClassifyBatch, carry: Any) -> tuple[Tensor, int, Any]:
        dev = _device(model)
        loss = cast(SequenceClassifier, model).loss(
            batch.inputs.to(dev), batch.lengths, batch.labels.to(dev)
        )
        return loss, int(batch.labels.shape[0]), None

    # -- evaluation and prediction ----------------------------------------------------------

    def _eval_batches(self, xs: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        order = np.argsort([len(x) for x in xs], kind="stable")  # by length: little padding
        for s in range(0, len(order), self.eval_batch_size):
            yield order[s : s + self.eval_batch_size]

    @torch.no_grad()
    def _probabilities(self, model: nn.Module, xs: Sequence[np.ndarray]) -> np.ndarray:
        """(N, C) class probabilities, in the order of ``xs``."""
        was_training = model.training
        model.eval()
        dev = _device(model)
        out = np.zeros((len(xs), len(self.labels)), dtype=np.float64)
        try:
            for idx in self._eval_batches(xs):
                inputs, lengths = pad([xs[i] for i in idx])
                p = cast(SequenceClassifier, model).probabilities(inputs.to(dev), lengths)
                out[idx] = p.double().cpu().numpy()
        finally:
            model.train(was_training)
        return out

    def _figures(
        self, model: nn.Module, xs: Sequence[np.ndarray], ys: np.ndarray
    ) -> dict[str, float]:
        if not xs:
            raise DataError("there are no examples to evaluate.")
        probs = self._probabilities(model, xs)
        picked = probs[np.arange(len(ys)), ys]
        loss = float(-np.log(np.maximum(picked, 1e-300)).mean())
        accuracy = float((probs.argmax(1) == ys).mean())
        return {"loss": loss, "accuracy": accuracy, "count": float(len(ys))}

    def validate(self, model: nn.Module) -> dict[str, float]:
        """{"loss": nats per sentence, "accuracy": fraction correct} on the validation set."""
        figures = self._figures(model, self.valid_x, self.valid_y)
        return {"loss": figures["loss"], "accuracy": figures["accuracy"]}

    def evaluate(
        self, model: nn.Module, examples: Sequence[LabeledText] | Sequence[AudioItem]
    ) -> dict[str, float]:
        """{"loss", "accuracy", "count"} on labeled text examples or (WAV path, label) pairs."""
        if self.features is not None:
            xs, ys = self.encode_audio(examples)  # type: ignore[arg-type]
        else:
            xs, ys = self.encode_texts(examples)  # type: ignore[arg-type]
        return self._figures(model, xs, ys)

    def predict(
        self, model: nn.Module, inputs: Sequence[str | os.PathLike[str]]
    ) -> tuple[list[str], np.ndarray]:
        """The most probable label of each input and the probabilities (N, C), columns in
        the order of :attr:`labels`; inputs are text lines or WAV paths."""
        xs = self.encode_inputs(inputs)
        if not xs:
            return [], np.zeros((0, len(self.labels)))
        probs = self._probabilities(model, xs)
        return [self.labels[i] for i in probs.argmax(1)], probs


def _where(source: str) -> str:
    """'file:line' as the other messages name a place: 'file' line N."""
    path, _, line = source.rpartition(":")
    return f"{path!r} line {line}" if path and line.isdigit() else source


def _natural(label: str) -> tuple[int, int | str]:
    """Sort key: numeric labels by value ("2" before "10"), then the others by name."""
    return (0, int(label)) if label.isdigit() else (1, label)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{str(path)!r} is missing; the run directory is incomplete.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{str(path)!r} is not valid JSON.") from exc


__all__ = ["ClassifyBatch", "ClassifyTask", "fraction_split", "pad"]
