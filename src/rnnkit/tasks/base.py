"""What differs between the RNN shapes, behind one interface the Trainer drives.

A :class:`Task` holds its prepared data (training batches, validation data) and knows how
to turn a batch into a loss, how to validate and how to predict. The Trainer knows none of
this: it asks the task for batch ``index`` of ``epoch`` (deterministic from the seed, so a
resumed run sees exactly the batches it would have seen), calls :meth:`Task.loss`, steps
the optimizer, and calls :meth:`Task.validate` when it is time; it keeps the checkpoint whose
``metric`` is best in the task's ``direction``.

The *carry* is what one step hands to the next: the stream language model's hidden state
(truncated BPTT), ``None`` for every other task. The Trainer resets it to ``None`` at the
start of each epoch and saves it in state.pt (a tensor, a tuple of tensors, or None).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

POOL_BATCHES = 50  # batches per length-sorted pool: low padding, yet batches still vary


def pooled_batches(lengths: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """Example indices cut into batches of similar length, in a random order from ``seed``.

    The examples are shuffled, cut into pools of ``POOL_BATCHES`` batches, each pool sorted
    by length and cut into batches, and the batches shuffled: little padding, and the same
    batches for the same seed on any call (exact resume).
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches: list[np.ndarray] = []
    for s in range(0, len(perm), pool):
        chunk = perm[s : s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


class Task:
    """The part of training that depends on the shape of the problem."""

    name: ClassVar[str] = ""  # config.json's "task"
    unit: str = "token"  # what the loss is averaged over, for logs: char, word, sentence, token
    metric: str = "loss"  # the validation figure that picks the best checkpoint ...
    direction: str = "min"  # ... and whether lower ("min") or higher ("max") is better
    # Under DDP (see rnnkit.distributed) each rank trains on its share of every batch:
    shard_rank: int = 0
    shard_count: int = 1
    shard_padding: bool = False  # the last batch's share was a stand-in whose loss counts 0
    shard_size: int = 0  # the rows of the last batch that were this rank's own

    def set_shard(self, rank: int, count: int) -> None:
        """Train on share ``rank`` of ``count`` of every batch (DDP; the Trainer calls it)."""
        self.shard_rank, self.shard_count = rank, count

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's share of a batch's rows (example indices): ``numpy.array_split`` of
        ``rows`` in ``shard_count`` contiguous parts, so the shares together are the batch
        one process trains on. A batch with fewer rows than ranks leaves some ranks none:
        they get its first row as a stand-in (``shard_padding``; the Trainer counts its loss
        0, so the stand-in's loss must be finite), so every rank still runs the step and
        none waits for the others forever."""
        if self.shard_count == 1:
            self.shard_padding, self.shard_size = False, len(rows)
            return rows
        part = np.array_split(rows, self.shard_count)[self.shard_rank]
        self.shard_padding, self.shard_size = len(part) == 0, len(part)
        return rows[:1] if self.shard_padding else part

    def num_batches(self, epoch: int) -> int:
        """How many training batches epoch ``epoch`` has."""
        raise NotImplementedError

    def batch(self, epoch: int, index: int) -> Any:
        """Training batch ``index`` of ``epoch``: the same for the same seed, on any call."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, int, Any]:
        """The mean loss (nats per unit) of ``batch``, the units it counted, the new carry."""
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation figures: ``loss`` (nats per unit) and the task's ``metric`` among them."""
        raise NotImplementedError

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of :attr:`metric` beats ``best`` (None: nothing yet)."""
        if best is None:
            return True
        return value > best if self.direction == "max" else value < best


__all__ = ["POOL_BATCHES", "Task", "pooled_batches"]
