"""One-to-many verbs: train a conditional generator, evaluate it, generate with it.

The same loop and run format as every other shape (:mod:`rnnkit.api.runs`); the task is
:class:`~rnnkit.tasks.condition.ConditionTask`, the model
:class:`~rnnkit.models.conditional.ConditionalGenerator`. Data: labelled text as
``rnnkit classify`` reads it (a TSV of ``label<TAB>text`` or one file per label; the label is
the condition), or one text file (a target a line) with ``vectors=`` a ``.npy`` file of shape
(lines, D) (row i is the condition of line i). Generation runs :mod:`rnnkit.search`: greedy,
sampling (temperature, top-k, top-p) or beam search, many conditions as one batch.
"""

from __future__ import annotations

import dataclasses
import math
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
from rnnkit.distributed import main_log
from rnnkit.errors import ConfigError
from rnnkit.models.conditional import ConditionalConfig, ConditionalGenerator, GuidedDecoder
from rnnkit.tasks.condition import (
    ConditionTask,
    read_vector_examples,
    read_vectors,
    split_examples,
)
from rnnkit.text.labeled import read_labeled
from rnnkit.text.reading import input_path
from rnnkit.training.checkpoint import LoadedRun
from rnnkit.training.config import TrainConfig, from_dict
from rnnkit.training.trainer import TrainResult

# sizes the task fills in from its data, never the user
_FILLED = {"vocab_size", "condition_kind", "num_labels", "vector_size"}
DEFAULT_MAX_LEN = 60  # generation length limit when the run does not know its longest target
CHUNK = 1024  # rows decoded as one batch


@dataclass
class ConditionData:
    """Where the examples come from (saved in config.json's "data" section)."""

    files: list[str] = field(default_factory=list)  # labelled text, or one target file
    vectors: str | None = None  # a .npy (lines, D) float: the condition of each target line
    valid: list[str] | None = None  # validation files (same format); None: a fraction
    valid_vectors: str | None = None  # the .npy of the validation target file
    valid_fraction: float = 0.1
    format: str = "auto"  # labelled text: auto, tsv or per-label
    encoding: str = "utf-8"
    tokenizer: str = "words"
    lowercase: bool = False
    min_count: int = 1
    vocab_size: int | None = None  # keep at most this many words (specials included)

    def validate(self) -> None:
        if not self.files:
            raise ConfigError("give the training data: labelled text FILES, or a text FILE "
                              "with --vectors FILE.npy.")  # fmt: skip
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(
                f"--valid-fraction must be between 0 and 1, not {self.valid_fraction}."
            )
        if self.vectors is not None and len(self.files) != 1:
            raise ConfigError(
                f"--vectors goes with one target text file (a line per vector), not "
                f"{len(self.files)} files."
            )
        if self.vectors is None and self.valid_vectors is not None:
            raise ConfigError("--valid-vectors needs --vectors for the training data too.")
        if (
            self.vectors is not None
            and self.valid is not None
            and (len(self.valid) != 1 or self.valid_vectors is None)
        ):
            raise ConfigError(
                "with --vectors, --valid takes one target text file and --valid-vectors "
                "its .npy file."
            )
        if self.valid_vectors is not None and self.valid is None:
            raise ConfigError("--valid-vectors needs --valid, the target text file it goes with.")


