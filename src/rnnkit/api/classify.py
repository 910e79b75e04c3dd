"""Many-to-one verbs: train a sequence classifier, evaluate it, predict with it.

The same loop and run format as the language model (:mod:`rnnkit.api.runs`); the task is
:class:`~rnnkit.tasks.classify.ClassifyTask`, the model
:class:`~rnnkit.models.classifier.SequenceClassifier`. Text comes as a TSV of
``label<TAB>text`` or one file per label (``rt-polarity.pos``/``.neg``); audio as a folder of
WAV files (label from the file name) or a manifest. ``cv=K`` runs stratified K-fold
cross-validation: one run per fold in ``OUT/fold{i}``, each validated on a part of its
training folds and scored on its held-out fold, and ``OUT/cv.json`` with the mean and the
standard deviation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
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
from rnnkit.distributed import main_log, world
from rnnkit.errors import ConfigError, DataError, RunError
from rnnkit.models.classifier import ClassifierConfig, SequenceClassifier
from rnnkit.tasks.classify import ClassifyTask, fraction_split
from rnnkit.text.labeled import read_labeled, stratified_folds
from rnnkit.text.reading import input_path
from rnnkit.training.checkpoint import LoadedRun, load_run
from rnnkit.training.config import TrainConfig, from_dict
from rnnkit.training.trainer import TrainResult
from rnnkit.utils import atomic_write_json

# sizes the task fills in from its data, never the user
_FILLED = {"num_classes", "input", "vocab_size", "num_features"}


@dataclass
class ClassifyData:
    """Where the examples come from (saved in config.json's "data" section)."""

    files: list[str] = field(default_factory=list)  # text: one TSV, or one file per label
    valid: list[str] | None = None  # validation files (same format); None: a fraction
    valid_fraction: float = 0.1
    format: str = "auto"
    encoding: str = "utf-8"
    tokenizer: str = "whitespace"
    lowercase: bool = False
    min_count: int = 1
    vocab_size: int | None = None  # keep at most this many words (<unk> included)
    audio: str | None = None  # a folder of WAV files ...
    manifest: str | None = None  # ... or a TSV of path<TAB>label
    label_pattern: str | None = None  # regex whose group 1 is the label in a WAV's name
    split: str | None = None  # "fsdd": free-spoken-digit's test split is held out entirely
    fold: int | None = None  # cross-validation: this run holds out fold `fold` of `folds`
    folds: int | None = None
    init_from: str | None = None  # a language-model run the embedding and core start from
    word_dropout: float = 0.0  # each training word becomes <unk> with this probability

    def validate(self) -> None:
        if not self.files and self.audio is None and self.manifest is None:
            raise ConfigError("give the training data: text FILES, --audio DIR or --manifest.")
        if self.files and (self.audio is not None or self.manifest is not None):
            raise ConfigError("give text FILES or audio (--audio/--manifest), not both.")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(
                f"--valid-fraction must be between 0 and 1, not {self.valid_fraction}."
            )


def _examples(data: ClassifyData) -> list[Any]:
    return read_labeled(data.files, data.format, data.tokenizer, data.lowercase, data.encoding)


def _cv_parts(data: ClassifyData, seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Train, validation and held-out test examples of fold ``data.fold``."""
    assert data.fold is not None and data.folds is not None
    examples = _examples(data)
    folds = stratified_folds([ex.label for ex in examples], data.folds, seed)
    held = set(folds[data.fold].tolist())
    rest = [ex for i, ex in enumerate(examples) if i not in held]
    tr, va = fraction_split(len(rest), data.valid_fraction, seed)
    test = [examples[i] for i in sorted(held)]
    return [rest[i] for i in tr], [rest[i] for i in va], test


def prepare_task(data: ClassifyData, train_cfg: TrainConfig) -> ClassifyTask:
    """Read and encode the examples; vocabulary and labels from the training part only."""
    common: dict[str, Any] = dict(
        batch_size=train_cfg.batch_size,
        eval_batch_size=train_cfg.eval_batch_size,
        seed=train_cfg.seed,
    )
    if data.audio is not None or data.manifest is not None:
        from rnnkit.audio import DEFAULT_LABEL_PATTERN, list_folder, read_manifest, split_items

        if data.manifest is not None:
            items = read_manifest(data.manifest)
        else:
            assert data.audio is not None
            items = list_folder(data.audio, data.label_pattern or DEFAULT_LABEL_PATTERN)
        if data.split is not None:  # its test part is never seen: not even to validate
            items = split_items(items, data.split)[0]
        tr, va = fraction_split(len(items), data.valid_fraction, train_cfg.seed)
        return ClassifyTask.from_audio_examples(
            [items[i] for i in tr], [items[i] for i in va], **common
        )
    text: dict[str, Any] = dict(
        word_dropout=data.word_dropout,
        min_count=data.min_count,
        max_vocab_size=data.vocab_size,
        tokenizer=data.tokenizer,
        lowercase=data.lowercase,
    )
    if data.fold is not None:
        train, valid, _ = _cv_parts(data, train_cfg.seed)
        return ClassifyTask.from_examples(train, valid, **text, **common)
    return ClassifyTask.from_text_files(
        data.files,
        data.valid,
        valid_fraction=data.valid_fraction,
        format=data.format,
        encoding=data.encoding,
        **text,
        **common,
    )


def _sections() -> dict[str, set[str]]:
    return {
        "model": field_names(ClassifierConfig) - _FILLED,
        "data": field_names(ClassifyData) - {"fold", "folds"},
        "training": field_names(TrainConfig),
    }


def _absolute(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key in ("audio", "manifest", "init_from"):
        if out.get(key) is not None:
            out[key] = input_path(out[key], key)
    for key in ("files", "valid"):
        if out.get(key) is not None:
            out[key] = [input_path(p, "labeled text") for p in out[key]]
    return out


def train(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: str | os.PathLike[str] | None = None,
    cv: int | None = None,
    max_time: float | None = None,
    max_steps: int | None = None,
    overwrite: bool = False,
    device: str | None = "auto",
    threads: int | None = None,
    progress: bool | None = None,
    log: Log | None = None,
    **settings: Any,
) -> TrainResult | CVResult:
    """Train a classifier into run directory ``out`` (or continue run ``resume``).

    ``files``: a TSV of ``label<TAB>text``, or one file per label. ``settings`` are the
    fields of :class:`~rnnkit.models.classifier.ClassifierConfig` (``cell``,
    ``hidden_size``, ``bidirectional``, ``pooling``, ...), :class:`ClassifyData` (``valid``,
    ``audio``, ``split``, ``min_count``, ``init_from``, ...) and
    :class:`~rnnkit.training.TrainConfig` (``batch_size``, ``lr``, ``epochs``, ...).
    ``cv=K``: K-fold cross-validation (see the module docstring); returns a
    :class:`CVResult`. ``max_time`` bounds each fold's run.
    """
    log = main_log(log or (lambda msg: None))  # under torchrun, rank 0 alone logs
    check_budget(max_time, max_steps)
    dev = resolve_device(device)
    set_threads(threads)
    if files is not None:
        settings["files"] = (
            [str(files)] if isinstance(files, str | os.PathLike) else [str(f) for f in files]
        )
    if isinstance(settings.get("valid"), str | os.PathLike):
        settings["valid"] = [str(settings["valid"])]
    parts = split_settings(settings, _sections())
    budget: dict[str, Any] = dict(max_time=max_time, max_steps=max_steps)
    if resume is not None:
        if overwrite or cv is not None:
            raise ConfigError("--resume continues one run: leave out --overwrite and --cv.")
        check_resume_settings(parts)
        return _resume(Path(resume), parts["training"], dev, progress, log, **budget)
    data = from_dict(ClassifyData, _absolute(parts["data"]), "data")
    train_cfg = from_dict(TrainConfig, parts["training"], "training")
    if cv is not None and world().active:
        raise ConfigError("--cv trains its folds in one process; run it without torchrun.")
    if cv is not None:
        return _cross_validate(cv, data, parts["model"], train_cfg, out, overwrite, dev,
                               progress, log, budget)  # fmt: skip
    return _train_one(data, parts["model"], train_cfg, out, overwrite, dev, progress, log, budget)


def _train_one(
    data: ClassifyData,
    model_kw: dict[str, Any],
    train_cfg: TrainConfig,
    out: str | os.PathLike[str] | None,
    overwrite: bool,
    dev: torch.device,
    progress: bool | None,
    log: Log,
    budget: dict[str, Any],
) -> TrainResult:
    task = prepare_task(data, train_cfg)  # bad input fails here, before anything is written
    allocate(lambda: task.build_model(model_kw))  # a bad model flag, or one too large
    config: dict[str, Any] = {}

    def build() -> SequenceClassifier:
        model = task.build_model(model_kw)
        config.update(model.config.to_dict())
        if data.init_from is not None:
            log(_init_from(model, task, data.init_from))
        return model

    what = "audio" if task.features is not None else "text"
    log(
        f"{what}: {len(task.train_x):,} training and {len(task.valid_x):,} validation "
        f"examples, {len(task.labels)} classes ({', '.join(task.labels[:10])})"
    )
    trainer = start_run(
        None if out is None else Path(out), overwrite, task, build, config, dataclasses.asdict(data), train_cfg, dev,
        progress, log, stats={"train_examples": len(task.train_x)},
    )  # fmt: skip
    cfg = model_config_of(trainer.model)
    log(
        f"{cfg.cell} {cfg.num_layers}x{cfg.hidden_size}"
        f"{' bidirectional' if cfg.bidirectional else ''}, {cfg.pooling} pooling, "
        f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters, on {dev}"
    )
    return trainer.fit(**budget)


def model_config_of(model: torch.nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError("the model has no config")
    return config


def _init_from(model: SequenceClassifier, task: ClassifyTask, run: str) -> str:
    """Start the embedding and the recurrent layers from a language-model run."""
    lm = load_run(run, weights="best")
    if lm.task_name != "lm" or lm.vocab.level != "word":
        raise ConfigError(f"--init-from {run!r} must be a word-level language-model run.")
    if task.vocab is None:
        raise ConfigError("--init-from needs a text classifier, not an audio one.")
    state = dict(lm.model.state_dict())
    for name in list(state):  # a --skip LM keeps layer k as layers.{k}.*_l0: name it rnn.*_l{k}
        parts = name.split(".")
        if parts[0] == "layers" and len(parts) == 3 and parts[2].endswith("_l0"):
            state[f"rnn.{parts[2][:-1]}{parts[1]}"] = state.pop(name)
    summary = model.init_from_lm(state, lm.vocab.tokens, task.vocab.tokens)
    return f"--init-from {run}: {summary}"


def _resume(
    run: Path,
    train_kw: dict[str, Any],
    dev: torch.device,
    progress: bool | None,
    log: Log,
    max_time: float | None,
    max_steps: int | None,
) -> TrainResult:
    def build(config: dict[str, Any], train_cfg: TrainConfig) -> tuple[ClassifyTask, Any]:
        data = from_dict(ClassifyData, dict(config["data"]), "data")
        task = prepare_task(data, train_cfg)
        saved = ClassifyTask.load_vocabularies(run)
        check_same_file(saved.labels, task.labels, "labels", run)
        if saved.vocab is not None and task.vocab is not None:
            check_same_file(saved.vocab.tokens, task.vocab.tokens, "vocabulary", run)
        return task, task.build_model(dict(config["model"]))

    trainer = resume_trainer(run, train_kw, build, dev, progress, log)
    return trainer.fit(max_time=max_time, max_steps=max_steps)


# -- cross-validation ---------------------------------------------------------------------


@dataclass
class CVResult:
    """K-fold cross-validation: each fold's held-out accuracy, their mean and deviation."""

    out: Path
    accuracies: list[float]
    losses: list[float]
    seconds: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": len(self.accuracies),
            "accuracy_mean": self.mean,
            "accuracy_std": self.std,
            "accuracies": self.accuracies,
            "losses": self.losses,
            "seconds": self.seconds,
        }


def _cross_validate(
    k: int,
    data: ClassifyData,
    model_kw: dict[str, Any],
    train_cfg: TrainConfig,
    out: str | os.PathLike[str] | None,
    overwrite: bool,
    dev: torch.device,
    progress: bool | None,
    log: Log,
    budget: dict[str, Any],
) -> CVResult:
    if not data.files:
        raise ConfigError("--cv needs labeled text FILES (audio has its own split).")
    if data.valid is not None:
        raise ConfigError("--cv and --valid conflict: each fold validates on its own data.")
    if out is None:
        raise ConfigError("--out DIR is required: the folder where the fold runs are saved.")
    examples = _examples(data)
    stratified_folds([ex.label for ex in examples], k, train_cfg.seed)  # bad --cv fails now
    base = Path(out)
    if base.exists() and any(base.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {str(base)!r} is not empty; choose another folder or give --overwrite."
        )
    base.mkdir(parents=True, exist_ok=True)
    accuracies: list[float] = []
    losses: list[float] = []
    seconds = 0.0
    for i in range(k):
        fold = dataclasses.replace(data, fold=i, folds=k)
        log(f"fold {i + 1} of {k}")
        result = _train_one(fold, model_kw, train_cfg, base / f"fold{i}", True, dev,
                            progress, log, budget)  # fmt: skip
        seconds += result.elapsed
        _, _, test = _cv_parts(fold, train_cfg.seed)
        figures = evaluate(base / f"fold{i}", examples=test, device=str(dev))
        accuracies.append(figures["accuracy"])
        losses.append(figures["loss"])
        log(f"fold {i + 1}: held-out accuracy {figures['accuracy']:.4f}")
    result_cv = CVResult(base, accuracies, losses, seconds)
    atomic_write_json(base / "cv.json", result_cv.to_dict())
    return result_cv


# -- evaluate and predict -----------------------------------------------------------------


def load_classifier(
    run: str | os.PathLike[str] | LoadedRun, device: str | None = "auto", weights: str = "best"
) -> LoadedRun:
    """A classify run: ``.model`` (SequenceClassifier), ``.task`` (labels, vocabulary)."""
    return load_task_run(run, "classify", "a classifier", device, weights)


def evaluate(
    run: str | os.PathLike[str] | LoadedRun,
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    examples: Sequence[Any] | None = None,
    audio: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    split: str | None = None,
    device: str | None = "auto",
    weights: str = "best",
) -> dict[str, float]:
    """Accuracy and loss (nats per example) on labeled text ``files`` (the training run's
    format and tokenisation), on audio (a folder or manifest; ``split="fsdd"``: its test
    part), or on ready ``examples``."""
    loaded = load_classifier(run, device, weights)
    task: ClassifyTask = loaded.task
    if examples is None:
        data = from_dict(ClassifyData, dict(loaded.config["data"]), "data")
        if task.features is not None:
            from rnnkit.audio import list_folder, read_manifest, split_items

            if manifest is not None:
                items = read_manifest(manifest)
            elif audio is not None:
                items = list_folder(audio, data.label_pattern or r"^(\d+)_")
            else:
                raise ConfigError("give the audio to evaluate: --audio DIR or --manifest FILE.")
            examples = split_items(items, split)[1] if split else items
        else:
            if files is None:
                raise ConfigError("give the labeled text FILES to evaluate.")
            paths = [files] if isinstance(files, str | os.PathLike) else list(files)
            fmt = data.format
            if fmt == "auto":  # the training run's format, even for one file of one label
                fmt = "per-label" if len(data.files) > 1 else "tsv"
            examples = read_labeled(paths, fmt, data.tokenizer, data.lowercase, data.encoding)
    return task.evaluate(loaded.model, examples)


def predict(
    run: str | os.PathLike[str] | LoadedRun,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    device: str | None = "auto",
    weights: str = "best",
) -> tuple[list[str], np.ndarray]:
    """The most probable label of each input (a line of text, or a WAV path) and the class
    probabilities (N, C), columns in the order of ``labels(run)``."""
    loaded = load_classifier(run, device, weights)
    return loaded.task.predict(loaded.model, inputs)


def read_cv(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The summary a cross-validation wrote (OUT/cv.json)."""
    p = Path(out) / "cv.json"
    try:
        return dict(json.loads(p.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise RunError(f"{str(p)!r} is missing: no cross-validation finished there.") from exc
    except ValueError as exc:
        raise DataError(f"{str(p)!r} is not valid JSON.") from exc


__all__ = [
    "CVResult",
    "ClassifyData",
    "evaluate",
    "load_classifier",
    "predict",
    "prepare_task",
    "read_cv",
    "train",
]
