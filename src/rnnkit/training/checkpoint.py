"""The run directory: rnnkit's checkpoint format.

::

    RUN/
      config.json        model, data and training settings; rnnkit version
      vocab.json         tokens in id order
      model.safetensors  best weights (by validation loss)
      last.safetensors   latest weights
      state.pt           everything needed to resume: weights, optimizer, schedule, RNG
                         states, step, data position, carried hidden state (one file, so it
                         is always self-consistent); loaded with weights_only=True
      metrics.jsonl      one JSON object per logged step or validation

Every file is written to a temporary name, fsynced and renamed, so a crash never leaves a
half-written file where a good one was; a checkpoint's files are all written before any is
renamed, so a full disk leaves the previous checkpoint whole. Weights are safetensors with a
SHA-256 of the tensor data in the metadata, so a truncated or altered file is refused with a
clear message.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnkit.errors import ConfigError, RunError
from rnnkit.models import LanguageModel, ModelConfig, make_model
from rnnkit.text.vocab import Vocab
from rnnkit.utils import atomic_write, atomic_write_json

CONFIG, VOCAB, BEST, LAST, STATE, METRICS = (
    "config.json",
    "vocab.json",
    "model.safetensors",
    "last.safetensors",
    "state.pt",
    "metrics.jsonl",
)
RUN_FILES = (CONFIG, VOCAB, BEST, LAST, STATE, METRICS)
# the other vocabulary files a task may keep (one file each: labels, characters, audio
# feature statistics, extra input columns column{N}.json)
TASK_FILES = (
    "labels.json", "chars.json", "features.json",  # classify, tag
    "src_vocab.json", "tgt_vocab.json", "src.spm.model", "tgt.spm.model",  # translate
    "conditions.json",  # condition (one-to-many)
)  # fmt: skip
LOCK = ".lock"  # held (flock) by the process training in the run
# Every task but the language model, by config.json's "task": the class whose classmethod
# ``open_run(path, config) -> (model, word vocabulary, data-free task)`` rebuilds its runs.
TASK_CLASSES = {
    "classify": "rnnkit.tasks.classify:ClassifyTask",
    "tag": "rnnkit.tasks.tag:TagTask",
    "translate": "rnnkit.tasks.translate:TranslateTask",
    "condition": "rnnkit.tasks.condition:ConditionTask",
}
TASKS = ("lm", *TASK_CLASSES)


def is_run_file(name: str) -> bool:
    """Whether a file name is one rnnkit writes into a run directory."""
    column = name.startswith("column") and name.endswith(".json") and name[6:-5].isdigit()
    own = name in RUN_FILES or name in TASK_FILES or name == LOCK
    return own or column or name.endswith(".tmp")


def _plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors on CPU, contiguous, with tied duplicates stored once."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen and t.numel() > 0:
            continue  # a tied weight (head.linear.weight is embedding.weight)
        seen.add(t.data_ptr())
        out[name] = t.detach().to("cpu").contiguous()
    return out


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(
            tensors[name].numpy().tobytes()
            if tensors[name].dtype != torch.bfloat16
            else tensors[name].view(torch.int16).numpy().tobytes()
        )
    return h.hexdigest()


def weights_bytes(model: torch.nn.Module, **meta: str) -> bytes:
    """The model's weights as a safetensors file, with the checksum in its metadata."""
    tensors = _plain_state_dict(model)
    metadata = {"format": "pt", "sha256": _digest(tensors), **meta}
    return bytes(st_save(tensors, metadata=metadata))


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str], **meta: str) -> None:
    """Write the model's weights as safetensors, atomically, with a checksum."""
    data = weights_bytes(model, **meta)
    with writing(path):
        atomic_write(path, lambda f: f.write(data))


def write_error(
    exc: OSError, path: str | os.PathLike[str], what: str = "write", then: str = ""
) -> RunError:
    """A failed write (a full disk, a quota, a read-only folder or mount) as one sentence."""
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc).rstrip(".")
    return RunError(f"cannot {what} {str(path)!r}: {reason}{then}.")


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], what: str = "write") -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into a RunError naming it and the reason
    (the file being written is left as it was: every write is atomic)."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path, what) from exc