def prepare_task(data: ConditionData, train_cfg: TrainConfig) -> ConditionTask:
    """Read and encode the examples; the vocabulary and labels from the training part only."""
    data.validate()
    kw: dict[str, Any] = dict(
        min_count=data.min_count,
        max_vocab_size=data.vocab_size,
        tokenizer=data.tokenizer,
        lowercase=data.lowercase,
        batch_size=train_cfg.batch_size,
        eval_batch_size=train_cfg.eval_batch_size,
        seed=train_cfg.seed,
    )
    text = (data.tokenizer, data.lowercase, data.encoding)
    if data.vectors is not None:
        targets, vectors = read_vector_examples(data.files[0], data.vectors, *text)
        if data.valid is not None:
            assert data.valid_vectors is not None
            v_targets, v_vectors = read_vector_examples(
                data.valid[0], data.valid_vectors, *text, width=int(vectors.shape[1]),
                width_of=f"the training vectors {data.vectors!r} have width",
            )  # fmt: skip
            return ConditionTask.from_vectors((targets, vectors), (v_targets, v_vectors), **kw)
        tr, va = split_examples(len(targets), data.valid_fraction, train_cfg.seed)
        return ConditionTask.from_vectors(
            ([targets[i] for i in tr], vectors[tr]), ([targets[i] for i in va], vectors[va]), **kw
        )
    examples = read_labeled(data.files, data.format, *text)
    if data.valid is not None:
        fmt = data.format
        if fmt == "auto":  # the training files' format, even for one file of one label
            fmt = "per-label" if len(data.files) > 1 else "tsv"
        valid = read_labeled(data.valid, fmt, *text)
        return ConditionTask.from_labeled(examples, valid, **kw)
    tr, va = split_examples(len(examples), data.valid_fraction, train_cfg.seed)
    return ConditionTask.from_labeled([examples[i] for i in tr], [examples[i] for i in va], **kw)


def _sections() -> dict[str, set[str]]:
    return {
        "model": field_names(ConditionalConfig) - _FILLED,
        "data": field_names(ConditionData),
        "training": field_names(TrainConfig),
    }


