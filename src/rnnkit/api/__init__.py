"""The verbs of rnnkit as Python functions, with the same argument names as the CLI flags.

``train``, ``evaluate``, ``score``, ``generate``, ``load`` and ``plot``; each accepts a run
directory path. Nothing here prints to stdout: progress goes to a tqdm bar on stderr and messages to
the caller's ``log`` function.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit import distributed
from rnnkit.api.runs import (
    Log,
    RunLock,
    allocate,
    check_budget,
    field_names,
    resolve_device,
    set_threads,
    split_settings,
)
from rnnkit.api.runs import (
    check_out as _check_out,
)
from rnnkit.api.runs import (
    check_resume_flags as _check_resume_flags,
)
from rnnkit.api.runs import (
    clear_out as _clear_out,
)
from rnnkit.errors import ConfigError, DataError, RunError
from rnnkit.evaluation.interpolation import (
    DEFAULT_LAMBDA,
    check_interpolation_flags,
    check_lambda,
    interpolate_log10,
)
from rnnkit.evaluation.interpolation import tune_lambda as tune_lambda_weight
from rnnkit.evaluation.rescoring import rescore_nbest as rescore
from rnnkit.evaluation.sentences import (
    LineScore,
    ScoreResult,
    ScoreTotals,
    Sum,
    iter_line_scores,
    markers,
    score_lines,
    sentence_log_probs,
)
from rnnkit.evaluation.stream import dynamic_log_probs, stream_log_probs, to_tensor
from rnnkit.generation import check_generation, continue_context
from rnnkit.models import LanguageModel, ModelConfig, make_model
from rnnkit.models.output import default_classes, frequency_classes
from rnnkit.models.rnnlm import cat_states, select_state
from rnnkit.ngram.model import SentenceScores
from rnnkit.tasks.lm import LanguageModelTask
from rnnkit.text import BUILTIN_CORPORA, Vocab, decode, encode_file, encode_text
from rnnkit.text.corpus import IdFile, encode_file_to_disk, iter_lines
from rnnkit.text.dataset import DataConfig, PreparedData, bincount, prepare_data
from rnnkit.text.reading import check_readable, input_path
from rnnkit.text.sentences import Sentences
from rnnkit.training.checkpoint import (
    STATE,
    VOCAB,
    LoadedRun,
    build_model,
    load_run,
    load_state,
    read_config,
    write_config,
)
from rnnkit.training.config import TrainConfig, from_dict
from rnnkit.training.plan import Plan, measure_speed, plan_data, plan_model
from rnnkit.training.trainer import Trainer, TrainResult
from rnnkit.version import __version__


def load(
    run: str | os.PathLike[str], weights: str = "best", device: str | None = "cpu"
) -> LoadedRun:
    """A run's model, vocabulary and config.

    ``weights`` ``best`` (default): the best validated weights (a run stopped before any
    validation has validated its final weights at the stop; one killed before that gives
    its last weights, with a warning on the ``rnnkit`` logger); ``last``: the latest.
    """
    return load_run(run, weights=weights, device=resolve_device(device))


def _as_run(
    run: str | os.PathLike[str] | LoadedRun, device: str | None, weights: str = "best"
) -> LoadedRun:
    if isinstance(run, LoadedRun):
        return run
    return load(run, weights=weights, device=device)


# -- train ------------------------------------------------------------------------------


def _split_settings(
    settings: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    # --vocab-size limits the Vocab; the model's vocab_size follows it
    sections = {
        "model": field_names(ModelConfig) - {"vocab_size"},
        "data": field_names(DataConfig),
        "training": field_names(TrainConfig),
    }
    parts = split_settings(settings, sections)
    return parts["model"], parts["data"], parts["training"]


def train(
    corpus: str | os.PathLike[str] | None = None,
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
    on_validation: Callable[[dict[str, Any], torch.nn.Module], None] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a language model into run directory ``out``, or continue the run ``resume``.

    ``corpus`` is a UTF-8 text file, or None / 'shakespeare' for the built-in tiny
    Shakespeare. ``settings`` are the fields of :class:`~rnnkit.models.ModelConfig`
    (``cell``, ``hidden_size``, ``num_layers``, ...), :class:`~rnnkit.training.DataConfig`
    (``valid``, ``level``, ``valid_fraction``, ``vocab_size``, ``min_count``) and
    :class:`~rnnkit.training.TrainConfig` (``batch_size``, ``bptt``, ``optimizer``, ``lr``,
    ``clip``, ``epochs``, ``seed``, ...), named as the CLI's flags. ``max_time`` (seconds)
    and ``max_steps`` bound this call only; a resumed run may be given them again.
    ``threads`` sets torch's CPU threads (on a machine shared with other busy processes,
    fewer threads than cores is often much faster). ``on_validation(record, model)`` is
    called after each validation (its time is not counted against ``max_time``).
    """
    log = log or (lambda msg: None)
    check_budget(max_time, max_steps)
    dev = resolve_device(device)
    set_threads(threads)
    model_kw, data_kw, train_kw = _split_settings(settings)
    if corpus is not None:
        data_kw["corpus"] = str(corpus)
    if resume is not None:
        if overwrite:
            raise ConfigError(
                "--resume and --overwrite conflict: resuming keeps the run's checkpoints."
            )
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ConfigError("--out and --resume name different runs; give only --resume RUN.")
        return _resume(
            Path(resume), model_kw, data_kw, train_kw, dev, max_time, max_steps, progress, log,
            on_validation,
        )  # fmt: skip
    if out is None:
        raise ConfigError("--out RUN is required: the folder where the run is saved.")
    data_kw.setdefault("corpus", "shakespeare")
    if data_kw["corpus"] not in BUILTIN_CORPORA:
        data_kw["corpus"] = input_path(data_kw["corpus"], "corpus")
    if data_kw.get("valid") is not None:
        data_kw["valid"] = input_path(data_kw["valid"], "validation")
    # the flags not given, fitted to the corpus and the budget (docs/defaults.md)
    plan = Plan()
    corpus_file = None if data_kw["corpus"] in BUILTIN_CORPORA else data_kw["corpus"]
    plan_data(plan, corpus_file, data_kw.get("level", "char"), set(data_kw), max_time)
    data_kw.update(plan.settings)
    data_cfg = from_dict(DataConfig, data_kw, "data")
    from_dict(TrainConfig, train_kw, "training")  # a bad flag fails before the corpus is read
    out_path = Path(out)
    main = distributed.world().is_main  # under torchrun, rank 0 alone checks and writes --out
    log = log if main else (lambda msg: None)
    distributed.setup(dev)

    def check_and_lock() -> RunLock | None:
        _check_out(out_path, overwrite)
        # an existing run is locked at once (another process may be training in it); a new
        # folder only once the data has been read, so bad input leaves nothing behind
        return RunLock(out_path) if out_path.is_dir() else None

    lock = distributed.on_main(check_and_lock)
    t0 = time.perf_counter()
    data = prepare_data(data_cfg, None)  # bad input fails here, before anything is written
    ModelConfig(vocab_size=len(data.vocab), **model_kw)  # a bad flag fails before the probe
    log(
        f"{data_cfg.level} vocabulary {len(data.vocab):,}, train {len(data.train_ids):,} "
        f"and valid {len(data.valid_ids):,} tokens (read in {time.perf_counter() - t0:.1f} s)"
    )
    if len(data.vocab) < plan.settings.get("vocab_size", 0):
        plan.reasons["vocab_size"] += f"; this corpus has {len(data.vocab):,}: none cut"
    class_bounds: dict[int, list[int]] = {}
    plan = distributed.broadcast(
        distributed.on_main(
            lambda: _plan_model(
                plan, data, data_cfg, model_kw, train_kw, dev, max_time, class_bounds
            )
        )
    )
    chosen = {k: v for k, v in plan.settings.items() if k not in data_kw}
    train_kw.update({k: v for k, v in chosen.items() if k in field_names(TrainConfig)})
    model_kw.update({k: v for k, v in chosen.items() if k not in field_names(TrainConfig)})
    _add_class_bounds(model_kw, data, class_bounds)
    if plan.settings:
        log("chosen for this corpus and budget (a flag overrides each):")
        for line in plan.summary():
            log(line)
    train_cfg = from_dict(TrainConfig, train_kw, "training")
    model_cfg = ModelConfig(vocab_size=len(data.vocab), **model_kw)

    def lock_and_clear() -> RunLock:
        locked = lock or RunLock(out_path)  # before anything is removed or written
        _clear_out(out_path)
        return locked

    torch.manual_seed(train_cfg.seed)
    model = allocate(lambda: make_model(model_cfg))  # too large: fails before the folder is made
    lock = distributed.on_main(lock_and_clear)
    config = {
        "rnnkit_version": __version__,
        "task": LanguageModelTask.name,
        "model": model_cfg.to_dict(),
        "data": dataclasses.asdict(data_cfg),
        "training": dataclasses.asdict(train_cfg),
        "stats": {"train_tokens": len(data.train_ids), "valid_tokens": len(data.valid_ids)},
    }
    if plan.settings:
        config["plan"] = plan.to_dict()
    if main:
        data.vocab.save(out_path / VOCAB)
    trainer = _make_trainer(model, data, data_cfg, train_cfg, out_path, dev, progress, log)
    trainer.lock = lock
    trainer.save_checkpoint()  # under torchrun every rank takes part, rank 0 writes
    if main:
        write_config(out_path, config)  # last: the folder is a run once everything is in place
    shape = (
        f"window {model_cfg.context} x {model_cfg.input_size} -> {model_cfg.hidden_size}"
        if model_cfg.arch == "window"
        else f"{model_cfg.cell} {model_cfg.num_layers}x{model_cfg.hidden_size}"
    )
    log(f"{shape}, {data_cfg.mode} mode, {model.num_parameters():,} parameters, on {dev}")
    return trainer.fit(max_time=max_time, max_steps=max_steps, on_validation=on_validation)


