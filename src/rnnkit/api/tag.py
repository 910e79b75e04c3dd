"""Many-to-many (synchronised) verbs: train a sequence tagger, evaluate it, tag text with it.

The same loop and run format as every task (:mod:`rnnkit.api.runs`); the task is
:class:`~rnnkit.tasks.tag.TagTask`, the model :class:`~rnnkit.models.tagger.SequenceTagger`.
Data are CoNLL-style column files (a token a line, blank lines between sentences): the
words in ``word_column``, the labels in ``label_column``, optional extra input columns
(``feature_columns``, e.g. the POS column when chunking). Chunk labels (B-/I- prefixes) are
scored by chunk F1 exactly as conlleval counts it, other labels by token accuracy.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnkit.api.runs import (
    Log,
    allocate,
    check_budget,
    check_resume_settings,
    check_same_file,
    field_names,
    load_task_run,
    resolve_device,
    resume_trainer,
    set_threads,
    split_settings,
    start_run,
)
from rnnkit.distributed import main_log
from rnnkit.errors import ConfigError
from rnnkit.models.tagger import SequenceTagger, TaggerConfig
from rnnkit.tasks.tag import TagTask
from rnnkit.text.reading import input_path
from rnnkit.training.checkpoint import LoadedRun
from rnnkit.training.config import TrainConfig, from_dict
from rnnkit.training.trainer import TrainResult

# sizes the task fills in from its vocabularies, never the user
_FILLED = {"vocab_size", "num_labels", "extra_vocab_sizes", "char_vocab_size", "char_features"}


@dataclass
class TagData:
    """Where the sentences come from (saved in config.json's "data" section)."""

    train: str = ""
    valid: str = ""
    word_column: int = 0
    label_column: int = -1
    feature_columns: list[int] = field(default_factory=list)
    lowercase: bool = False
    min_count: int = 1
    char_features: bool = False
    unseen_labels: str = "error"  # a valid label training never saw: error, or score

    def validate(self) -> None:
        if not self.train:
            raise ConfigError("give the training file: rnnkit tag train TRAIN --valid VALID.")
        if not self.valid:
            raise ConfigError("--valid FILE is required: the column file that validates.")
        if self.min_count < 1:
            raise ConfigError(f"--min-count must be at least 1, not {self.min_count}.")


def prepare_task(data: TagData, train_cfg: TrainConfig) -> TagTask:
    """Read both files; every vocabulary from the training file alone."""
    return TagTask.prepare(
        data.train,
        data.valid,
        word_column=data.word_column,
        label_column=data.label_column,
        feature_columns=data.feature_columns,
        lowercase=data.lowercase,
        min_count=data.min_count,
        char_features=data.char_features,
        batch_size=train_cfg.batch_size,
        seed=train_cfg.seed,
        unseen_labels=data.unseen_labels,
    )


def _sections() -> dict[str, set[str]]:
    return {
        "model": field_names(TaggerConfig) - _FILLED,
        "data": field_names(TagData),
        "training": field_names(TrainConfig),
    }


def train(
    train_file: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: str | os.PathLike[str] | None = None,
    max_time: float | None = None,
    max_steps: int | None = None,
    overwrite: bool = False,
    device: str | None = "auto",
    threads: int | None = None,
    progress: bool | None = None,
    log: Log | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a tagger on column file ``train_file`` into run directory ``out`` (or continue
    run ``resume``). ``settings``: :class:`TagData` (``valid``, ``word_column``,
    ``label_column``, ``feature_columns``, ``char_features``, ...),
    :class:`~rnnkit.models.tagger.TaggerConfig` (``cell``, ``hidden_size``,
    ``bidirectional``, ``crf``, ...) and :class:`~rnnkit.training.TrainConfig`."""
    log = main_log(log or (lambda msg: None))  # under torchrun, rank 0 alone logs
    check_budget(max_time, max_steps)
    dev = resolve_device(device)
    set_threads(threads)
    if train_file is not None:
        settings["train"] = str(train_file)
    if settings.get("char_features") is not None:
        settings["char_features"] = bool(settings["char_features"])
    parts = split_settings(settings, _sections())
    if resume is not None:
        if overwrite:
            raise ConfigError("--resume and --overwrite conflict: resuming keeps the run.")
        check_resume_settings(parts)
        return _resume(Path(resume), parts["training"], dev, progress, log, max_time, max_steps)
    data_kw = dict(parts["data"])
    for key in ("train", "valid"):
        if data_kw.get(key):
            data_kw[key] = input_path(data_kw[key], "column")
    data = from_dict(TagData, data_kw, "data")
    train_cfg = from_dict(TrainConfig, parts["training"], "training")
    task = prepare_task(data, train_cfg)  # bad input fails here, before anything is written
    model_kw = parts["model"]
    allocate(lambda: task.build_model(model_kw))  # and a bad model flag (or one too large)
    config: dict[str, Any] = {}

    def build() -> SequenceTagger:
        model = task.build_model(model_kw)
        config.update(model.config.to_dict())
        return model

    v = task.vocabs
    log(
        f"{len(task.train):,} training and {len(task.valid):,} validation sentences; "
        f"{len(v.words):,} words, {len(v.labels)} labels, scored by {task.metric}"
    )
    trainer = start_run(
        None if out is None else Path(out), overwrite, task, build, config,
        dataclasses.asdict(data), train_cfg, dev, progress, log,
        stats={"train_sentences": len(task.train)},
    )  # fmt: skip
    cfg = getattr(trainer.model, "config", None)
    if cfg is not None:
        log(
            f"{cfg.cell} {cfg.num_layers}x{cfg.hidden_size}"
            f"{' bidirectional' if cfg.bidirectional else ''}{' CRF' if cfg.crf else ''}, "
            f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters, on {dev}"
        )
    return trainer.fit(max_time=max_time, max_steps=max_steps)


def _resume(
    run: Path,
    train_kw: dict[str, Any],
    dev: torch.device,
    progress: bool | None,
    log: Log,
    max_time: float | None,
    max_steps: int | None,
) -> TrainResult:
    def build(config: dict[str, Any], train_cfg: TrainConfig) -> tuple[TagTask, Any]:
        data = from_dict(TagData, dict(config["data"]), "data")
        task = prepare_task(data, train_cfg)
        saved = TagTask.load_vocabularies(run)
        check_same_file(saved.words.tokens, task.vocabs.words.tokens, "vocabulary", run)
        check_same_file(saved.labels.tokens, task.vocabs.labels.tokens, "labels", run)
        return task, task.build_model(dict(config["model"]))

    trainer = resume_trainer(run, train_kw, build, dev, progress, log)
    return trainer.fit(max_time=max_time, max_steps=max_steps)


def load_tagger(
    run: str | os.PathLike[str] | LoadedRun, device: str | None = "auto", weights: str = "best"
) -> LoadedRun:
    """A tag run: ``.model`` (SequenceTagger), ``.task`` (vocabularies, columns)."""
    return load_task_run(run, "tag", "a tagger", device, weights)


def _task_for(loaded: LoadedRun, unseen_labels: str | None) -> TagTask:
    data = loaded.config.get("data", {})
    task: TagTask = loaded.task
    choice = unseen_labels or data.get("unseen_labels", "error")
    if choice not in ("error", "score"):
        raise ConfigError(f"--unseen-labels must be error or score, not {choice!r}.")
    task.unseen_labels = choice
    return task


def evaluate(
    run: str | os.PathLike[str] | LoadedRun,
    file: str | os.PathLike[str],
    *,
    unseen_labels: str | None = None,
    device: str | None = "auto",
    weights: str = "best",
) -> dict[str, float]:
    """Loss, token accuracy and (chunk labels) conlleval's precision, recall and F1 on a
    labelled column file. ``unseen_labels`` ``score`` counts a label training never saw as
    a mistake, as conlleval does (default: the run's setting, ``error``)."""
    loaded = load_tagger(run, device, weights)
    return _task_for(loaded, unseen_labels).evaluate_file(loaded.model, file)


def predict(
    run: str | os.PathLike[str] | LoadedRun,
    file: str | os.PathLike[str],
    *,
    device: str | None = "auto",
    weights: str = "best",
) -> list[tuple[list[str], list[str]]]:
    """(words, predicted labels) for every sentence of a column file (no label needed)."""
    loaded = load_tagger(run, device, weights)
    return _task_for(loaded, None).predict_file(loaded.model, file)


__all__ = ["TagData", "evaluate", "load_tagger", "predict", "prepare_task", "train"]