def _stage(path: Path, write: Callable[[IO[bytes]], object]) -> str:
    """Write a file through ``write(f)`` to a temporary name beside ``path``, fsynced;
    returns that name (removed again if anything fails)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            # mkstemp makes the file 0600; give it the mode a plain open() would (umask)
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(f.fileno(), 0o666 & ~mask)
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_checkpoint(files: Sequence[tuple[Path, Callable[[IO[bytes]], object]]]) -> None:
    """Write a checkpoint's files together: each to a temporary name first, and only once all
    are written is each renamed over its old file. A full disk (or any failed write) leaves
    the previous checkpoint's files as they were and no temporary file: RunError naming the
    file and the reason."""
    staged: list[tuple[str, Path]] = []
    path = files[0][0] if files else Path()
    try:
        for path, write in files:
            staged.append((_stage(path, write), path))
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    except OSError as exc:
        raise write_error(
            exc, path, "save the checkpoint to", "; the previous checkpoint is intact"
        ) from exc
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def check_weights_file(path: str | os.PathLike[str]) -> None:
    """RunError unless the safetensors file ``path`` reads whole and its tensors match the
    checksum in its metadata (a file written before checksums existed is only read)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except OSError as exc:
        raise write_error(exc, p, "read") from exc
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise RunError(
            f"{str(p)!r} is truncated or corrupt, so the run cannot be resumed safely; "
            "restore it or start the run again."
        ) from exc
    if metadata.get("sha256") and metadata["sha256"] != _digest(tensors):
        raise RunError(
            f"{str(p)!r} is corrupt (its tensors do not match their checksum), so the run "
            "cannot be resumed safely; restore it or start the run again."
        )


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> dict[str, str]:
    """Load weights into ``model`` and return the file's metadata; RunError for a missing,
    corrupt or mismatched file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise RunError(f"{str(p)!r} is missing; the run has no weights yet.") from exc
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{str(p)!r} is truncated or corrupt and cannot be loaded.") from exc
    if metadata.get("sha256") and metadata["sha256"] != _digest(tensors):
        raise RunError(f"{str(p)!r} has been altered: its tensors do not match its checksum.")
    expected = _plain_state_dict(model)
    for name, t in expected.items():
        if name not in tensors:
            raise RunError(f"{str(p)!r} lacks tensor {name!r} that config.json's model needs.")
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise RunError(
                f"{str(p)!r} holds {name!r} with shape {tuple(tensors[name].shape)} but "
                f"config.json's model needs {tuple(t.shape)}."
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise RunError(f"{str(p)!r} holds tensor {extra[0]!r} that config.json's model lacks.")
    with torch.no_grad():
        params = model.state_dict()
        for name, t in tensors.items():
            params[name].copy_(t)
    return dict(metadata)


def weights_metadata(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The metadata of a safetensors file (None if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        return dict(header.get("__metadata__", {}))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def choose_weights(path: Path, weights: str) -> tuple[Path, str | None]:
    """The weights file to read for ``weights`` (best or last), and a note when the best
    weights cannot be had: a run stopped (or killed) before any validation has no validated
    weights, and reads its last ones rather than the initial ones."""
    if weights not in ("best", "last"):
        raise ConfigError(f"--weights must be best or last, not {weights!r}.")
    if weights == "last":
        return path / LAST, None
    best, last = path / BEST, path / LAST
    meta = weights_metadata(best) if best.exists() else None
    last_meta = weights_metadata(last) if last.exists() else None
    last_step = (last_meta or {}).get("step", "0")
    if meta is None and best.exists():
        return best, None  # damaged: load_weights says so
    unvalidated = meta is None or meta.get("validated") == "no"
    # runs written before rnnkit validated at every stop kept the initial weights (step 0)
    initial = meta is not None and meta.get("step") == "0" and "validated" not in meta
    if (unvalidated or initial) and last_meta is not None and last_step != "0":
        return last, (
            f"run {str(path)!r} stopped before any validation: using its last weights "
            f"(step {last_step}), which no validation has scored."
        )
    return best, None


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    with writing(path):
        atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        return dict(torch.load(p, map_location="cpu", weights_only=True))
    except FileNotFoundError as exc:
        raise RunError(f"{str(p)!r} is missing, so the run cannot be resumed.") from exc
    except Exception as exc:  # torch raises many types for a damaged pickle
        raise RunError(
            f"{str(p)!r} is truncated or corrupt, so the run cannot be resumed."
        ) from exc


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / CONFIG).is_file()


def check_run_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise RunError(f"run directory {str(p)!r} does not exist.")
    if not is_run_dir(p):
        raise RunError(f"{str(p)!r} is not an rnnkit run directory (it has no {CONFIG}).")
    return p


def read_config(run: str | os.PathLike[str]) -> dict[str, Any]:
    p = check_run_dir(run) / CONFIG
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError("no model section")
        return config
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{str(p)!r} is not a valid rnnkit config file.") from exc


def write_config(run: str | os.PathLike[str], config: dict[str, Any]) -> None:
    with writing(Path(run) / CONFIG):
        atomic_write_json(Path(run) / CONFIG, config)


@dataclass
class LoadedRun:
    """A trained model with its vocabulary and settings, ready to evaluate or sample."""

    path: Path
    model: LanguageModel  # a SequenceClassifier or SequenceTagger for those tasks
    vocab: Vocab  # the word vocabulary (an audio classifier's is empty)
    config: dict[str, Any]
    weights: str = BEST  # the file the weights came from
    note: str | None = None  # why they are not the best validated ones, if they are not
    task: Any = None  # classify and tag runs: their Task, without data, for prediction

    @property
    def task_name(self) -> str:
        return task_name(self.config)

    @property
    def level(self) -> str:
        return self.vocab.level

    @property
    def mode(self) -> str:
        """``stream`` or ``sentence``: how the run was trained (see DataConfig)."""
        return str(self.config.get("data", {}).get("mode", "stream"))


def build_model(config: dict[str, Any], vocab: Vocab, path: Path) -> LanguageModel:
    try:
        mcfg = ModelConfig.from_dict(dict(config["model"]))
    except (ConfigError, TypeError) as exc:
        raise RunError(f"{str(path / CONFIG)!r} has an invalid model section: {exc}") from exc
    if mcfg.vocab_size != len(vocab):
        raise RunError(
            f"{str(path / CONFIG)!r} says vocab_size {mcfg.vocab_size} but {VOCAB} holds "
            f"{len(vocab)} tokens."
        )
    return make_model(mcfg)  # config.json's model section names the arch


def task_name(config: dict[str, Any]) -> str:
    """The task a run's config.json names (runs from before tasks existed are "lm")."""
    return str(config.get("task", "lm"))