def _add_class_bounds(
    model_kw: dict[str, Any], data: PreparedData, memo: dict[int, list[int]]
) -> None:
    """--output class: Mikolov's frequency classes from the training counts (counted once
    per number of classes in ``memo``: the probe and the run use the same ones)."""
    if model_kw.get("output") == "class" and model_kw.get("class_bounds") is None:
        V = len(data.vocab)
        classes = model_kw.get("classes") or default_classes(V)
        if classes not in memo:
            memo[classes] = frequency_classes(bincount(data.train_ids, V), classes)
        model_kw["class_bounds"] = memo[classes]


def _plan_model(
    plan: Plan,
    data: PreparedData,
    data_cfg: DataConfig,
    model_kw: dict[str, Any],
    train_kw: dict[str, Any],
    dev: torch.device,
    budget: float | None,
    class_bounds: dict[int, list[int]],
) -> Plan:
    """The model and training settings the flags leave unset, from a measured speed."""
    t0 = time.perf_counter()
    defaults = TrainConfig()

    def speed(settings: dict[str, Any]) -> float:
        batch = train_kw.get("batch_size") or plan.settings.get("batch_size", defaults.batch_size)
        settings = dict(settings)
        _add_class_bounds(settings, data, class_bounds)  # its cost depends on its classes
        return measure_speed(
            settings,
            len(data.vocab),
            data.train_ids,
            batch,
            train_kw.get("bptt", defaults.bptt),
            dev,
            bf16=train_kw.get("precision") == "bf16",
        )

    plan_model(
        plan,
        level=data_cfg.level,
        vocab_size=len(data.vocab),
        train_tokens=len(data.train_ids),
        budget=budget,
        model_kw=model_kw,
        train_kw=train_kw,
        speed=speed,
    )
    plan.probe_seconds = time.perf_counter() - t0
    return plan