def _absolute(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key in ("vectors", "valid_vectors"):
        if out.get(key) is not None:
            out[key] = input_path(out[key], key)
    for key in ("files", "valid"):
        if out.get(key) is not None:
            out[key] = [input_path(p, "labeled text") for p in out[key]]
    return out


def _paths(value: Any) -> list[str]:
    if isinstance(value, str | os.PathLike):
        return [str(value)]
    return [str(v) for v in value]


def train(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
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
    """Train a conditional generator into run directory ``out`` (or continue run ``resume``).

    ``files``: labelled text (a TSV of ``label<TAB>text`` or one file per label), or one
    target text file with ``vectors="X.npy"``. ``settings`` are the fields of
    :class:`~rnnkit.models.conditional.ConditionalConfig` (``cell``, ``hidden_size``,
    ``condition`` (init, input or both), ...), :class:`ConditionData` (``vectors``,
    ``valid``, ``valid_vectors``, ``tokenizer``, ``min_count``, ...) and
    :class:`~rnnkit.training.TrainConfig` (``batch_size``, ``lr``, ``epochs``, ...).
    """
    log = main_log(log or (lambda msg: None))  # under torchrun, rank 0 alone logs
    check_budget(max_time, max_steps)
    dev = resolve_device(device)
    set_threads(threads)
    if files is not None:
        settings["files"] = _paths(files)
    if settings.get("valid") is not None:
        settings["valid"] = _paths(settings["valid"])
    for key in ("vectors", "valid_vectors"):
        if settings.get(key) is not None:
            settings[key] = str(settings[key])
    parts = split_settings(settings, _sections())
    if resume is not None:
        if overwrite:
            raise ConfigError("--resume continues one run: leave out --overwrite.")
        check_resume_settings(parts)
        return _resume(Path(resume), parts["training"], dev, progress, log, max_time, max_steps)
    data = from_dict(ConditionData, _absolute(parts["data"]), "data")
    train_cfg = from_dict(TrainConfig, parts["training"], "training")
    task = prepare_task(data, train_cfg)  # bad input fails here, before anything is written
    model_kw = parts["model"]
    allocate(lambda: task.build_model(model_kw))  # a bad model flag, or one too large
    config: dict[str, Any] = {}

    def build() -> ConditionalGenerator:
        model = task.build_model(model_kw)
        config.update(model.config.to_dict())
        return model

    what = (
        f"{len(task.labels)} labels ({', '.join(task.labels[:10])})"
        if task.labels is not None
        else f"vectors of size {task.vector_size}"
    )
    log(
        f"{len(task.train_y):,} training and {len(task.valid_y):,} validation targets, "
        f"{len(task.vocab):,} words, conditioned on {what}"
    )
    longest = max(len(y) for y in task.train_y)
    stats = {"train_examples": len(task.train_y), "max_target_length": longest}
    trainer = start_run(
        None if out is None else Path(out), overwrite, task, build, config,
        dataclasses.asdict(data), train_cfg, dev, progress, log, stats=stats,
    )  # fmt: skip
    cfg = trainer.model.config
    assert isinstance(cfg, ConditionalConfig)
    log(
        f"{cfg.cell} {cfg.num_layers}x{cfg.hidden_size}, condition {cfg.condition}, "
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
    def build(config: dict[str, Any], train_cfg: TrainConfig) -> tuple[ConditionTask, Any]:
        data = from_dict(ConditionData, dict(config["data"]), "data")
        task = prepare_task(data, train_cfg)
        saved = ConditionTask.load_vocabularies(run)
        check_same_file(saved.labels, task.labels, "labels", run)
        check_same_file(saved.vector_size, task.vector_size, "vector size", run)
        check_same_file(saved.vocab.tokens, task.vocab.tokens, "vocabulary", run)
        return task, task.build_model(dict(config["model"]))

    trainer = resume_trainer(run, train_kw, build, dev, progress, log)
    return trainer.fit(max_time=max_time, max_steps=max_steps)


# -- evaluate and generate -------------------------------------------------------------------


def load_generator(
    run: str | os.PathLike[str] | LoadedRun, device: str | None = "auto", weights: str = "best"
) -> LoadedRun:
    """A condition run: ``.model`` (ConditionalGenerator), ``.task`` (vocabulary, labels)."""
    return load_task_run(run, "condition", "a conditional generator", device, weights)


def evaluate(
    run: str | os.PathLike[str] | LoadedRun,
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    vectors: str | os.PathLike[str] | None = None,
    device: str | None = "auto",
    weights: str = "best",
) -> dict[str, float]:
    """Loss (nats per target token, ``</s>`` included), perplexity, tokens and count of
    labelled text ``files`` (the training run's format and tokenisation), or of one target
    text file with its ``vectors`` .npy for a vector-conditioned run."""
    loaded = load_generator(run, device, weights)
    task: ConditionTask = loaded.task
    data = from_dict(ConditionData, dict(loaded.config["data"]), "data")
    paths = _paths(files)
    text = (data.tokenizer, data.lowercase, data.encoding)
    if task.vector_size is not None:
        if vectors is None or len(paths) != 1:
            raise ConfigError(
                f"run {str(loaded.path)!r} is conditioned on vectors: give one target text "
                "file and --vectors FILE.npy."
            )
        targets, array = read_vector_examples(
            paths[0], vectors, *text, width=task.vector_size,
            width_of=f"run {str(loaded.path)!r} was trained on vectors of width",
        )  # fmt: skip
        ys, cs = task.encode_vectors(targets, array)
    else:
        if vectors is not None:
            raise ConfigError(
                f"run {str(loaded.path)!r} is conditioned on labels; give labelled text, "
                "not --vectors."
            )
        fmt = data.format
        if fmt == "auto":
            fmt = "per-label" if len(data.files) > 1 else "tsv"
        ys, cs = task.encode_labeled(read_labeled(paths, fmt, *text))
    return task.figures(loaded.model, ys, cs)


def check_generation(
    num_samples: int,
    greedy: bool,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    beam: int | None,
    n_best: int,
    alpha: float,
    max_len: int | None,
) -> None:
    """ConfigError for an out-of-range or conflicting generation setting."""
    from rnnkit.search import check_sampling, check_search

    if num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, not {num_samples}.")
    if max_len is not None and max_len < 1:
        raise ConfigError(f"--max-len must be at least 1, not {max_len}.")
    if beam is not None:
        if beam < 1:
            raise ConfigError(f"--beam must be at least 1, not {beam}.")
        if greedy or temperature is not None or top_k is not None or top_p is not None:
            raise ConfigError(
                "--beam conflicts with --greedy, --temperature, --top-k and --top-p; "
                "use one search."
            )
        check_search(beam, n_best, alpha)
    elif n_best != 1:
        raise ConfigError("--n-best needs --beam K (at least as large as --n-best).")
    check_sampling(temperature, top_k, top_p, greedy)
    if num_samples > 1 and (greedy or beam is not None):
        raise ConfigError(
            f"--num-samples {num_samples} needs sampling: greedy and beam search give the same "
            "output every time (use --n-best with --beam for several)."
        )


def conditions_of(
    task: ConditionTask,
    condition: str | int | Sequence[float] | np.ndarray | None,
    vectors: str | os.PathLike[str] | np.ndarray | None,
    run: Path | None = None,
) -> torch.Tensor:
    """The condition rows to generate from: label ids (N,) or vectors (N, D)."""
    if task.labels is not None:
        if vectors is not None:
            raise ConfigError(
                f"run {str(run)!r} is conditioned on labels ({', '.join(task.labels)}); "
                "give --label, not --vectors."
            )
        if condition is None:
            raise ConfigError(
                f"give the label to generate for: one of {', '.join(task.labels)} (--label)."
            )
        labels = [condition] if isinstance(condition, str) else list(condition)  # type: ignore[arg-type]
        for label in labels:
            if not isinstance(label, str):
                raise ConfigError(f"run {str(run)!r} is conditioned on labels; give label names.")
        return torch.tensor([task.label_id(label) for label in labels], dtype=torch.long)
    assert task.vector_size is not None
    array: np.ndarray | None = None
    if isinstance(vectors, np.ndarray):
        array = vectors
        if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] != task.vector_size:
            raise ConfigError(
                f"the vectors must be a 2-D float array of width {task.vector_size}, not "
                f"{array.ndim}-D {array.dtype} of shape {tuple(array.shape)}."
            )
        array = array.astype(np.float32)
    elif vectors is not None:
        array = read_vectors(vectors, width=task.vector_size,
                             width_of=f"run {str(run)!r} was trained on vectors of width")  # fmt: skip
    if isinstance(condition, int | np.integer):
        if array is None:
            raise ConfigError("a row index needs the vectors it indexes: give --vectors FILE.npy.")
        if not 0 <= int(condition) < len(array):
            raise ConfigError(
                f"row {condition} is outside the {len(array):,} rows of the vectors (0 to "
                f"{len(array) - 1})."
            )
        array = array[int(condition) : int(condition) + 1]
    elif condition is not None:
        if isinstance(condition, str):
            raise ConfigError(
                f"run {str(run)!r} is conditioned on vectors, not labels; give --vectors "
                "FILE.npy (one output per row)."
            )
        vec = np.asarray(condition, dtype=np.float32)
        if vec.ndim == 1:
            vec = vec[None, :]
        if vec.ndim != 2 or vec.shape[1] != task.vector_size:
            raise ConfigError(
                f"the condition vector must have {task.vector_size} values, not shape "
                f"{tuple(np.shape(condition))}."
            )
        array = vec
    if array is None:
        raise ConfigError("give the vectors to generate from: --vectors FILE.npy.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@torch.no_grad()
def generate_hypotheses(
    run: str | os.PathLike[str] | LoadedRun,
    condition: str | int | Sequence[Any] | np.ndarray | None = None,
    *,
    vectors: str | os.PathLike[str] | np.ndarray | None = None,
    num_samples: int = 1,
    greedy: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    beam: int | None = None,
    n_best: int = 1,
    alpha: float = 0.0,
    max_len: int | None = None,
    allow_unk: bool = False,
    guidance: float = 0.0,
    device: str | None = "auto",
    weights: str = "best",
) -> list[list[tuple[str, float]]]:
    """For each condition (and each of its ``num_samples`` samples, in a row), the outputs
    as (text, log-probability in nats) pairs: one, or ``n_best`` with ``beam``.

    Sampling is the default (plain, or with ``temperature``, ``top_k``, ``top_p``; ``seed``
    makes it repeatable); ``greedy`` takes the most probable token at each step; ``beam=K``
    runs beam search (length normalisation ``alpha``, GNMT's). ``<unk>`` is never produced
    unless ``allow_unk``. ``max_len`` tokens at most (default: the longest training target
    plus 10). ``guidance`` g > 0 (label-conditioned runs) sharpens the label: every search
    reads log_softmax((1 + g) log P(. | label) - g log P(. | the other labels))
    (:class:`~rnnkit.models.conditional.GuidedDecoder`), and the scores are under that.
    """
    from rnnkit import search

    check_generation(num_samples, greedy, temperature, top_k, top_p, beam, n_best, alpha, max_len)
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ConfigError(f"--guidance must be a number at least 0, not {guidance}.")
    loaded = load_generator(run, device, weights)
    task: ConditionTask = loaded.task
    model = loaded.model
    assert isinstance(model, ConditionalGenerator)
    if guidance and task.labels is None:
        raise ConfigError(
            "--guidance contrasts a label with the others; this run is conditioned on vectors."
        )
    if guidance and len(task.labels or ()) < 2:
        raise ConfigError("--guidance needs a run with at least two labels to contrast.")
    model.eval()
    conds = conditions_of(task, condition, vectors, loaded.path)
    if num_samples > 1:
        conds = conds.repeat_interleave(num_samples, dim=0)
    if max_len is None:
        longest = loaded.config.get("stats", {}).get("max_target_length")
        max_len = int(longest) + 10 if longest else DEFAULT_MAX_LEN
    dev = next(model.parameters()).device
    banned = ([] if allow_unk else [task.vocab.unk_id]) + [task.bos_id]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=dev)
        generator.manual_seed(seed)
    out: list[list[tuple[str, float]]] = []
    for s in range(0, len(conds), CHUNK):
        chunk = conds[s : s + CHUNK].to(dev)
        decoder: Any
        if guidance:
            decoder = GuidedDecoder(model, guidance)
            state: Any = decoder.initial_state(chunk)
        else:
            decoder, state = model.decoder(chunk)
        start = torch.full((len(chunk),), task.bos_id, dtype=torch.long, device=dev)
        if beam is not None:
            lists = search.beam_search(decoder, state, start, task.eos_id, max_len, beam,
                                       n_best=n_best, alpha=alpha, banned=banned)  # fmt: skip
        elif greedy:
            lists = [[h] for h in search.greedy(decoder, state, start, task.eos_id, max_len,
                                                banned=banned)]  # fmt: skip
        else:
            hyps = search.sample(decoder, state, start, task.eos_id, max_len,
                                 temperature=temperature, top_k=top_k, top_p=top_p,
                                 generator=generator, banned=banned)  # fmt: skip
            lists = [[h] for h in hyps]
        out.extend([(task.decode(h.tokens), float(h.score)) for h in hs] for hs in lists)
    return out


def generate(
    run: str | os.PathLike[str] | LoadedRun,
    condition: str | int | Sequence[Any] | np.ndarray | None = None,
    **kwargs: Any,
) -> list[str]:
    """The generated texts, condition by condition (``num_samples`` each, or ``n_best``
    with ``beam``); see :func:`generate_hypotheses` for the settings."""
    return [text for outs in generate_hypotheses(run, condition, **kwargs) for text, _ in outs]


__all__ = [
    "ConditionData",
    "check_generation",
    "conditions_of",
    "evaluate",
    "generate",
    "generate_hypotheses",
    "load_generator",
    "prepare_task",
    "train",
]
