"""More than one process: torch.distributed, as launched by ``torchrun``.

``torchrun --nproc-per-node N -m rnnkit train ...`` starts N processes and gives each one
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment. rnnkit reads them here: with
them, training joins a process group (NCCL on CUDA, gloo on CPU, chosen from the device) and
the Trainer wraps the model in DistributedDataParallel; without them nothing changes (one
process, no process group). See docs/distributed.md for what each rank does.

Every helper here is a no-op (or the identity) in a single process, so callers need not ask.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from rnnkit.errors import ConfigError

T = TypeVar("T")

# How long a rank waits at a collective: rank 0 validates alone while the others wait, and
# NCCL's default (10 minutes) is shorter than a large validation set may take.
TIMEOUT_ENV = "RNNKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 3 * 3600.0


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    active: bool = False  # launched by torchrun: a process group, DDP

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and logs."""
        return self.rank == 0


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(
            f"the environment variable {name}={text!r} is not a whole number."
        ) from None
    if value < 0:
        raise ConfigError(f"the environment variable {name}={text!r} is negative.")
    return value


def world() -> World:
    """The ranks as torchrun's environment describes them (one process without it)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World()
    rank, size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if size < 1 or rank >= size:
        raise ConfigError(f"RANK {rank} does not fit WORLD_SIZE {size} (set by torchrun).")
    return World(rank, size, local, active=True)


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, CUDA means this rank's GPU (``cuda:LOCAL_RANK``), made current."""
    w = world()
    if not w.active or device.type != "cuda":
        return device
    index = device.index if device.index is not None else w.local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"rank {w.rank} wants GPU {index} but this machine has {torch.cuda.device_count()}; "
            "give torchrun --nproc-per-node at most the number of GPUs."
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def setup(device: torch.device) -> World:
    """Join the process group (once) when launched by torchrun: NCCL for CUDA, gloo for CPU."""
    w = world()
    if w.active and not dist.is_initialized():
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    return w


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over the ranks (in place; itself in one process)."""
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def on_main(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 alone (None elsewhere); an error it raises (an RnnkitError: one
    sentence) is raised on every rank, so the others stop as rank 0 does instead of waiting
    for it at the next collective (on another machine torchrun would not stop them). Call
    :func:`setup` first."""
    w = world()
    if not w.active:
        return fn()
    result: T | None = None
    error: Exception | None = None
    if w.is_main:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    error = broadcast(error)
    if error is not None:
        raise error
    return result


def barrier() -> None:
    """Wait until every rank is here (rank 0 has written the run directory, say)."""
    if dist.is_initialized():
        dist.barrier()


def main_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0; a silent one on the other ranks (one copy of each message)."""
    return log if world().is_main else (lambda msg: None)


def cleanup() -> None:
    """Leave the process group (at the end of a torchrun process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "World",
    "all_sum",
    "barrier",
    "broadcast",
    "cleanup",
    "gather",
    "local_device",
    "main_log",
    "on_main",
    "setup",
    "world",
]