def _make_trainer(
    model: LanguageModel,
    data: PreparedData,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    run: Path,
    dev: torch.device,
    progress: bool | None,
    log: Log,
) -> Trainer:
    task = LanguageModelTask(
        data,
        data_cfg,
        train_cfg.batch_size,
        train_cfg.bptt,
        train_cfg.seed,
        eval_batch_size=train_cfg.eval_batch_size,
    )
    return Trainer(model, task, train_cfg, run, dev, progress=progress, log=log)


def _unit(level: str) -> str:
    return "char" if level == "char" else "word"


def _resume(
    run: Path,
    model_kw: dict[str, Any],
    data_kw: dict[str, Any],
    train_kw: dict[str, Any],
    dev: torch.device,
    max_time: float | None,
    max_steps: int | None,
    progress: bool | None,
    log: Log,
    on_validation: Callable[[dict[str, Any], torch.nn.Module], None] | None = None,
) -> TrainResult:
    config = read_config(run)
    main = distributed.world().is_main  # under torchrun every rank reads the run; rank 0 writes
    distributed.setup(dev)
    lock = distributed.on_main(lambda: RunLock(run))
    if "corpus" in data_kw and data_kw["corpus"] not in BUILTIN_CORPORA:
        data_kw["corpus"] = input_path(data_kw["corpus"], "corpus")
    _check_resume_flags(config, {"model": model_kw, "data": data_kw, "training": train_kw})
    vocab = Vocab.load(run / VOCAB)
    data_cfg = from_dict(DataConfig, dict(config["data"]), "data")
    train_cfg = from_dict(TrainConfig, {**config["training"], **train_kw}, "training")
    data = prepare_data(data_cfg, vocab)
    if len(data.train_ids) != config.get("stats", {}).get("train_tokens"):
        raise RunError(
            f"corpus {data_cfg.corpus!r} has changed since run {str(run)!r} started "
            "(its token count differs), so the run cannot be resumed exactly."
        )
    model = build_model(config, vocab, run)
    trainer = _make_trainer(model, data, data_cfg, train_cfg, run, dev, progress, log)
    trainer.lock = lock
    trainer.load_state_dict(load_state(run / STATE))
    log = trainer.log
    if train_kw and main:
        config["training"] = dataclasses.asdict(train_cfg)
        write_config(run, config)
    log(f"resuming {str(run)!r} at step {trainer.step} (epoch {trainer.epoch})")
    return trainer.fit(max_time=max_time, max_steps=max_steps, on_validation=on_validation)


# -- evaluate ---------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Per-token cross-entropy of a text under a model, in nats, bits and perplexity."""

    file: str
    level: str
    tokens: int  # predicted tokens
    unknown: int  # tokens outside the vocabulary (scored as <unk>)
    nats: float  # total negative log-likelihood, nats
    interpolation: dict[str, Any] | None = None  # {"ngram": path, "lambda": weight} if mixed

    @property
    def unit(self) -> str:
        return _unit(self.level)

    @property
    def nats_per_token(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        nats = self.nats_per_token
        return math.exp(nats) if nats < 700 else math.inf  # beyond float range: inf, no error

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "level": self.level,
            "tokens": self.tokens,
            "unknown": self.unknown,
            f"nats_per_{self.unit}": self.nats_per_token,
            f"bits_per_{self.unit}": self.bits_per_token,
            "perplexity": self.perplexity,
            **({"interpolation": self.interpolation} if self.interpolation else {}),
        }


