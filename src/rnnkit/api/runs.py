"""What every task's verbs share: devices, threads, the --out folder, resuming, and the
path from a prepared task and model to a trained run directory.

:func:`start_run` writes a new run (vocabulary files, initial checkpoint, config.json naming
the task) and returns the Trainer; :func:`resume_trainer` rebuilds one from a run directory.
Each task's verbs (``api`` for the language model, ``api.classify``, ``api.tag``) prepare
their data and model and hand over here, so every shape trains in the same loop and writes
the same run format.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from rnnkit import distributed
from rnnkit.errors import ConfigError, RunError
from rnnkit.tasks.base import Task
from rnnkit.training.checkpoint import (
    LOCK,
    STATE,
    LoadedRun,
    is_run_dir,
    is_run_file,
    load_run,
    load_state,
    read_config,
    write_config,
    write_error,
)
from rnnkit.training.config import TrainConfig, from_dict
from rnnkit.training.trainer import Trainer, TrainResult
from rnnkit.version import __version__

Log = Callable[[str], None]

# Settings a resumed run may change; everything else must match the saved config.
RESUMABLE = {
    "epochs", "patience", "min_lr", "validate_every", "log_every", "min_improvement",
    "checkpoint_every", "recover", "recover_lr_factor",
}  # fmt: skip


def resolve_device(device: str | None) -> torch.device:
    """'auto' (or None) picks CUDA when available; 'cuda' without CUDA is an error."""
    name = device or "auto"
    if name == "auto":
        auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return distributed.local_device(auto)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available on this machine.")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {name!r}.")
    return distributed.local_device(torch.device(name))  # under torchrun: this rank's GPU


def set_threads(threads: int | None) -> None:
    """Use this many CPU threads (None: torch's default, one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}.")
    torch.set_num_threads(threads)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_resume_flags(saved: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse a flag given on --resume that would change a saved setting."""
    for section in ("model", "data", "training"):
        for key, value in given[section].items():
            if key in RESUMABLE:
                continue
            old = saved.get(section, {}).get(key)
            if old != value:
                raise ConfigError(
                    f"{flag(key)} {value} conflicts with the resumed run's saved value {old}; "
                    "leave it out when resuming."
                )


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, a foreign folder, or a run without --overwrite."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a directory.")
    if out.is_dir() and any(out.iterdir()):
        own = all(is_run_file(p.name) for p in out.iterdir())
        if own and not is_run_dir(out):
            return  # a run killed before its config.json was written: start it again
        if not is_run_dir(out):
            raise ConfigError(
                f"--out {str(out)!r} is a non-empty folder that is not an rnnkit run; choose another."
            )
        if not overwrite:
            raise ConfigError(
                f"--out {str(out)!r} already holds a run; continue it with --resume {out} or "
                "start again with --overwrite."
            )


def clear_out(out: Path) -> None:
    """Make --out an empty run folder (only rnnkit's own files are removed; the lock stays)."""
    if out.is_dir():
        for p in out.iterdir():
            if is_run_file(p.name) and p.name != LOCK:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


class RunLock:
    """An exclusive lock on a run directory while a process trains in it.

    A second ``rnnkit train`` on the same folder gets one sentence and exit status 2 instead
    of mixing its checkpoints and metrics with the first one's. The lock is an flock on
    RUN/.lock: the operating system drops it when its process ends, however it ends, so a
    lock left by a killed process is never stale. Held until :meth:`release` or until the
    object is garbage-collected (the Trainer keeps it).
    """

    def __init__(self, run: Path) -> None:
        self.file: Any = None
        try:
            run.mkdir(parents=True, exist_ok=True)
            self.file = open(run / LOCK, "a+")  # noqa: SIM115 (held for the run's life)
        except OSError as exc:  # a read-only folder or mount, a full disk, a file in the way
            raise write_error(exc, run, "write to run directory") from exc
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.file.close()
            raise RunError(
                f"run directory {str(run)!r} is in use by another rnnkit process; wait for "
                "it to finish or choose another --out."
            ) from exc
        # with the lock held no other process writes here: a temporary file is what a killed
        # process left mid-write (the real file beside it is intact), so it goes
        for orphan in run.glob(".*.tmp"):
            orphan.unlink(missing_ok=True)

    def release(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()  # closing the file drops the flock

    def __del__(self) -> None:
        self.release()


# how torch says an allocation failed (CPU and CUDA), when it raises RuntimeError
_NO_MEMORY = re.compile(r"not enough memory|DefaultCPUAllocator|out of memory|can't allocate")


ModelT = TypeVar("ModelT", bound=nn.Module)


def allocate(build: Callable[[], ModelT]) -> ModelT:
    """``build()``, with a model too large for the memory turned into one sentence."""
    try:
        return build()
    except (RuntimeError, MemoryError) as exc:
        if not isinstance(exc, MemoryError) and not _NO_MEMORY.search(str(exc)):
            raise
        tried = re.search(r"allocate (\d+) bytes", str(exc))
        size = f" (one of its tensors needs {int(tried[1]) / 2**30:,.1f} GiB)" if tried else ""
        raise ConfigError(
            f"the model is too large for this machine's memory{size}; choose a smaller "
            "--hidden-size, --num-layers, --embedding-size or vocabulary."
        ) from None


def split_settings(
    settings: dict[str, Any], sections: dict[str, set[str]]
) -> dict[str, dict[str, Any]]:
    """Sort keyword settings into config sections by name (None values are left out)."""
    parts: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in settings.items():
        if value is None:
            continue
        section = next((s for s, names in sections.items() if key in names), None)
        if section is None:
            known = sorted(set().union(*sections.values()))
            from rnnkit.errors import did_you_mean

            raise ConfigError(f"unknown setting {key!r}{did_you_mean(key, known)}.")
        parts[section][key] = value
    return parts


def field_names(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def start_run(
    out: str | Path | None,
    overwrite: bool,
    task: Task,
    build_model: Callable[[], nn.Module],
    model_config: dict[str, Any],
    data_config: dict[str, Any],
    train_cfg: TrainConfig,
    device: torch.device,
    progress: bool | None,
    log: Log,
    stats: dict[str, Any] | None = None,
) -> Trainer:
    """A new run directory for ``task``: vocabularies, initial checkpoint, config.json.

    ``build_model`` is called after the seed is set, so the same seed gives the same
    initial weights. config.json is written last: the folder is a run once all is in place.
    Under torchrun, rank 0 alone checks, locks and writes the folder.
    """
    if out is None:
        raise ConfigError("--out RUN is required: the folder where the run is saved.")
    out_path = Path(out)
    created = not out_path.exists()

    def prepare() -> RunLock:
        lock = RunLock(out_path)
        clear_out(out_path)
        return lock

    distributed.setup(device)
    distributed.on_main(lambda: check_out(out_path, overwrite))
    # the model first: one too large for the memory fails before the folder is made
    torch.manual_seed(train_cfg.seed)
    model = allocate(build_model)
    lock = distributed.on_main(prepare)  # under torchrun rank 0 alone checks and writes
    if not distributed.world().is_main:
        trainer = Trainer(model, task, train_cfg, out_path, device, progress, log)
        trainer.save_checkpoint()  # takes part in rank 0's (it gathers), writes nothing
        return trainer
    try:
        save_vocabularies = getattr(task, "save_vocabularies", None)
        if save_vocabularies is not None:
            save_vocabularies(out_path)
        trainer = Trainer(model, task, train_cfg, out_path, device, progress=progress, log=log)
        trainer.lock = lock
        trainer.save_checkpoint()
        config = {
            "rnnkit_version": __version__,
            "task": task.name,
            "model": model_config,
            "data": data_config,
            "training": dataclasses.asdict(train_cfg),
            **({"stats": stats} if stats else {}),
        }
        write_config(out_path, config)
    except BaseException as exc:
        # a folder this call made and could not make a run of (a full disk, a model the
        # device cannot hold) goes again: nothing is left half-made
        if created and lock is not None:
            lock.release()
            shutil.rmtree(out_path, ignore_errors=True)
        if isinstance(exc, OSError):  # a vocabulary file on a full disk, say
            raise write_error(exc, out_path, "write to run directory") from exc
        raise
    return trainer


def resume_trainer(
    run: Path,
    train_kw: dict[str, Any],
    build: Callable[[dict[str, Any], TrainConfig], tuple[Task, nn.Module]],
    device: torch.device,
    progress: bool | None,
    log: Log,
) -> Trainer:
    """The Trainer of run ``run`` at its saved state; ``build(config, train_cfg)`` rebuilds
    the task (over the run's vocabularies) and the model from config.json."""
    config = read_config(run)
    main = distributed.world().is_main  # under torchrun every rank reads the run; rank 0 writes
    distributed.setup(device)
    lock = distributed.on_main(lambda: RunLock(run))
    check_resume_flags(config, {"model": {}, "data": {}, "training": train_kw})
    train_cfg = from_dict(TrainConfig, {**config["training"], **train_kw}, "training")
    task, model = build(config, train_cfg)
    trainer = Trainer(model, task, train_cfg, run, device, progress=progress, log=log)
    trainer.lock = lock
    trainer.load_state_dict(load_state(run / STATE))
    log = trainer.log
    if train_kw and main:
        config["training"] = dataclasses.asdict(train_cfg)
        write_config(run, config)
    log(f"resuming {str(run)!r} at step {trainer.step} (epoch {trainer.epoch})")
    return trainer


def load_task_run(
    run: str | os.PathLike[str] | LoadedRun, task: str, what: str, device: str | None, weights: str
) -> LoadedRun:
    """A run of ``task`` (loaded unless already), or RunError naming what it is instead."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run, weights, resolve_device(device))
    if loaded.task_name != task:
        raise RunError(
            f"run {str(loaded.path)!r} is a {loaded.task_name} run, not {what}; "
            "use the verbs of its task."
        )
    return loaded


def check_resume_settings(parts: dict[str, dict[str, Any]]) -> None:
    """A resumed run keeps its model and data: only training settings may be given."""
    if parts["model"] or parts["data"]:
        raise ConfigError("only training settings (such as --epochs) may be given with --resume.")


def check_budget(max_time: float | None, max_steps: int | None) -> None:
    if max_time is not None and not 0 < max_time < math.inf:
        raise ConfigError(
            f"--max-time must be a positive finite number of seconds, not {max_time}."
        )
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, not {max_steps}.")


def check_same_file(saved: Any, rebuilt: Any, name: str, run: Path) -> None:
    """A resumed run's vocabulary must be the one its data gives again."""
    if saved != rebuilt:
        raise RunError(
            f"the data of run {str(run)!r} has changed since it started (its {name} differs), "
            "so the run cannot be resumed exactly."
        )


__all__ = [
    "Log",
    "RunLock",
    "TrainResult",
    "check_budget",
    "check_out",
    "check_resume_flags",
    "check_resume_settings",
    "clear_out",
    "field_names",
    "resolve_device",
    "resume_trainer",
    "set_threads",
    "split_settings",
    "start_run",
]
