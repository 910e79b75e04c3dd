"""One-to-many: a sequence generated from one input (a class label, or a vector per example).

Two kinds of data, one example each:

- labelled text, as ``rnnkit classify`` reads it (:func:`rnnkit.text.labeled.read_labeled`:
  a TSV of ``label<TAB>text`` or one file per label): the label is the condition and the
  text the target (a review written for its polarity);
- a text file, one target sequence a line, beside a ``.npy`` file of shape (lines, D) float:
  row i is the condition of line i (a caption from an image's feature vector).

The word vocabulary (``<unk>``, ``<s>``, ``</s>``, then the training words) comes from the
training targets only and is saved as ``vocab.json``; the conditions as
``conditions.json``: the label names in id order (as a vocabulary file, with their checksum),
or ``{"vector_size": D}``.

Training batches are shuffled per epoch with ``numpy.random.default_rng(seed + epoch)`` and
cut from length-sorted pools, so padding stays low and batch ``index`` of ``epoch`` is the
same on any call (exact resume). The loss is the cross-entropy of every target token (the
words and the closing ``</s>``), in nats per token; validation reports it with the
perplexity, and the lowest validation loss picks the best checkpoint.

Every bad input is a :class:`~rnnkit.errors.DataError` naming the file and line: an empty
target line, a ``.npy`` that is not a 2-D float array, whose row count differs from the text
file's line count, that holds NaN or infinity, or whose width differs from the run's.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError, DataError, RunError
from rnnkit.models.conditional import ConditionalConfig, ConditionalGenerator
from rnnkit.tasks.base import Task, pooled_batches
from rnnkit.tasks.classify import fraction_split
from rnnkit.text.labeled import LabeledText, _lines
from rnnkit.text.reading import check_readable
from rnnkit.text.tokenize import check_tokenizer, tokenize
from rnnkit.text.vocab import BOS, EOS, UNK, Vocab, check_tokens, save_tokens_json
from rnnkit.utils import atomic_write_json

IGNORE = -100  # the target id of padding (F.cross_entropy's ignore_index)
CONDITIONS = "conditions.json"

Examples = tuple[list[np.ndarray], np.ndarray]  # (target token ids, conditions)


class ConditionBatch(NamedTuple):
    """conditions (B,) int64 or (B, D) float32; inputs (B, T) ``<s>`` + target, padded;
    targets (B, T) target + ``</s>``, padded with -100; tokens: the real target tokens."""

    conditions: Tensor
    inputs: Tensor
    targets: Tensor
    tokens: int


def read_targets(
    path: str | os.PathLike[str],
    tokenizer: str = "words",
    lowercase: bool = False,
    encoding: str = "utf-8",
) -> list[tuple[str, ...]]:
    """The tokens of each line of a target file; an empty line is a DataError naming it."""
    check_tokenizer(tokenizer)
    p = check_readable(path, "target text")
    out = []
    for n, line in enumerate(_lines(p, encoding), 1):
        tokens = tuple(tokenize(line, tokenizer, lowercase))
        if not tokens:
            raise DataError(
                f"target file {str(p)!r} line {n} is empty; every line needs a target sentence."
            )
        out.append(tokens)
    if not out:
        raise DataError(f"target file {str(p)!r} is empty.")
    return out


def read_vectors(
    path: str | os.PathLike[str],
    lines: int | None = None,
    text: str | os.PathLike[str] | None = None,
    width: int | None = None,
    width_of: str = "the run was trained on vectors of width",
) -> np.ndarray:
    """A (rows, D) float32 array from a ``.npy`` file, checked: 2-D float, finite, ``lines``
    rows (the line count of ``text``) and ``width`` columns (the run's vector size; the
    message says ``width_of`` {width})."""
    p = check_readable(path, "vector")  # a symbolic link loop is one sentence too
    try:
        array = np.load(p, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DataError(f"vector file {str(p)!r} does not exist.") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"vector file {str(p)!r} is not a .npy file of numbers that numpy can read."
        ) from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"vector file {str(p)!r} holds several arrays; give one .npy array.")
    if array.ndim != 2 or array.dtype.kind != "f":
        raise DataError(
            f"vector file {str(p)!r} holds a {array.ndim}-D {array.dtype} array of shape "
            f"{tuple(array.shape)}; give a 2-D float array of shape (lines, vector size)."
        )
    if lines is not None and array.shape[0] != lines:
        where = f" but {str(text)!r} has {lines:,} lines" if text is not None else ""
        raise DataError(
            f"vector file {str(p)!r} has {array.shape[0]:,} rows{where}; give one vector per "
            "target line."
        )
    if width is not None and array.shape[1] != width:
        raise DataError(
            f"vector file {str(p)!r} holds vectors of width {array.shape[1]}, but {width_of} "
            f"{width}."
        )
    if array.shape[1] < 1:
        raise DataError(f"vector file {str(p)!r} holds vectors of width 0.")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"vector file {str(p)!r} row {row + 1} (for line {row + 1}) holds NaN or infinity."
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def read_vector_examples(
    text: str | os.PathLike[str],
    vectors: str | os.PathLike[str],
    tokenizer: str = "words",
    lowercase: bool = False,
    encoding: str = "utf-8",
    width: int | None = None,
    width_of: str = "the run was trained on vectors of width",
) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The targets of ``text`` and their conditions, the rows of ``vectors``."""
    targets = read_targets(text, tokenizer, lowercase, encoding)
    return targets, read_vectors(vectors, len(targets), text, width, width_of)