def evaluate(
    run: str | os.PathLike[str] | LoadedRun,
    file: str | os.PathLike[str],
    *,
    batch_size: int = 16,
    bptt: int = 256,
    device: str | None = "auto",
    ngram: str | os.PathLike[str] | None = None,
    lam: float | None = None,
    tune_lambda: str | os.PathLike[str] | None = None,
    dynamic: float | None = None,
    weights: str = "best",
    progress: bool | None = None,
) -> EvalResult:
    """Cross-entropy of ``file`` under the run's best model (or under an ARPA file).

    Stream mode: the state is carried through the whole file (every token after a first
    ``</s>`` of context is predicted). Sentence mode: each line is scored on its own, as
    :func:`score` does, so the total is exactly the sum of the sentence scores.

    ``ngram`` (an ARPA file) is interpolated word by word with weight ``lam`` for the run
    (Mikolov's convention), or with the weight that minimises the interpolated perplexity of
    the text ``tune_lambda``. ``dynamic`` (a learning rate; stream mode) scores with dynamic
    evaluation: the model keeps learning from the text as it reads it (each window of
    tokens scored before the SGD step on it; see
    :func:`~rnnkit.evaluation.stream.dynamic_log_probs`), and the ``tune_lambda`` text is
    read the same way, from the saved weights again.

    Memory: without ``ngram`` and ``dynamic``, the model and O(``batch_size`` x ``bptt``)
    (stream mode: the text's ids wait in a temporary file, 4 bytes a token on disk, and are
    read a window at a time; sentence mode: a block of lines at a time, see
    :func:`~rnnkit.evaluation.sentences.iter_line_scores`), whatever the text's size or
    line lengths. ``ngram`` and ``dynamic`` keep every token's log-probability (8 bytes
    each). ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
    if dynamic is not None and not (math.isfinite(dynamic) and dynamic >= 0):
        raise ConfigError(f"--dynamic must be a learning rate of 0 or more, not {dynamic}.")
    if not isinstance(run, LoadedRun) and _is_arpa(run):
        if dynamic is not None:
            raise ConfigError("--dynamic adapts an RNN run as it reads: MODEL is an ARPA file.")
        check_interpolation_flags(ngram, lam, tune_lambda, model_is_arpa=True)
        scores = _arpa(run).score_sentences(_lines(file, "evaluation"))
        return EvalResult(
            str(file), "word", scores.num_tokens, scores.num_oov, -scores.total_log10 * math.log(10)
        )
    check_interpolation_flags(ngram, lam, tune_lambda)
    if bptt < 1:
        raise ConfigError(f"--bptt must be at least 1, not {bptt}.")
    loaded = _as_run(run, device, weights)
    if ngram is None and dynamic is None:
        return _evaluate_streaming(loaded, file, batch_size, bptt, progress)
    logp, unknown = _token_log_probs(loaded, file, batch_size, bptt, dynamic)
    if ngram is None:
        return EvalResult(str(file), loaded.vocab.level, len(logp), unknown, -float(logp.sum()))
    if loaded.vocab.level != "word":
        raise ConfigError("--ngram needs a word-level run: n-gram models here are over words.")
    model = _arpa(ngram)
    if tune_lambda is not None:
        valid, _ = _token_log_probs(loaded, tune_lambda, batch_size, bptt, dynamic)
        valid_ng = _aligned_ngram_log10(model, tune_lambda, len(valid))
        lam, _ = tune_lambda_weight(valid / math.log(10), valid_ng)
    lam = check_lambda(DEFAULT_LAMBDA if lam is None else lam)
    mixed = interpolate_log10(
        logp / math.log(10), _aligned_ngram_log10(model, file, len(logp)), lam
    )
    result = EvalResult(str(file), "word", len(logp), unknown, -float(mixed.sum()) * math.log(10))
    result.interpolation = {"ngram": str(ngram), "lambda": lam}
    return result


def _is_arpa(model: str | os.PathLike[str]) -> bool:
    """An ARPA file (plain or gzip) rather than a run directory."""
    return Path(model).is_file()


def _arpa(path: str | os.PathLike[str]) -> Any:
    from rnnkit.ngram import load_model

    return load_model(path)  # ARPA or binary, by content


def _lines(file: str | os.PathLike[str], what: str) -> list[str]:
    lines = list(iter_lines(file, what))
    if not lines:
        raise DataError(f"{what} file {str(file)!r} is empty: give one sentence a line.")
    return lines


def _token_log_probs(
    loaded: LoadedRun,
    file: str | os.PathLike[str],
    batch_size: int,
    bptt: int,
    dynamic: float | None = None,
) -> tuple[np.ndarray, int]:
    """Each predicted token's log-probability (nats, text order) and the unknown count."""
    vocab = loaded.vocab
    sentence_mode = loaded.mode == "sentence" and vocab.level == "word"
    if dynamic is not None and sentence_mode:
        raise ConfigError(
            "--dynamic reads the text as one stream: this run was trained in sentence mode."
        )
    enc = encode_file(file, vocab, what="evaluation")
    dev = next(loaded.model.parameters()).device
    if sentence_mode:
        bos, eos = markers(vocab)
        sents = Sentences.from_stream(enc.ids, eos, keep_empty=True)
        if len(sents) == 0:
            raise DataError(f"evaluation file {str(file)!r} is empty: give one sentence a line.")
        logp = sentence_log_probs(
            loaded.model, sents, bos, eos, batch_size=max(batch_size, 64), device=dev
        )
        return logp, enc.unknown
    ids = enc.ids
    if vocab.level == "word" and vocab.eos_id is not None:
        ids = np.concatenate([np.array([vocab.eos_id], dtype=np.int32), ids])  # context for line 1
    if len(ids) < 2:
        raise DataError(f"evaluation file {str(file)!r} is empty or too short to score.")
    if dynamic is not None:
        return dynamic_log_probs(loaded.model, ids, dynamic, device=dev), enc.unknown
    return stream_log_probs(
        loaded.model, ids, batch_size=batch_size, bptt=bptt, device=dev
    ), enc.unknown


