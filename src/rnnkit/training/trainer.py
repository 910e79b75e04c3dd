"""The training loop: truncated BPTT over a token stream, with everything a run needs.

One step trains on one window of ``bptt`` steps of every batch row; the hidden state is
carried to the next window and detached (truncated BPTT), reset to a_0 = 0 at each epoch.
The loss is the cross-entropy per step averaged over the window and the batch. After each
epoch (and every ``validate_every`` steps) the model is validated, the schedule decides the
learning rate and whether to stop, and the run directory is updated: the best weights, the
last weights and the resume state. Ctrl-C saves the resume state before stopping; a run
killed outright resumes from its last saved state.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from rnnkit.errors import RnnkitError
from rnnkit.evaluation.sentences import sentence_loss
from rnnkit.evaluation.stream import stream_loss, to_tensor
from rnnkit.models import LanguageModel, State, detach_state
from rnnkit.text.batching import batchify, num_windows, window
from rnnkit.text.sentences import PAD, SentenceBatches, Sentences
from rnnkit.training.checkpoint import BEST, LAST, METRICS, STATE, save_state, save_weights
from rnnkit.training.config import TrainConfig
from rnnkit.training.metrics import MetricsLog
from rnnkit.training.schedule import ValidationSchedule

LN2 = math.log(2.0)


@dataclass
class TrainResult:
    """How a call to :meth:`Trainer.fit` ended."""

    run: Path
    stopped: str  # why training stopped
    step: int
    epoch: int
    best_valid_loss: float  # nats per token
    last_valid_loss: float
    elapsed: float  # seconds of training in this call
    tokens_per_second: float
    unit: str = "token"
    interrupted: bool = False


class _InterruptFlag:
    """The first Ctrl-C asks the loop to save and stop; a second one stops at once."""

    def __init__(self) -> None:
        self.set = False
        self._old: Any = None

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _pack_hidden(hidden: State | None) -> dict[str, torch.Tensor]:
    if hidden is None:
        return {}
    if isinstance(hidden, tuple):
        return {"h": hidden[0].cpu(), "c": hidden[1].cpu()}
    return {"h": hidden.cpu()}


def _unpack_hidden(packed: dict[str, torch.Tensor], device: torch.device) -> State | None:
    if not packed:
        return None
    if "c" in packed:
        return (packed["h"].to(device), packed["c"].to(device))
    return packed["h"].to(device)


class Trainer:
    """Trains ``model`` on ``train_ids`` and validates on ``valid_ids``, in run directory ``run``.

    Stream mode: ``train_ids`` and ``valid_ids`` are id arrays. Sentence mode: ``train_ids``
    is a :class:`~rnnkit.text.sentences.SentenceBatches` (one window of one padded bucket a
    step, the state reset at each bucket, padding out of the loss) and ``valid_ids`` the
    validation :class:`~rnnkit.text.sentences.Sentences`.
    """

    def __init__(
        self,
        model: LanguageModel,
        train_ids: np.ndarray | SentenceBatches,
        valid_ids: np.ndarray | Sentences,
        config: TrainConfig,
        run: Path,
        device: torch.device,
        unit: str = "token",
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model.to(device)
        self.config = config
        self.run = Path(run)
        self.device = device
        self.unit = unit
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.sentences = train_ids if isinstance(train_ids, SentenceBatches) else None
        if self.sentences is not None:
            self.columns = np.zeros((0, 1), dtype=np.int32)
            self.windows = self.sentences.num_windows
            if self.windows == 0:
                raise RnnkitError("the training text holds no sentences (only empty lines).")
        else:
            assert isinstance(train_ids, np.ndarray)
            self.columns = batchify(train_ids, config.batch_size)
            if self.columns.shape[0] == 0 or num_windows(self.columns, config.bptt) == 0:
                raise RnnkitError(
                    f"the training text is too short for --batch-size {config.batch_size}: it "
                    f"needs at least {config.batch_size + 1} tokens."
                )
            self.windows = num_windows(self.columns, config.bptt)
        self.valid_ids = valid_ids
        self.bf16 = config.precision == "bf16"
        lr = config.learning_rate
        # fused: one pass over each parameter instead of ~10 elementwise kernels; Adam's
        # update was a third of an Elman LM's step on CPU before (40k -> 57k words/s).
        opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD
        self.optimizer: torch.optim.Optimizer = opt_cls(
            model.parameters(), lr=lr, weight_decay=config.weight_decay, fused=True
        )
        self.schedule = ValidationSchedule(
            config.lr_schedule,
            lr,
            config.min_improvement,
            config.patience,
            lr_decay=config.lr_decay,
            decay_after=config.decay_after,
            min_lr=config.min_lr,
        )
        self.metrics = MetricsLog(self.run / METRICS)
        # The position in the data and the carried state: all saved in state.pt.
        self.step = 0
        self.epoch = 0
        self.window = 0
        self.tokens = 0
        self.seconds = 0.0  # training time over every call to fit (a resumed run's too)
        self.seconds_before_fit = 0.0
        self.hidden: State | None = None
        self.last_valid = math.nan
        self.saved_step = -1
        self.on_validation: Callable[[dict[str, Any], LanguageModel], None] | None = None
        self.paused = 0.0  # seconds spent in on_validation, left out of the clock
        # --average: the running mean of the weights since validation first stalled
        self.averaged: AveragedModel | None = None

    @property
    def scored_model(self) -> LanguageModel:
        """The weights validated and saved: the running average once it has started."""
        if self.averaged is None:
            return self.model
        module = self.averaged.module
        assert isinstance(module, LanguageModel)
        return module

    def _start_averaging(self) -> None:
        self.averaged = AveragedModel(self.model)
        self.averaged.update_parameters(self.model)  # the mean starts at the current weights

    # -- the resume state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": _rng_state(),
            "position": {
                "step": self.step,
                "epoch": self.epoch,
                "window": self.window,
                "tokens": self.tokens,
                "last_valid": self.last_valid,
                "seconds": self.seconds,
            },
            "hidden": _pack_hidden(self.hidden),
            "averaged": None
            if self.averaged is None
            else {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        pos = state["position"]
        self.step, self.epoch, self.window = int(pos["step"]), int(pos["epoch"]), int(pos["window"])
        self.tokens, self.last_valid = int(pos["tokens"]), float(pos["last_valid"])
        self.seconds = float(pos.get("seconds", 0.0))
        self.hidden = _unpack_hidden(state["hidden"], self.device)
        self.averaged = None
        if state.get("averaged") is not None:
            self._start_averaging()
            assert self.averaged is not None
            self.averaged.load_state_dict(state["averaged"])
        self.metrics.truncate_after(self.step)
        self.saved_step = self.step

    def save_checkpoint(self, best: bool = False) -> None:
        """last.safetensors and state.pt (and model.safetensors when ``best``), atomically."""
        meta = {"step": str(self.step)}
        self.saved_step = self.step
        if best:
            save_weights(self.scored_model, self.run / BEST, **meta)
        save_weights(self.scored_model, self.run / LAST, **meta)
        save_state(self.state_dict(), self.run / STATE)

    # -- one step and one validation ----------------------------------------------------
    def train_step(self) -> float:
        if self.sentences is not None:
            x, y, reset = self.sentences.window(self.epoch, self.window)
            if reset:
                self.hidden = None  # each bucket of sentences starts from the zero state
        else:
            x, y = window(self.columns, self.window, self.config.bptt)
        inputs, targets = to_tensor(x, self.device), to_tensor(y, self.device)
        self.model.train()
        # bf16 autocast runs the matrix products in bfloat16 (weights, gradients and the
        # optimizer stay float32); padding (PAD) never counts in the loss.
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            loss, hidden = self.model.loss(
                inputs, targets, detach_state(self.hidden), ignore_index=PAD
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.hidden = detach_state(hidden)
        self.step += 1
        # every few steps: one update reads and writes every weight (for a word LM mostly
        # the embedding), a third of a step's time when done at every step
        if self.averaged is not None and self.step % self.config.average_every == 0:
            self.averaged.update_parameters(self.model)
        self.window += 1
        self.tokens += int((y != PAD).sum()) if self.sentences is not None else targets.numel()
        return loss.item()

    def validate(self) -> float:
        model = self.scored_model
        if isinstance(self.valid_ids, Sentences):
            assert self.sentences is not None
            total, count = sentence_loss(
                model,
                self.valid_ids,
                self.sentences.bos_id,
                self.sentences.eos_id,
                batch_size=max(self.config.eval_batch_size, 64),
                device=self.device,
            )
            return total / max(count, 1)
        total, count = stream_loss(
            model,
            self.valid_ids,
            batch_size=self.config.eval_batch_size,
            bptt=max(self.config.bptt, 256),
            device=self.device,
        )
        return total / max(count, 1)

    # -- the loop -------------------------------------------------------------------------
    def fit(
        self,
        max_time: float | None = None,
        max_steps: int | None = None,
        on_validation: Callable[[dict[str, Any], LanguageModel], None] | None = None,
    ) -> TrainResult:
        """Train until the epochs, the schedule, ``max_time`` seconds or ``max_steps`` end it.

        ``on_validation(record, model)`` is called after each validation with the record
        written to metrics.jsonl; the time it takes is left out of the run's clock (a
        benchmark can score the test set there without spending the training budget).
        """
        cfg = self.config
        self.on_validation = on_validation
        self.paused = 0.0
        start = time.perf_counter()
        start_tokens = self.tokens
        self.seconds_before_fit = self.seconds
        total_steps = cfg.epochs * self.windows
        stopped = ""
        ema = math.nan
        bar = tqdm(
            total=total_steps,
            initial=min(self.step, total_steps),
            unit="step",
            file=sys.stderr,
            disable=None if self.progress is None else not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        with _InterruptFlag() as interrupt, bar:
            while not stopped:
                if self.epoch >= cfg.epochs:
                    stopped = f"finished {cfg.epochs} epochs"
                    break
                if self.window == 0:
                    self.hidden = None  # a_0 = 0 at the start of each pass over the data
                if cfg.lr_schedule == "linear":
                    self._set_lr(self.schedule.at_progress(self._progress(start, max_time)))
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise RnnkitError(
                        f"training diverged at step {self.step} (the loss is {loss}); lower "
                        "--lr or use --clip. The run keeps its last good checkpoint."
                    )
                ema = loss if math.isnan(ema) else 0.95 * ema + 0.05 * loss
                bar.update(1)
                end_of_epoch = self.window >= self.windows
                if end_of_epoch:
                    self.epoch += 1
                    self.window = 0
                elapsed = time.perf_counter() - start - self.paused
                self.seconds = self.seconds_before_fit + elapsed
                if self.step % cfg.log_every == 0 or end_of_epoch:
                    tps = (self.tokens - start_tokens) / max(elapsed, 1e-9)
                    bar.set_postfix_str(self._postfix(ema, tps), refresh=False)
                    self.metrics.append(
                        {
                            "kind": "train",
                            "step": self.step,
                            "epoch": self.epoch + self.window / self.windows,
                            "tokens": self.tokens,
                            "time": round(elapsed, 3),
                            "lr": self.schedule.lr,
                            "train_loss": ema,
                            "tokens_per_second": round(tps, 1),
                        }
                    )
                if end_of_epoch or (cfg.validate_every and self.step % cfg.validate_every == 0):
                    stopped = self._validate_and_save(bar, start)
                if not stopped:
                    if interrupt.set:
                        stopped = "interrupted"
                    elif max_steps is not None and self.step >= max_steps:
                        stopped = f"reached --max-steps {max_steps}"
                    elif (
                        max_time is not None
                        and time.perf_counter() - start - self.paused >= max_time
                    ):
                        stopped = f"reached --max-time {max_time:g} s"
            if self.saved_step != self.step:
                self.save_checkpoint()
        elapsed = time.perf_counter() - start - self.paused
        return TrainResult(
            run=self.run,
            stopped=stopped,
            step=self.step,
            epoch=self.epoch,
            best_valid_loss=self.schedule.best_loss,
            last_valid_loss=self.last_valid,
            elapsed=elapsed,
            tokens_per_second=(self.tokens - start_tokens) / max(elapsed, 1e-9),
            unit=self.unit,
            interrupted=stopped == "interrupted",
        )

    def _progress(self, start: float, max_time: float | None) -> float:
        """The share of the budget spent: of the steps in ``epochs``, or of the seconds
        up to the end of this call's ``max_time`` (earlier calls' seconds included), whichever
        is further on."""
        progress = self.step / max(1, self.config.epochs * self.windows)
        if max_time is not None:
            elapsed = time.perf_counter() - start - self.paused
            spent = self.seconds_before_fit + elapsed
            progress = max(progress, spent / (self.seconds_before_fit + max_time))
        return progress

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _postfix(self, loss: float, tps: float) -> str:
        per = f"{loss / LN2:.3f} bits/{self.unit}"
        return f"loss {loss:.3f} nats/{self.unit}, {per}, {tps:,.0f} {self.unit}s/s"

    def _validate_and_save(self, bar: Any, start: float) -> str:
        loss = self.validate()
        self.last_valid = loss
        stalled = not loss * self.config.min_improvement < self.schedule.prev_loss
        # The epoch counter has already moved on when a validation ends an epoch.
        is_best, stop = self.schedule.step(loss, self.epoch if self.window == 0 else None)
        self._set_lr(self.schedule.lr)
        record = {
            "kind": "valid",
            "step": self.step,
            "epoch": self.epoch + self.window / self.windows,
            "tokens": self.tokens,
            "time": round(time.perf_counter() - start - self.paused, 3),
            "lr": self.schedule.lr,
            "valid_loss": loss,
            "best": is_best,
            "averaged": self.averaged is not None,
        }
        self.metrics.append(record)
        self.log(
            f"step {self.step}: valid {loss:.4f} nats/{self.unit} "
            f"({loss / LN2:.4f} bits/{self.unit}){' (best)' if is_best else ''}, lr {self.schedule.lr:.3g}"
        )
        if self.config.average and self.averaged is None and stalled and not stop:
            self._start_averaging()
            self.log(f"step {self.step}: validation stalled, averaging the weights from here")
        self.save_checkpoint(best=is_best)
        if self.on_validation is not None:
            t0 = time.perf_counter()
            self.on_validation(record, self.scored_model)
            self.model.train()
            self.paused += time.perf_counter() - t0
        return stop or ""