def _build_task_model(config: dict[str, Any], path: Path) -> tuple[torch.nn.Module, Vocab, Any]:
    """A task run's model, its (input) word vocabulary and its data-free task."""
    name = task_name(config)
    where = TASK_CLASSES.get(name)
    if where is None:
        raise RunError(
            f"{str(path / CONFIG)!r} names task {name!r}, which this rnnkit does not know "
            f"(it knows {', '.join(TASKS)}); upgrade rnnkit."
        )
    module, _, cls = where.partition(":")
    task_cls = getattr(importlib.import_module(module), cls)
    try:
        model, vocab, task = task_cls.open_run(path, config)
    except (ConfigError, TypeError, KeyError) as exc:
        raise RunError(f"{str(path / CONFIG)!r} has an invalid model section: {exc}") from exc
    return model, vocab, task


def load_run(
    run: str | os.PathLike[str], weights: str = "best", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Rebuild a run's model from config.json and load its best (or last) weights."""
    path = check_run_dir(run)
    config = read_config(path)
    task: Any = None
    model: torch.nn.Module
    if task_name(config) == "lm":
        vocab = Vocab.load(path / VOCAB)
        model = build_model(config, vocab, path)
    else:
        model, vocab, task = _build_task_model(config, path)
    file, note = choose_weights(path, weights)
    if note is not None:
        logging.getLogger("rnnkit").warning(note)
    load_weights(model, file)
    model.to(device)
    model.eval()
    # typed as the language model it is for "lm"; classify and tag runs hold their own model
    lm = cast(LanguageModel, model)
    return LoadedRun(path, lm, vocab, config, weights=file.name, note=note, task=task)
