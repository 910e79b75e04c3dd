"""The training loop every task shares: one optimizer step per batch, with everything a run needs.

The Trainer knows no shape. It asks its :class:`~rnnkit.tasks.Task` for batch ``index`` of
``epoch`` (deterministic, so a resumed run sees the batches it would have seen), for the
batch's loss (averaged over the units the task counts: tokens, sentences) and for the
validation figures; it owns the optimizer, clipping, bf16 autocast, the learning-rate schedule,
weight averaging, checkpoints, metrics, progress, Ctrl-C and SIGTERM, and the budgets. The
*carry* (only the stream language model has one: its hidden state, truncated BPTT) is
opaque here: reset to None at each epoch, handed from step to step, saved in state.pt.

After each epoch (and every ``validate_every`` steps) the model is validated, the schedule
decides the learning rate and whether to stop, and the run directory is updated: the best
weights by the task's metric, the last weights and the resume state. A stop between
validations validates the final weights (see :meth:`Trainer._validate_at_stop`).
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

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from rnnkit.errors import RnnkitError
from rnnkit.tasks.base import Task
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
    metric: str = "loss"  # the task's figure that chose the best weights ...
    best_metric: float = math.nan  # ... and its value for them


class _InterruptFlag:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the loop to finish its step, save and stop;
    a second one stops at once. SIGTERM is what SLURM, Kubernetes and most schedulers send
    before they kill a job, so it is treated as Ctrl-C."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.set = False
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _pack_carry(carry: Any) -> dict[str, torch.Tensor]:
    """The carry as CPU tensors for state.pt: a tensor ``h`` or a pair ``h, c`` (LSTM)."""
    if carry is None:
        return {}
    if isinstance(carry, tuple):
        return {"h": carry[0].cpu(), "c": carry[1].cpu()}
    return {"h": carry.cpu()}


def _unpack_carry(packed: dict[str, torch.Tensor], device: torch.device) -> Any:
    if not packed:
        return None
    if "c" in packed:
        return (packed["h"].to(device), packed["c"].to(device))
    return packed["h"].to(device)


class Trainer:
    """Trains ``model`` on ``task`` with the settings ``config``, in run directory ``run``."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        run: Path,
        device: torch.device,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model.to(device)
        self.task = task
        self.config = config
        self.run = Path(run)
        self.device = device
        self.unit = task.unit
        self.progress = progress
        self.log = log or (lambda msg: None)
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
        # The position in the data and the carry: all saved in state.pt.
        self.step = 0
        self.epoch = 0
        self.window = 0  # the batch index within the epoch
        self.tokens = 0  # units trained on (tokens, sentences: the task's unit)
        self.seconds = 0.0  # training time over every call to fit (a resumed run's too)
        self.seconds_before_fit = 0.0
        self.carry: Any = None
        self.last_valid = math.nan
        # the task metric of the weights in model.safetensors (None: none validated yet);
        # kept apart from the schedule's best so a validation at a stop, which the schedule
        # never sees (a resumed run must go on as if never stopped), can still keep its weights
        self.best_saved: float | None = None
        self.best_loss = math.inf  # the validation loss of those weights
        self.validated_step = -1
        self.saved_step = -1
        self.on_validation: Callable[[dict[str, Any], nn.Module], None] | None = None
        self.paused = 0.0  # seconds spent in on_validation, left out of the clock
        self.total_steps = 0  # batches in all the epochs (set by fit)
        self.lock: Any = None  # the run directory's lock, held as long as this Trainer
        # --average: the running mean of the weights since validation first stalled
        self.averaged: AveragedModel | None = None
        # the total gradient norm before clipping of the last step (a tensor, so reading it
        # costs no sync): kept whenever clip > 0, and with clip 0 when record_grad_norm is set
        self.record_grad_norm = False
        self.last_grad_norm: torch.Tensor | None = None

    @property
    def windows(self) -> int:
        """Batches in the current epoch."""
        return self.task.num_batches(self.epoch)

    @property
    def scored_model(self) -> nn.Module:
        """The weights validated and saved: the running average once it has started."""
        if self.averaged is None:
            return self.model
        module = self.averaged.module
        assert isinstance(module, nn.Module)
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
                "best_saved": self.best_saved,
                "best_loss": self.best_loss,
                "validated_step": self.validated_step,
            },
            "hidden": _pack_carry(self.carry),
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
        if "best_saved" in pos:
            self.best_saved = None if pos["best_saved"] is None else float(pos["best_saved"])
        else:  # a run saved before best_saved existed (a language model's: the metric is the
            # loss): model.safetensors holds its schedule's best
            best = self.schedule.best_loss
            self.best_saved = best if math.isfinite(best) else None
        self.best_loss = float(pos.get("best_loss", self.schedule.best_loss))
        self.validated_step = int(pos.get("validated_step", -1))
        self.carry = _unpack_carry(state["hidden"], self.device)
        self.averaged = None
        if state.get("averaged") is not None:
            self._start_averaging()
            assert self.averaged is not None
            self.averaged.load_state_dict(state["averaged"])
        self.metrics.truncate_after(self.step)
        self.saved_step = self.step

    def save_checkpoint(self, best: bool = False, validated: bool = True) -> None:
        """last.safetensors and state.pt (and model.safetensors when ``best``), atomically.

        ``validated`` False marks best weights that no validation has scored (metadata
        ``validated: no``): written only when a run stops before its first validation.
        """
        meta = {"step": str(self.step)}
        self.saved_step = self.step
        if best:
            save_weights(
                self.scored_model, self.run / BEST, **meta, validated="yes" if validated else "no"
            )
        save_weights(self.scored_model, self.run / LAST, **meta)
        save_state(self.state_dict(), self.run / STATE)

    # -- one step and one validation ----------------------------------------------------
    def train_step(self) -> float:
        batch = self.task.batch(self.epoch, self.window)
        self.model.train()
        # bf16 autocast runs the matrix products in bfloat16 (weights, gradients and the
        # optimizer stay float32).
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            loss, units, self.carry = self.task.loss(self.model, batch, self.carry)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip > 0:
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.clip
            )
        elif self.record_grad_norm:
            grads = [q.grad for q in self.model.parameters() if q.grad is not None]
            self.last_grad_norm = torch.nn.utils.get_total_norm(grads)
        self.optimizer.step()
        self.step += 1
        # every few steps: one update reads and writes every weight (for a word LM mostly
        # the embedding), a third of a step's time when done at every step
        if self.averaged is not None and self.step % self.config.average_every == 0:
            self.averaged.update_parameters(self.model)
        self.window += 1
        self.tokens += units
        return loss.item()

    def validate(self) -> dict[str, float]:
        """The task's validation figures for the weights that would be saved."""
        return self.task.validate(self.scored_model)

    # -- the loop -------------------------------------------------------------------------
    def fit(
        self,
        max_time: float | None = None,
        max_steps: int | None = None,
        on_validation: Callable[[dict[str, Any], nn.Module], None] | None = None,
        on_step: Callable[[Trainer, float], None] | None = None,
    ) -> TrainResult:
        """Train until the epochs, the schedule, ``max_time`` seconds or ``max_steps`` end it.

        ``on_validation(record, model)`` is called after each validation with the record
        written to metrics.jsonl; the time it takes is left out of the run's clock (a
        benchmark can score the test set there without spending the training budget).
        ``on_step(trainer, loss)`` is called after each optimizer step with that step's loss
        (nats per unit, before the update), a step that diverges included, before the
        RnnkitError that stops the run.
        """
        cfg = self.config
        self.on_validation = on_validation
        self.paused = 0.0
        start = time.perf_counter()
        start_tokens = self.tokens
        self.seconds_before_fit = self.seconds
        total_steps = self.total_steps = sum(self.task.num_batches(e) for e in range(cfg.epochs))
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
                    self.carry = None  # a_0 = 0 at the start of each pass over the data
                if cfg.lr_schedule == "linear":
                    self._set_lr(self.schedule.at_progress(self._progress(start, max_time)))
                loss = self.train_step()
                if on_step is not None:
                    on_step(self, loss)
                if not math.isfinite(loss):
                    raise RnnkitError(
                        f"training diverged at step {self.step} (the loss is {loss}); lower "
                        "--lr or use --clip. The run keeps its last good checkpoint."
                    )
                ema = loss if math.isnan(ema) else 0.95 * ema + 0.05 * loss
                bar.update(1)
                epoch_batches = self.windows
                end_of_epoch = self.window >= epoch_batches
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
                            "epoch": self.epoch + self.window / epoch_batches,
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
                        stopped = (
                            "interrupted" if interrupt.signum == signal.SIGINT else "terminated"
                        )
                    elif max_steps is not None and self.step >= max_steps:
                        stopped = f"reached --max-steps {max_steps}"
                    elif (
                        max_time is not None
                        and time.perf_counter() - start - self.paused >= max_time
                    ):
                        stopped = f"reached --max-time {max_time:g} s"
            if self.saved_step != self.step:
                self.save_checkpoint()
            if self.validated_step != self.step:
                self._validate_at_stop(stopped)
        elapsed = time.perf_counter() - start - self.paused
        return TrainResult(
            run=self.run,
            stopped=stopped,
            step=self.step,
            epoch=self.epoch,
            best_valid_loss=self.best_loss,
            metric=self.task.metric,
            best_metric=self.best_saved if self.best_saved is not None else math.nan,
            last_valid_loss=self.last_valid,
            elapsed=elapsed,
            tokens_per_second=(self.tokens - start_tokens) / max(elapsed, 1e-9),
            unit=self.unit,
            interrupted=stopped in ("interrupted", "terminated"),
        )

    def _progress(self, start: float, max_time: float | None) -> float:
        """The share of the budget spent: of the steps in ``epochs``, or of the seconds
        up to the end of this call's ``max_time`` (earlier calls' seconds included), whichever
        is further on."""
        progress = self.step / max(1, self.total_steps)
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

    def _validate_at_stop(self, stopped: str) -> None:
        """A stop between validations: validate the final weights and keep them if best.

        Whatever stopped the run (--max-time, --max-steps, Ctrl-C, a signal), the weights that
        eval, score and generate read are never worse than the last ones trained, and never
        the initial ones. The schedule does not see this validation, so a resumed run goes on
        exactly as if it had never stopped. Before any validation the final weights are first
        written as model.safetensors, marked unvalidated, so even an interrupted validation
        leaves trained weights there.
        """
        if self.best_saved is None:
            self.save_checkpoint(best=True, validated=False)
        self.log(f"step {self.step}: {stopped}; validating the final weights")
        figures = self.validate()
        self.validated_step = self.step
        keep = self._keep_if_best(figures)
        record = self._record("final", figures, keep)
        self.metrics.append(record)
        self.log(self._describe(figures, keep, "final valid"))
        self.save_checkpoint(best=keep)

    def _keep_if_best(self, figures: dict[str, float]) -> bool:
        """Whether these weights beat model.safetensors by the task's metric (and note it)."""
        value = figures[self.task.metric]
        keep = self.task.better(value, self.best_saved)
        if keep:
            self.best_saved, self.best_loss = value, figures["loss"]
        return keep

    def _record(self, kind: str, figures: dict[str, float], best: bool) -> dict[str, Any]:
        """A metrics.jsonl record of a validation: valid_loss and the task's other figures."""
        return {
            "kind": kind,
            "step": self.step,
            "epoch": self.epoch + self.window / self.windows,
            "tokens": self.tokens,
            "lr": self.schedule.lr,
            "valid_loss": figures["loss"],
            **{f"valid_{k}": v for k, v in figures.items() if k != "loss"},
            "best": best,
            "averaged": self.averaged is not None,
        }

    def _describe(self, figures: dict[str, float], best: bool, what: str = "valid") -> str:
        loss = figures["loss"]
        others = "".join(f", {k} {v:.4f}" for k, v in figures.items() if k != "loss")
        return (
            f"step {self.step}: {what} {loss:.4f} nats/{self.unit} "
            f"({loss / LN2:.4f} bits/{self.unit}){others}{' (best)' if best else ''}"
        )

    def _validate_and_save(self, bar: Any, start: float) -> str:
        figures = self.validate()
        loss = figures["loss"]
        self.last_valid = loss
        self.validated_step = self.step
        stalled = not loss * self.config.min_improvement < self.schedule.prev_loss
        # The epoch counter has already moved on when a validation ends an epoch.
        _, stop = self.schedule.step(loss, self.epoch if self.window == 0 else None)
        self._set_lr(self.schedule.lr)
        keep = self._keep_if_best(figures)
        record = self._record("valid", figures, keep)
        record["time"] = round(time.perf_counter() - start - self.paused, 3)
        self.metrics.append(record)
        self.log(self._describe(figures, keep) + f", lr {self.schedule.lr:.3g}")
        if self.config.average and self.averaged is None and stalled and not stop:
            self._start_averaging()
            self.log(f"step {self.step}: validation stalled, averaging the weights from here")
        self.save_checkpoint(best=keep)
        if self.on_validation is not None:
            t0 = time.perf_counter()
            self.on_validation(record, self.scored_model)
            self.model.train()
            self.paused += time.perf_counter() - t0
        return stop or ""