def _natural(label: str) -> tuple[int, int | str]:
    """Sort key: numeric labels by value ("2" before "10"), then the others by name."""
    return (0, int(label)) if label.isdigit() else (1, label)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class ConditionTask(Task):
    """Conditional generation (one-to-many); see the module docstring."""

    name = "condition"
    unit = "token"
    metric = "loss"
    direction = "min"

    def __init__(
        self,
        vocab: Vocab,
        labels: Sequence[str] | None = None,
        vector_size: int | None = None,
        train: Examples | None = None,
        valid: Examples | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        """Exactly one of ``labels`` (class names in id order) and ``vector_size``;
        ``train``/``valid`` encoded (target ids, conditions), None for a task that only
        generates or evaluates."""
        if (labels is None) == (vector_size is None):
            raise ValueError("give exactly one of labels and vector_size")
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
        if vocab.bos_id is None or vocab.eos_id is None:
            raise RunError(
                "the target vocabulary lacks <s> or </s>; the run is not a condition run."
            )
        self.vocab = vocab
        self.bos_id: int = vocab.bos_id
        self.eos_id: int = vocab.eos_id
        self.labels = list(labels) if labels is not None else None
        self.label_index = {c: i for i, c in enumerate(self.labels or [])}
        self.vector_size = vector_size
        empty = self._empty()
        self.train_y, self.train_c = train if train is not None else empty
        self.valid_y, self.valid_c = valid if valid is not None else empty
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self._epoch_batches: tuple[int, list[np.ndarray]] | None = None

    def _empty(self) -> Examples:
        if self.vector_size is not None:
            return [], np.zeros((0, self.vector_size), np.float32)
        return [], np.zeros(0, np.int64)

    @property
    def kind(self) -> str:
        """``label`` or ``vector``."""
        return "label" if self.labels is not None else "vector"

    # -- preparing --------------------------------------------------------------------------

    @staticmethod
    def make_vocab(
        targets: Sequence[Sequence[str]],
        min_count: int = 1,
        max_vocab_size: int | None = None,
        tokenizer: str = "words",
        lowercase: bool = False,
    ) -> Vocab:
        """``<unk>``, ``<s>``, ``</s>``, then the training words by frequency."""
        if min_count < 1:
            raise ConfigError(f"--min-count must be at least 1, not {min_count}.")
        if max_vocab_size is not None and max_vocab_size < 4:
            raise ConfigError(
                f"--vocab-size must be at least 4 (<unk>, <s>, </s> and a word), "
                f"not {max_vocab_size}."
            )
        counts = Counter(t for tokens in targets for t in tokens)
        return Vocab.from_counts(
            counts, "word", max_vocab_size, min_count, (UNK, BOS, EOS), tokenizer, lowercase
        )

    @classmethod
    def from_labeled(
        cls,
        train: Sequence[LabeledText],
        valid: Sequence[LabeledText],
        min_count: int = 1,
        max_vocab_size: int | None = None,
        tokenizer: str = "words",
        lowercase: bool = False,
        **kwargs: Any,
    ) -> ConditionTask:
        """A label-conditioned task; the vocabulary and the labels come from ``train``."""
        if not train:
            raise DataError("there are no training examples.")
        if not valid:
            raise DataError(
                "there are no validation examples; give a validation file or a fraction."
            )
        vocab = cls.make_vocab([ex.tokens for ex in train], min_count, max_vocab_size,
                               tokenizer, lowercase)  # fmt: skip
        labels = sorted({ex.label for ex in train}, key=_natural)
        task = cls(vocab, labels=labels, **kwargs)
        task.train_y, task.train_c = task.encode_labeled(train)
        task.valid_y, task.valid_c = task.encode_labeled(valid)
        return task

    @classmethod
    def from_vectors(
        cls,
        train: tuple[Sequence[Sequence[str]], np.ndarray],
        valid: tuple[Sequence[Sequence[str]], np.ndarray],
        min_count: int = 1,
        max_vocab_size: int | None = None,
        tokenizer: str = "words",
        lowercase: bool = False,
        **kwargs: Any,
    ) -> ConditionTask:
        """A vector-conditioned task from (targets, (N, D) vectors) pairs."""
        if not train[0]:
            raise DataError("there are no training examples.")
        if not valid[0]:
            raise DataError(
                "there are no validation examples; give a validation file or a fraction."
            )
        vocab = cls.make_vocab(train[0], min_count, max_vocab_size, tokenizer, lowercase)
        task = cls(vocab, vector_size=int(train[1].shape[1]), **kwargs)
        task.train_y, task.train_c = [task.encode_tokens(t) for t in train[0]], train[1]
        task.valid_y, task.valid_c = [task.encode_tokens(t) for t in valid[0]], valid[1]
        return task

    # -- encoding ---------------------------------------------------------------------------

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids (T,) int64; words outside the vocabulary are ``<unk>``."""
        v = self.vocab
        return np.fromiter((v.id(t) for t in tokens), dtype=np.int64, count=len(tokens))

    def label_id(self, label: str, where: str | None = None) -> int:
        """The id of ``label``; a label training never saw is a DataError listing the known."""
        if self.labels is None:
            raise ConfigError(
                "this run is conditioned on vectors, not labels; give --vectors FILE.npy."
            )
        j = self.label_index.get(label)
        if j is None:
            known = ", ".join(self.labels)
            if where:
                raise DataError(
                    f"{where} has label {label!r}, which the training data does not have "
                    f"(labels: {known})."
                )
            raise DataError(f"label {label!r} is not one of the run's labels ({known}).")
        return j

    def encode_labeled(self, examples: Sequence[LabeledText]) -> Examples:
        ys = [self.encode_tokens(ex.tokens) for ex in examples]
        cs = np.fromiter((self.label_id(ex.label, _where(ex.source)) for ex in examples),
                         dtype=np.int64, count=len(examples))  # fmt: skip
        return ys, cs

    def encode_vectors(self, targets: Sequence[Sequence[str]], vectors: np.ndarray) -> Examples:
        return [self.encode_tokens(t) for t in targets], vectors

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids as text: the words joined by spaces, ``</s>`` and what follows left out."""
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            words.append(self.vocab.tokens[i])
        return " ".join(words)

    # -- vocabularies -----------------------------------------------------------------------

    def save_vocabularies(self, run_dir: str | os.PathLike[str]) -> None:
        """Write vocab.json and conditions.json into run_dir."""
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        self.vocab.save(d / "vocab.json")
        if self.labels is not None:  # with their checksum, as a vocabulary file
            save_tokens_json(d / CONDITIONS, {"tokens": self.labels})
        else:
            atomic_write_json(d / CONDITIONS, {"vector_size": self.vector_size})

    @classmethod
    def load_vocabularies(cls, run_dir: str | os.PathLike[str], **kwargs: Any) -> ConditionTask:
        """A task without data (to generate and evaluate) from a run directory's files."""
        d = Path(run_dir)
        path = d / CONDITIONS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RunError(f"{str(path)!r} is missing; the run directory is incomplete.") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunError(f"{str(path)!r} is not valid JSON.") from exc
        vocab = Vocab.load(d / "vocab.json")
        if isinstance(data, dict) and "tokens" in data:  # a bare list before 0.2
            data = check_tokens(data, path, "label list")["tokens"]
        if isinstance(data, list) and data and all(isinstance(c, str) for c in data):
            return cls(vocab, labels=data, **kwargs)
        size = data.get("vector_size") if isinstance(data, dict) else None
        if isinstance(size, int) and size >= 1:
            return cls(vocab, vector_size=size, **kwargs)
        raise RunError(
            f'{str(path)!r} is neither a JSON list of label names nor {{"vector_size": D}}.'
        )

    @classmethod
    def open_run(
        cls, run_dir: Path, config: dict[str, Any]
    ) -> tuple[ConditionalGenerator, Vocab, ConditionTask]:
        """A run's model (weights not loaded), word vocabulary and data-free task."""
        task = cls.load_vocabularies(run_dir)
        return task.build_model(dict(config["model"])), task.vocab, task

    # -- the model --------------------------------------------------------------------------

    def sizes(self) -> dict[str, Any]:
        """The model settings this task's data fixes."""
        if self.labels is not None:
            return {"vocab_size": len(self.vocab), "condition_kind": "label",
                    "num_labels": len(self.labels), "vector_size": 0}  # fmt: skip
        return {"vocab_size": len(self.vocab), "condition_kind": "vector", "num_labels": 0,
                "vector_size": self.vector_size}  # fmt: skip

    def build_model(self, settings: Mapping[str, Any]) -> ConditionalGenerator:
        """A generator with ``settings`` (ConditionalConfig keys) and this task's sizes."""
        return ConditionalGenerator(ConditionalConfig.from_dict({**settings, **self.sizes()}))

    # -- batches ----------------------------------------------------------------------------

    def conditions_tensor(self, conditions: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(conditions))

    def make_batch(self, targets: Sequence[np.ndarray], conditions: np.ndarray) -> ConditionBatch:
        """``<s>`` + target as inputs, target + ``</s>`` as targets, padded at the end."""
        lengths = [len(y) + 1 for y in targets]
        T = max(lengths)
        inputs = np.zeros((len(targets), T), dtype=np.int64)
        outputs = np.full((len(targets), T), IGNORE, dtype=np.int64)
        for i, y in enumerate(targets):
            inputs[i, 0] = self.bos_id
            inputs[i, 1 : len(y) + 1] = y
            outputs[i, : len(y)] = y
            outputs[i, len(y)] = self.eos_id
        return ConditionBatch(self.conditions_tensor(conditions), torch.from_numpy(inputs),
                              torch.from_numpy(outputs), sum(lengths))  # fmt: skip

    def _batches(self, epoch: int) -> list[np.ndarray]:
        if self._epoch_batches is not None and self._epoch_batches[0] == epoch:
            return self._epoch_batches[1]
        n = len(self.train_y)
        if n == 0:
            raise DataError("there are no training examples.")
        lengths = np.fromiter((len(y) for y in self.train_y), dtype=np.int64, count=n)
        result = pooled_batches(lengths, self.batch_size, self.seed + epoch)
        self._epoch_batches = (epoch, result)
        return result

    def num_batches(self, epoch: int) -> int:
        return math.ceil(len(self.train_y) / self.batch_size)

    def batch(self, epoch: int, index: int) -> ConditionBatch:
        idx = self.shard(self._batches(epoch)[index])
        return self.make_batch([self.train_y[i] for i in idx], self.train_c[idx])

    def loss(self, model: nn.Module, batch: ConditionBatch, carry: Any) -> tuple[Tensor, int, Any]:
        dev = _device(model)
        loss = cast(ConditionalGenerator, model).loss(
            batch.conditions.to(dev), batch.inputs.to(dev), batch.targets.to(dev), IGNORE
        )
        return loss, batch.tokens, None

    # -- evaluation -------------------------------------------------------------------------

    def _eval_batches(self, targets: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        order = np.argsort([len(y) for y in targets], kind="stable")  # by length: little padding
        for s in range(0, len(order), self.eval_batch_size):
            yield order[s : s + self.eval_batch_size]

    @torch.no_grad()
    def figures(
        self, model: nn.Module, targets: Sequence[np.ndarray], conditions: np.ndarray
    ) -> dict[str, float]:
        """{"loss" (nats per token), "perplexity", "tokens", "count"} of encoded examples."""
        if not targets:
            raise DataError("there are no examples to evaluate.")
        gen = cast(ConditionalGenerator, model)
        was_training = gen.training
        gen.eval()
        dev = _device(gen)
        total, tokens = 0.0, 0
        try:
            for idx in self._eval_batches(targets):
                b = self.make_batch([targets[i] for i in idx], conditions[idx])
                logp = gen.token_log_probs(b.conditions.to(dev), b.inputs.to(dev),
                                           b.targets.to(dev))  # fmt: skip
                total -= float(logp.double().sum())
                tokens += b.tokens
        finally:
            gen.train(was_training)
        loss = total / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": float(tokens),
                "count": float(len(targets))}  # fmt: skip

    def validate(self, model: nn.Module) -> dict[str, float]:
        """{"loss": nats per token, "perplexity"} on the validation set."""
        f = self.figures(model, self.valid_y, self.valid_c)
        return {"loss": f["loss"], "perplexity": f["perplexity"]}


def _where(source: str) -> str:
    """'file:line' as the other messages name a place: 'file' line N."""
    path, _, line = source.rpartition(":")
    return f"{path!r} line {line}" if path and line.isdigit() else (source or "an example")


def split_examples(n: int, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) index arrays: a random ``valid_fraction`` of n held out."""
    return fraction_split(n, valid_fraction, seed)


__all__ = [
    "ConditionBatch",
    "ConditionTask",
    "read_targets",
    "read_vector_examples",
    "read_vectors",
    "split_examples",
]