def _bar(total: float | None, unit: str, desc: str, progress: bool | None) -> Any:
    """A tqdm bar on stderr: shown when ``progress``, or (None) when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        unit_scale=True,
        desc=desc,
        file=sys.stderr,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
        leave=False,
    )


def _input_bytes(file: str | os.PathLike[str]) -> int | None:
    """The size of a regular file in bytes (for a progress bar), None for a pipe."""
    try:
        st = os.stat(file)
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _word_run(
    run: str | os.PathLike[str] | LoadedRun, device: str | None, weights: str
) -> LoadedRun:
    """The run to score sentences with: a word-level one (RunError for a character model)."""
    loaded = _as_run(run, device, weights)
    if loaded.vocab.level != "word" or loaded.vocab.eos_id is None:
        raise RunError(
            f"run {str(loaded.path)!r} is a character-level model, but score gives sentence "
            "probabilities over words; train one with --level word (rnnkit eval gives bits per "
            "character)."
        )
    return loaded


def _interpolation_weight(
    loaded: LoadedRun,
    model: Any,
    lam: float | None,
    tune_lambda: str | os.PathLike[str] | None,
    batch_size: int,
    dev: torch.device,
) -> float:
    """The RNN's weight for score and score_stream: tuned on ``tune_lambda``'s text when given,
    else ``lam`` or the default, checked."""
    if tune_lambda is not None:
        valid_lines = _lines(tune_lambda, "--tune-lambda")
        rnn = score_lines(loaded.model, loaded.vocab, valid_lines, batch_size=batch_size,
                          device=dev)  # fmt: skip
        lam, _ = tune_lambda_weight(
            rnn.scores.token_log10,
            _aligned_scores(model, valid_lines, rnn, tune_lambda).token_log10,
        )
    return check_lambda(DEFAULT_LAMBDA if lam is None else lam)


def _evaluate_streaming(
    loaded: LoadedRun,
    file: str | os.PathLike[str],
    batch_size: int,
    bptt: int,
    progress: bool | None,
) -> EvalResult:
    """:func:`evaluate` without ``ngram`` or ``dynamic``, in O(batch x window) memory."""
    vocab = loaded.vocab
    dev = next(loaded.model.parameters()).device
    if loaded.mode == "sentence" and vocab.level == "word":
        totals = ScoreTotals(str(file))
        with _bar(_input_bytes(file), "B", "evaluating", progress) as bar:
            lines = iter_lines(file, "evaluation")
            for _ in iter_line_scores(
                loaded.model, vocab, lines, totals, batch_size=max(batch_size, 64),
                device=dev, on_scored=bar.update,
            ):  # fmt: skip
                pass
        if totals.num_sentences == 0:
            raise DataError(f"evaluation file {str(file)!r} is empty: give one sentence a line.")
        return EvalResult(str(file), "word", totals.num_tokens, totals.unknown, totals.nats.value)
    first = vocab.eos_id if vocab.level == "word" else None  # </s>: context for line 1
    with _bar(_input_bytes(file), "B", "reading", progress) as bar:
        ids, unknown = encode_file_to_disk(file, vocab, "evaluation", first, bar.update)
    with ids:
        if len(ids) < 2:
            raise DataError(f"evaluation file {str(file)!r} is empty or too short to score.")
        unit = _unit(vocab.level)
        with _bar(len(ids) - 1, unit, "evaluating", progress) as bar:
            nats = stream_nats(loaded.model, ids, batch_size, bptt, dev, on_scored=bar.update)
    return EvalResult(str(file), vocab.level, len(ids) - 1, unknown, nats)


#: Up to this many predictions, a stream's log-probabilities are summed as one array, as
#: :func:`~rnnkit.evaluation.stream.stream_log_probs` gives them (the figures are those of
#: rnnkit 0.1 to the last bit); beyond it, window by window with compensation (O(1)).
EXACT_SUM_LIMIT = 1 << 22


@torch.inference_mode()
def stream_nats(
    model: LanguageModel,
    ids: IdFile,
    batch_size: int = 16,
    bptt: int = 256,
    device: torch.device | str = "cpu",
    warmup: int = 512,
    on_scored: Callable[[int], object] | None = None,
) -> float:
    """The total negative log-likelihood (nats) of the stream ``ids`` as
    :func:`~rnnkit.evaluation.stream.stream_log_probs` scores it (the same rows, warm-up
    states and windows), reading ``batch_size`` x ``bptt`` ids at a time from the file."""
    was_training = model.training
    model.eval()
    N = len(ids)
    length = (N - 1) // batch_size
    rows = batch_size if length >= 1 else 0  # row b: ids[b * length : (b + 1) * length + 1]
    end = rows * length
    keep = np.zeros(max(N - 1, 0), dtype=np.float64) if N - 1 <= EXACT_SUM_LIMIT else None
    total = Sum()
    # (first id of each row, row width, where its predictions go in text order)
    parts = [([b * length for b in range(rows)], length + 1), ([end], N - end)]
    try:
        for starts, width in parts:
            if not starts or width < 2:
                continue
            state = _warm_state_from(model, ids, starts, warmup, device)
            for i in range(0, width - 1, bptt):
                stop = min(i + bptt, width - 1)
                block = np.stack([ids.read(s + i, s + stop + 1) for s in starts])
                x, y = block[:, :-1], block[:, 1:]
                logp, state = model.log_prob(to_tensor(x, device), to_tensor(y, device), state)
                lp = logp.double().cpu().numpy()
                if keep is not None:
                    for r, s in enumerate(starts):
                        keep[s + i : s + stop] = lp[r]
                else:
                    total.add(float(lp.sum()))
                if on_scored is not None:
                    on_scored(lp.size)
    finally:
        model.train(was_training)
    return -float(keep.sum()) if keep is not None else -total.value


def _warm_state_from(
    model: LanguageModel,
    ids: IdFile,
    starts: list[int],
    warmup: int,
    device: torch.device | str,
) -> Any:
    """:func:`~rnnkit.evaluation.stream._warm_state`, the ids read from the file."""
    burn = min([warmup, *starts[1:]] if len(starts) > 1 else [warmup, starts[0]])
    if burn < 1 or all(s == 0 for s in starts):
        return None
    warm = np.stack([ids.read(max(s - burn, 0), max(s - burn, 0) + burn) for s in starts])
    _, state = model.features(to_tensor(warm, device))  # the state only: no output layer
    if starts[0] == 0:  # the very first row reads from the start of the text: a_0 = 0
        zero = model.init_state(1, torch.device(device))
        return cat_states([zero, select_state(state, slice(1, None))])
    return state


def _aligned_ngram_log10(model: Any, file: str | os.PathLike[str], expected: int) -> np.ndarray:
    """The n-gram's per-token log10 probabilities of ``file``, checked against the RNN's count."""
    scores = model.score_sentences(_lines(file, "evaluation"))
    if scores.num_tokens != expected:
        raise DataError(
            f"the run and the n-gram model cut {str(file)!r} into different tokens ({expected} "
            f"and {scores.num_tokens}); interpolation needs the same whitespace tokenisation."
        )
    return np.asarray(scores.token_log10, dtype=np.float64)


# -- score ------------------------------------------------------------------------------


def score(
    run: str | os.PathLike[str] | LoadedRun,
    file: str | os.PathLike[str] | None = None,
    *,
    sentences: Sequence[str] | None = None,
    batch_size: int = 64,
    device: str | None = "auto",
    ngram: str | os.PathLike[str] | None = None,
    lam: float | None = None,
    tune_lambda: str | os.PathLike[str] | None = None,
    weights: str = "best",
) -> ScoreResult:
    """log10 probability of each line of ``file`` (or of each of ``sentences``) as a sentence.

    KenLM's convention: ``</s>`` is predicted and counted, ``<s>`` is context only, OOV words
    are scored as ``<unk>`` and counted. Sentences are scored independently, in padded
    batches of ``batch_size``; the result does not depend on it. ``run`` may be an ARPA file.
    ``ngram``, ``lam`` and ``tune_lambda`` interpolate a run with an n-gram model word by
    word, as in :func:`evaluate` (the OOV flags are the run's).

    The result holds every token's score and every line's words (about 100 bytes a token);
    :func:`score_stream` gives the same scores a line at a time, in bounded memory.
    """
    if (file is None) == (sentences is None):
        raise ConfigError("give the text to score once: a FILE or a list of sentences.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
    name = str(file) if file is not None else "<sentences>"
    lines = list(iter_lines(file, "text to score")) if file is not None else list(sentences or [])
    if not lines:
        raise DataError(f"text to score {name!r} is empty; give one sentence a line.")
    if not isinstance(run, LoadedRun) and _is_arpa(run):
        check_interpolation_flags(ngram, lam, tune_lambda, model_is_arpa=True)
        return ScoreResult(
            name, lines, [ln.split() for ln in lines], _arpa(run).score_sentences(lines)
        )
    check_interpolation_flags(ngram, lam, tune_lambda)
    loaded = _word_run(run, device, weights)
    vocab = loaded.vocab
    dev = next(loaded.model.parameters()).device
    result = score_lines(loaded.model, vocab, lines, batch_size=batch_size, device=dev, file=name)
    if ngram is None:
        return result
    model = _arpa(ngram)
    lam = _interpolation_weight(loaded, model, lam, tune_lambda, batch_size, dev)
    ng = _aligned_scores(model, lines, result, name)
    mixed = interpolate_log10(result.scores.token_log10, ng.token_log10, lam)
    result.scores = dataclasses.replace(result.scores, token_log10=mixed)
    return result


class ScoreStream:
    """The lines of a text scored one by one (:func:`score_stream`): iterate it once for a
    :class:`~rnnkit.evaluation.sentences.LineScore` per line, in text order; ``totals``
    (:class:`~rnnkit.evaluation.sentences.ScoreTotals`) is complete when the iteration is."""

    def __init__(self, scores: Iterator[LineScore], totals: ScoreTotals) -> None:
        self._scores = scores
        self.totals = totals

    def __iter__(self) -> Iterator[LineScore]:
        return self._scores


def score_stream(
    run: str | os.PathLike[str] | LoadedRun,
    file: str | os.PathLike[str] | None = None,
    *,
    sentences: Iterable[str] | None = None,
    per_token: bool = False,
    batch_size: int = 64,
    device: str | None = "auto",
    ngram: str | os.PathLike[str] | None = None,
    lam: float | None = None,
    tune_lambda: str | os.PathLike[str] | None = None,
    weights: str = "best",
    progress: bool | None = None,
) -> ScoreStream:
    """:func:`score` for texts of any size: the same scores, one line at a time.

    Memory: the model, one block of lines (~2 MB of text) and its batches; a line longer
    than 1 MB is read a window at a time and its score accumulated as it goes (its text is
    kept, to be printed), unless ``per_token`` output or an ``ngram`` needs its every token.
    The ``tune_lambda`` text is held whole, as :func:`score` holds it. ``progress``: a tqdm
    bar on stderr (None: only when stderr is a terminal). The flags are checked, and the
    run loaded, before this returns.
    """
    if (file is None) == (sentences is None):
        raise ConfigError("give the text to score once: a FILE or a list of sentences.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}.")
    name = str(file) if file is not None else "<sentences>"
    if file is not None:
        check_readable(file, "text to score")
    lines: Iterable[str] = (
        iter_lines(file, "text to score") if file is not None else (sentences or [])
    )
    if not isinstance(run, LoadedRun) and _is_arpa(run):  # n-gram scores hold every token
        result = score(run, sentences=list(lines), ngram=ngram, lam=lam, tune_lambda=tune_lambda)
        result.file = name
        return _stream_of(result, per_token)
    check_interpolation_flags(ngram, lam, tune_lambda)
    loaded = _word_run(run, device, weights)
    vocab = loaded.vocab
    dev = next(loaded.model.parameters()).device
    mix = None
    if ngram is not None:
        model = _arpa(ngram)
        weight = _interpolation_weight(loaded, model, lam, tune_lambda, batch_size, dev)

        def mix(block: list[str], scores: SentenceScores) -> SentenceScores:
            ng = model.score_sentences(block)
            if not np.array_equal(ng.offsets, scores.offsets):
                raise DataError(
                    f"the run and the n-gram model cut {name!r} into different tokens; "
                    "interpolation needs the same whitespace tokenisation."
                )
            mixed = interpolate_log10(scores.token_log10, ng.token_log10, weight)
            return dataclasses.replace(scores, token_log10=mixed)

    totals = ScoreTotals(name)
    lines = _not_empty(lines, name)

    def scores() -> Iterator[LineScore]:
        size = _input_bytes(file) if file is not None else None
        with _bar(size, "B", "scoring", progress) as bar:
            yield from iter_line_scores(
                loaded.model, vocab, lines, totals, batch_size=batch_size, device=dev,
                per_token=per_token, mix=mix, on_scored=bar.update,
            )  # fmt: skip

    return ScoreStream(scores(), totals)


def _not_empty(lines: Iterable[str], name: str) -> Iterator[str]:
    """The lines, or a DataError now when there are none."""
    it = iter(lines)
    for first in it:
        return itertools.chain([first], it)
    raise DataError(f"text to score {name!r} is empty; give one sentence a line.")


def _stream_of(result: ScoreResult, per_token: bool) -> ScoreStream:
    """A ScoreResult (every token held) served as a ScoreStream."""
    sc = result.scores
    totals = ScoreTotals(result.file, sc.num_sentences, sc.num_tokens, sc.num_oov)
    totals.log10.add(sc.total_log10)
    totals.known_log10.add(float(sc.token_log10[~sc.oov].sum()))
    totals.nats.add(-sc.total_log10 * math.log(10))

    off = sc.offsets

    def scores() -> Iterator[LineScore]:
        for s, rec in enumerate(result.records()):
            a, b = int(off[s]), int(off[s + 1])
            yield LineScore(
                rec["text"], rec["log10_prob"], rec["tokens"], rec["oovs"],
                *((result.tokens[s], sc.token_log10[a:b], sc.oov[a:b]) if per_token else ()),
            )  # fmt: skip

    return ScoreStream(scores(), totals)


def _aligned_scores(
    model: Any, lines: list[str], rnn: ScoreResult, name: str | os.PathLike[str]
) -> Any:
    """The n-gram's sentence scores, checked to hold the same tokens as the run's."""
    ng = model.score_sentences(lines)
    if not np.array_equal(ng.offsets, rnn.scores.offsets):
        raise DataError(
            f"the run and the n-gram model cut {str(name)!r} into different tokens; "
            "interpolation needs the same whitespace tokenisation."
        )
    return ng


# -- generate ---------------------------------------------------------------------------


def generate(
    run: str | os.PathLike[str] | LoadedRun,
    prompt: str = "",
    *,
    max_new_tokens: int = 200,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    seed: int | None = None,
    allow_unk: bool = False,
    device: str | None = "auto",
    weights: str = "best",
    beam: int | None = None,
    n_best: int | None = None,
    alpha: float = 0.0,
) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (the prompt itself is not repeated).

    A run trained in sentence mode samples sentences: from ``<s>`` (and the prompt's words)
    until ``</s>`` (not shown) or ``max_new_tokens``. ``<unk>`` is never drawn unless
    ``allow_unk`` (the seeds' tutorial resamples it). With ``beam`` (K) the ``n_best`` (1)
    most probable continuations by beam search, best first, instead of samples (a stream
    run's are all cut at ``max_new_tokens``); ``alpha`` is GNMT's length penalty.
    """
    scored = generate_scored(
        run,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        num_samples=num_samples,
        seed=seed,
        allow_unk=allow_unk,
        device=device,
        weights=weights,
        beam=beam,
        n_best=n_best,
        alpha=alpha,
    )
    return [text for text, _ in scored]


def generate_scored(
    run: str | os.PathLike[str] | LoadedRun,
    prompt: str = "",
    *,
    max_new_tokens: int = 200,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    seed: int | None = None,
    allow_unk: bool = False,
    device: str | None = "auto",
    weights: str = "best",
    beam: int | None = None,
    n_best: int | None = None,
    alpha: float = 0.0,
) -> list[tuple[str, float]]:
    """:func:`generate`'s continuations, each with its log10 probability given the prompt
    (``</s>`` included in sentence mode; log10 as KenLM and ``rnnkit score`` report)."""
    check_generation(temperature, top_k, top_p, greedy, beam, n_best, alpha, num_samples)
    if max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens must not be negative, not {max_new_tokens}.")
    loaded = _as_run(run, device, weights)
    vocab = loaded.vocab
    enc = encode_text(prompt, vocab)
    if enc.unknown:
        unseen = sorted(
            {t for t in (prompt if vocab.level == "char" else prompt.split()) if t not in vocab}
        )
        shown = ", ".join(repr(t) for t in unseen[:5])
        raise DataError(
            f"the prompt holds {len(unseen)} {_unit(vocab.level)}(s) the model never saw in "
            f"training ({shown}); remove or replace them."
        )
    sentence = loaded.mode == "sentence" and vocab.level == "word"
    context = enc.ids.tolist()
    if sentence:
        context = [markers(vocab)[0], *context]
    if not context:  # start from a boundary: a newline (char) or </s> (word)
        start = vocab.index.get("\n", vocab.eos_id) if vocab.level == "char" else vocab.eos_id
        context = [start if start is not None else 0]
    dev = next(loaded.model.parameters()).device
    generator = torch.Generator(device=dev)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    hyps = continue_context(
        loaded.model,
        context,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        beam=beam,
        n_best=n_best,
        alpha=alpha,
        num_samples=num_samples,
        generator=generator,
        banned=_banned(vocab, allow_unk),
        stop_id=vocab.eos_id if sentence else None,
    )
    rows = [h.tokens for h in hyps]
    log10 = [h.score / math.log(10) for h in hyps]
    if vocab.level == "char":
        texts = [decode(np.array(r, dtype=np.int64), vocab) for r in rows]
        return list(zip(texts, log10, strict=True))
    if sentence:  # the sentence's words, without its </s>
        rows = [r[:-1] if r and r[-1] == vocab.eos_id else r for r in rows]
    space = " " if prompt.strip() else ""
    texts = [decode(np.array(r, dtype=np.int64), vocab) for r in rows]
    texts = [space + t if t and not t.startswith("\n") else t for t in texts]
    return list(zip(texts, log10, strict=True))


def _banned(vocab: Vocab, allow_unk: bool) -> list[int]:
    """Ids never sampled: <unk> (unless allowed) and <s> (context only)."""
    banned = [] if allow_unk else [vocab.unk_id]
    return banned + ([vocab.bos_id] if vocab.bos_id is not None else [])


# -- plot -------------------------------------------------------------------------------


def plot(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write a PNG of the run's learning curves (default RUN/curves.png); return its path."""
    from rnnkit.plotting import plot_learning_curves
    from rnnkit.training.checkpoint import METRICS, check_run_dir
    from rnnkit.training.metrics import read_metrics

    path = check_run_dir(run)
    config = read_config(path)
    records = read_metrics(path / METRICS)
    if not records:
        raise RunError(f"run {str(path)!r} has no metrics yet; train it for a few steps first.")
    target = Path(out) if out is not None else path / "curves.png"
    unit = _unit(config.get("data", {}).get("level", "char"))
    plot_learning_curves(records, target, unit=unit, title=str(path.name))
    return target


__all__ = [
    "EvalResult",
    "ScoreResult",
    "evaluate",
    "generate",
    "generate_scored",
    "load",
    "plot",
    "rescore",
    "score",
    "score_stream",
    "train",
]
