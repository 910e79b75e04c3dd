"""Encoder-decoder verbs: train a translator, evaluate it (BLEU, chrF), translate with it.

The same loop and run format as every task (:mod:`rnnkit.api.runs`); the task is
:class:`~rnnkit.tasks.translate.TranslateTask`, the model
:class:`~rnnkit.models.seq2seq.Seq2Seq`. Data are two line-aligned files per split (plain or
.gz). Translation is greedy (``beam=1``) or beam search with GNMT's length normalisation
(``alpha``), through :mod:`rnnkit.search`, batched and batch-invariant.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.tasks.translate import DECODE_BATCH, TranslateTask, bleu_scores
from rnnkit.text.parallel import read_lines, read_parallel
from rnnkit.text.reading import input_path
from rnnkit.training.checkpoint import LoadedRun
from rnnkit.training.config import TrainConfig, from_dict
from rnnkit.training.trainer import TrainResult

# sizes the task fills in from its vocabularies, never the user
_FILLED = {"src_vocab_size", "tgt_vocab_size", "bos_id", "eos_id"}
# training defaults of this task where they differ from the language model's
TRAIN_DEFAULTS = {"batch_size": 64, "clip": 1.0}


@dataclass
class TranslateData:
    """Where the pairs come from and how lines become units (config.json's "data")."""

    train_source: str = ""
    train_target: str = ""
    valid_source: str = ""
    valid_target: str = ""
    lowercase: bool = False
    subwords: int = 0  # 0: words; N: SentencePiece pieces per side
    min_count: int = 2
    max_vocab_size: int | None = None
    max_length: int = 100

    def validate(self) -> None:
        if not (self.train_source and self.train_target):
            raise ConfigError(
                "give the training files: rnnkit translate train SOURCE TARGET --valid "
                "SOURCE TARGET."
            )
        if not (self.valid_source and self.valid_target):
            raise ConfigError(
                "--valid SOURCE TARGET is required: the pair of files that validates."
            )
        if self.min_count < 1:
            raise ConfigError(f"--min-count must be at least 1, not {self.min_count}.")
        if self.max_length < 1:
            raise ConfigError(f"--max-length must be at least 1, not {self.max_length}.")
        if self.subwords < 0:
            raise ConfigError(
                f"--subwords must be 0 (words) or a piece count, not {self.subwords}."
            )


def prepare_task(data: TranslateData, train_cfg: TrainConfig) -> TranslateTask:
    """Read both splits; segmenters and vocabularies from the training side alone."""
    train = read_parallel(data.train_source, data.train_target)
    valid = read_parallel(data.valid_source, data.valid_target)
    return TranslateTask.prepare(
        train,
        valid,
        lowercase=data.lowercase,
        subwords=data.subwords,
        min_count=data.min_count,
        max_vocab_size=data.max_vocab_size,
        max_length=data.max_length,
        batch_size=train_cfg.batch_size,
        seed=train_cfg.seed,
    )


def _sections() -> dict[str, set[str]]:
    return {
        "model": field_names(Seq2SeqConfig) - _FILLED,
        "data": field_names(TranslateData),
        "training": field_names(TrainConfig),
    }


def train(
    source: str | os.PathLike[str] | None = None,
    target: str | os.PathLike[str] | None = None,
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
    """Train a translator on line-aligned files ``source`` and ``target`` into run directory
    ``out`` (or continue run ``resume``). ``settings``: :class:`TranslateData`
    (``valid_source``, ``valid_target``, ``lowercase``, ``subwords``, ...),
    :class:`~rnnkit.models.seq2seq.Seq2SeqConfig` (``cell``, ``hidden_size``,
    ``bidirectional``, ``attention``, ...) and :class:`~rnnkit.training.TrainConfig`."""
    log = main_log(log or (lambda msg: None))  # under torchrun, rank 0 alone logs
    check_budget(max_time, max_steps)
    dev = resolve_device(device)
    set_threads(threads)
    if source is not None:
        settings["train_source"] = str(source)
    if target is not None:
        settings["train_target"] = str(target)
    parts = split_settings(settings, _sections())
    if resume is not None:
        if overwrite:
            raise ConfigError("--resume and --overwrite conflict: resuming keeps the run.")
        check_resume_settings(parts)
        return _resume(Path(resume), parts["training"], dev, progress, log, max_time, max_steps)
    data_kw = dict(parts["data"])
    for key in ("train_source", "train_target", "valid_source", "valid_target"):
        if data_kw.get(key):
            data_kw[key] = input_path(data_kw[key], key.replace("_", " "))
    data = from_dict(TranslateData, data_kw, "data")
    train_cfg = from_dict(TrainConfig, {**TRAIN_DEFAULTS, **parts["training"]}, "training")
    task = prepare_task(data, train_cfg)  # bad input fails here, before anything is written
    model_kw = parts["model"]
    allocate(lambda: task.build_model(model_kw))  # and a bad model flag (or one too large)
    config: dict[str, Any] = {}

    def build() -> Seq2Seq:
        model = task.build_model(model_kw)
        config.update(model.config.to_dict())
        return model

    log(
        f"{len(task.train_src):,} training pairs ({task.skipped:,} longer than "
        f"{data.max_length} units left out), {len(task.valid_src):,} validation pairs; "
        f"vocabularies {len(task.source.vocab):,} source and {len(task.target.vocab):,} "
        f"target {'pieces' if data.subwords else 'words'}"
    )
    trainer = start_run(
        None if out is None else Path(out), overwrite, task, build, config,
        dataclasses.asdict(data), train_cfg, dev, progress, log,
        stats={"train_pairs": len(task.train_src), "skipped_pairs": task.skipped},
    )  # fmt: skip
    cfg: Seq2SeqConfig = cast(Seq2Seq, trainer.model).config
    log(
        f"{cfg.cell} encoder {cfg.num_layers}x{cfg.hidden_size}"
        f"{' bidirectional' if cfg.bidirectional else ''}, attention {cfg.attention}"
        f"{' with input feeding' if cfg.attention != 'none' and cfg.input_feeding else ''}, "
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
    def build(config: dict[str, Any], train_cfg: TrainConfig) -> tuple[TranslateTask, Any]:
        data = from_dict(TranslateData, dict(config["data"]), "data")
        task = prepare_task(data, train_cfg)
        saved = TranslateTask.load_vocabularies(run, dict(config["data"]))
        for name, a, b in (("source vocabulary", saved.source, task.source),
                           ("target vocabulary", saved.target, task.target)):  # fmt: skip
            check_same_file(a.vocab.tokens, b.vocab.tokens, name, run)
            check_same_file(a.segmenter.model, b.segmenter.model, name + "'s pieces", run)
        return task, task.build_model(dict(config["model"]))

    trainer = resume_trainer(run, train_kw, build, dev, progress, log)
    return trainer.fit(max_time=max_time, max_steps=max_steps)


def load_translator(
    run: str | os.PathLike[str] | LoadedRun, device: str | None = "auto", weights: str = "best"
) -> LoadedRun:
    """A translate run: ``.model`` (Seq2Seq), ``.task`` (segmenters, vocabularies)."""
    return load_task_run(run, "translate", "a translator", device, weights)


def translate(
    run: str | os.PathLike[str] | LoadedRun,
    sources: list[str],
    *,
    beam: int = 1,
    n_best: int = 1,
    alpha: float = 0.0,
    batch_size: int = DECODE_BATCH,
    where: str = "input",
    device: str | None = "auto",
    weights: str = "best",
    replace_unk: bool = False,
) -> list[list[tuple[str, float]]]:
    """The ``n_best`` translations of each source line with their log-probabilities (nats),
    best first. ``beam`` 1 is greedy decoding. ``replace_unk``: each ``<unk>`` written
    becomes the source unit it attended to most (attention models)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
    loaded = load_translator(run, device, weights)
    task: TranslateTask = loaded.task
    src = task.encode_sources(sources, where)
    return task.translate(loaded.model, src, sources if replace_unk else None, beam=beam,
                          n_best=n_best, alpha=alpha, batch_size=batch_size)  # fmt: skip


def evaluate(
    run: str | os.PathLike[str] | LoadedRun,
    source: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    *,
    beam: int = 1,
    alpha: float = 0.0,
    batch_size: int = DECODE_BATCH,
    device: str | None = "auto",
    weights: str = "best",
    replace_unk: bool = False,
) -> dict[str, Any]:
    """BLEU and chrF (sacreBLEU, cased and lowercased, with signatures) of the translations
    of ``source`` against ``reference``, and the reference's loss per target token."""
    loaded = load_translator(run, device, weights)
    task: TranslateTask = loaded.task
    src_lines, ref_lines = read_parallel(source, reference)
    src = task.encode_sources(src_lines, f"source file {str(source)!r}")
    tgt = [task.target.encode(line) for line in ref_lines]
    loss = task.nll(loaded.model, src, tgt)
    found = task.translate(loaded.model, src, src_lines if replace_unk else None, beam=beam,
                           alpha=alpha, batch_size=batch_size)  # fmt: skip
    hyps = [h[0][0] for h in found]
    figures = bleu_scores(hyps, ref_lines, lowercase=task.source.segmenter.lowercase)
    figures.update(
        loss=loss, perplexity=math.exp(min(loss, 700.0)), sentences=len(src), beam=beam,
        alpha=alpha, replace_unk=replace_unk, translations=hyps,
    )  # fmt: skip
    return figures


def read_sources(path: str | os.PathLike[str]) -> list[str]:
    """Source lines of a file (plain or .gz); an empty line is a DataError naming it."""
    return read_lines(path, "source")


__all__ = ["TranslateData", "evaluate", "load_translator", "read_sources", "train", "translate"]
