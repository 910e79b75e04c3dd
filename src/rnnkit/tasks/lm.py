"""The language model as a task: next-token prediction over a stream or over sentences.

Stream mode (PTB, characters): the training ids are cut into ``batch_size`` columns and read
``bptt`` steps at a time; the hidden state is the *carry*, handed from window to window and
detached (truncated BPTT), reset to a_0 = 0 at each epoch by the Trainer. Sentence mode:
each batch window comes from one padded bucket of sentences (``<s> .. </s>``), the state
reset at each bucket's first window, padding out of the loss. Validation is exact: the
stream with its state carried, or every sentence from the zero state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import ConfigError, DataError, RnnkitError
from rnnkit.evaluation.sentences import markers, sentence_loss
from rnnkit.evaluation.stream import stream_loss, to_tensor
from rnnkit.models import LanguageModel, detach_state
from rnnkit.tasks.base import Task
from rnnkit.text.batching import batchify, num_windows, window
from rnnkit.text.dataset import DataConfig, PreparedData
from rnnkit.text.sentences import PAD, SentenceBatches, Sentences


class LanguageModelTask(Task):
    """Next-token cross-entropy, averaged over the predicted tokens of each window."""

    name = "lm"

    def __init__(
        self,
        data: PreparedData,
        data_config: DataConfig,
        batch_size: int,
        bptt: int,
        seed: int,
        eval_batch_size: int = 16,
    ) -> None:
        self.unit = "char" if data_config.level == "char" else "word"
        self.bptt = bptt
        self.eval_batch_size = eval_batch_size
        self.sentences: SentenceBatches | None = None
        self.valid_sentences: Sentences | None = None
        self.valid_ids = data.valid_ids
        if data_config.mode == "sentence":
            bos, eos = markers(data.vocab)
            self.valid_sentences = Sentences.from_stream(data.valid_ids, eos)
            if len(self.valid_sentences) == 0:
                raise DataError(
                    f"validation text of {data_config.corpus!r} holds no sentences (only "
                    "empty lines)."
                )
            train = Sentences.from_stream(data.train_ids, eos)
            self.sentences = SentenceBatches(train, bos, eos, batch_size, bptt, seed)
            self.windows = self.sentences.num_windows
            if self.windows == 0:
                raise RnnkitError("the training text holds no sentences (only empty lines).")
            self.columns = np.zeros((0, 1), dtype=np.int32)
        else:
            self.columns = batchify(data.train_ids, batch_size)
            self.windows = num_windows(self.columns, bptt) if self.columns.shape[0] else 0
            if self.windows == 0:
                raise RnnkitError(
                    f"the training text is too short for --batch-size {batch_size}: it "
                    f"needs at least {batch_size + 1} tokens."
                )

    @classmethod
    def stream(
        cls,
        train_ids: np.ndarray,
        valid_ids: np.ndarray,
        batch_size: int,
        bptt: int,
        level: str = "char",
        eval_batch_size: int = 16,
    ) -> LanguageModelTask:
        """A stream-mode task straight from id arrays (benchmarks, examples)."""
        from rnnkit.text.vocab import Vocab

        data = PreparedData(Vocab(["<unk>"], level), train_ids, valid_ids)
        config = DataConfig(corpus="<ids>", level=level)
        return cls(data, config, batch_size, bptt, seed=0, eval_batch_size=eval_batch_size)

    def num_batches(self, epoch: int) -> int:
        return self.windows

    def set_shard(self, rank: int, count: int) -> None:
        """Stream mode: this rank keeps its contiguous share of the batch columns (and their
        carried state), so every rank runs the same windows, truncated BPTT intact."""
        if self.sentences is None and count > 1:
            batch = self.columns.shape[0]
            if batch % count:
                raise ConfigError(
                    f"--batch-size {batch} does not split evenly over {count} ranks; give a "
                    f"multiple of {count} (each rank trains on batch-size / ranks columns)."
                )
            per = batch // count
            self.columns = self.columns[rank * per : (rank + 1) * per]
        super().set_shard(rank, count)

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Inputs and targets (B, T), and whether the carried state must be reset first."""
        if self.sentences is not None:
            x, y, reset = self.sentences.window(epoch, index)
            if self.shard_count > 1:
                rows = self.shard(np.arange(len(x)))
                if self.shard_padding or not (y[rows] != PAD).any():
                    # no share, or this rank's sentences have all ended before this window:
                    # a stand-in row that has tokens here (its loss counts 0), from the zero
                    # state; the rank's own rows are padding until the bucket's end
                    self.shard_padding, reset = True, True
                    rows = np.flatnonzero((y != PAD).any(axis=1))[:1]
                x, y = x[rows], y[rows]
            return x, y, reset
        x, y = window(self.columns, index, self.bptt)
        return x, y, False

    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, int, Any]:
        x, y, reset = batch
        device = next(model.parameters()).device
        inputs, targets = to_tensor(x, device), to_tensor(y, device)
        state = None if reset else detach_state(carry)
        assert isinstance(model, LanguageModel)
        loss, state = model.loss(inputs, targets, state, ignore_index=PAD)
        count = int((y != PAD).sum()) if self.sentences is not None else int(targets.numel())
        return loss, count, detach_state(state)  # the next window starts from these values

    def validate(self, model: nn.Module) -> dict[str, float]:
        assert isinstance(model, LanguageModel)
        device = next(model.parameters()).device
        if self.valid_sentences is not None:
            assert self.sentences is not None
            total, count = sentence_loss(
                model,
                self.valid_sentences,
                self.sentences.bos_id,
                self.sentences.eos_id,
                batch_size=max(self.eval_batch_size, 64),
                device=device,
            )
        else:
            total, count = stream_loss(
                model,
                self.valid_ids,
                batch_size=self.eval_batch_size,
                bptt=max(self.bptt, 256),
                device=device,
            )
        return {"loss": total / max(count, 1)}


def carry_to_dict(carry: Any) -> dict[str, Tensor]:
    """The carried state as CPU tensors for state.pt (an LSTM's is a pair)."""
    if carry is None:
        return {}
    if isinstance(carry, tuple):
        return {"h": carry[0].cpu(), "c": carry[1].cpu()}
    return {"h": carry.cpu()}


def carry_from_dict(packed: dict[str, Tensor], device: torch.device) -> Any:
    if not packed:
        return None
    if "c" in packed:
        return (packed["h"].to(device), packed["c"].to(device))
    return packed["h"].to(device)


__all__ = ["LanguageModelTask", "carry_from_dict", "carry_to_dict"]
