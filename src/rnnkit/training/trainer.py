"""The training loop every task shares: one optimizer step per batch, with everything a run needs.

The Trainer knows no shape. It asks its :class:`~rnnkit.tasks.Task` for batch ``index`` of
``epoch`` (deterministic, so a resumed run sees the batches it would have seen), for the
batch's loss (averaged over the units the task counts: tokens, sentences) and for the
validation figures; it owns the optimizer, clipping, bf16 autocast, the learning-rate schedule,
weight averaging, checkpoints, metrics, progress, Ctrl-C and SIGTERM, and the budgets. The
*carry* (only the stream language model has one: its hidden state, truncated BPTT) is
opaque here: reset to None at each epoch, handed from step to step, saved in state.pt.

Launched by torchrun (see :mod:`rnnkit.distributed` and docs/distributed.md), the Trainer
trains with DistributedDataParallel: each rank trains on its share of every batch (the
task's :meth:`~rnnkit.tasks.Task.shard`), its loss weighted by its share of the batch's
units so that the averaged gradient is one process's gradient of the whole batch; one small
all-reduce per step also carries the signals and rank 0's clock, so every rank stops at the
same step; rank 0 validates (the figures are broadcast) and alone writes the run directory.

After each epoch (and every ``validate_every`` steps) the model is validated, the schedule
decides the learning rate and whether to stop, and the run directory is updated: the best
weights by the task's metric, the last weights and the resume state (also after every
``checkpoint_every`` seconds of training). A stop between validations validates the final
weights (see :meth:`Trainer._validate_at_stop`).

A non-finite loss or gradient is a divergence: with ``recover`` > 0 the Trainer rolls back to
the state it last saved (kept in memory: weights, optimizer, schedule, RNG, data position,
carry), multiplies the learning rate by ``recover_lr_factor``, skips the batch that diverged
and goes on (see :meth:`Trainer._recover`); after ``recover`` recoveries, or with 0, the run
stops with an error. Non-finite weights are never saved.
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
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from rnnkit import distributed
from rnnkit.errors import RnnkitError, RunError
from rnnkit.tasks.base import Task
from rnnkit.training.checkpoint import (
    BEST,
    LAST,
    METRICS,
    STATE,
    check_weights_file,
    weights_bytes,
    write_checkpoint,
    writing,
)
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

    def __init__(self, grace: float = 0.0) -> None:
        self.set = False
        self.signum = 0
        self._old: dict[int, Any] = {}
        # torchrun passes on the signal it gets to every worker, which under a terminal's
        # Ctrl-C got it already: a second signal this soon after the first is the same one
        self.grace = grace
        self._when = 0.0

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set:
            if time.monotonic() - self._when < self.grace:
                return
            raise KeyboardInterrupt
        self.set = True
        self.signum = signum
        self._when = time.monotonic()

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


def _cpu_copy(obj: Any) -> Any:
    """A copy of a state (nested dicts, lists, tuples) with every tensor copied to the CPU:
    the state_dicts of a module and an optimizer share their live tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


class _Diverged(Exception):
    """A non-finite loss, gradient or weight: caught by the loop, which recovers or stops."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def _join_carries(parts: list[Any]) -> dict[str, torch.Tensor]:
    """The ranks' packed carries (None for a stand-in share) as one: batch is dimension 1."""
    kept = [p for p in parts if p]
    if not kept:
        return {}
    return {k: torch.cat([p[k] for p in kept], dim=1) for k in kept[0]}


class _TaskStep(nn.Module):
    """The task's loss as a forward pass, for DistributedDataParallel: DDP synchronises the
    gradients of what runs inside its forward, and tasks call their model's own loss
    methods, not its forward."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: Any, carry: Any) -> tuple[torch.Tensor, int, Any]:
        return self.task.loss(self.model, batch, carry)


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
        self.ema = math.nan  # the smoothed training loss of metrics.jsonl's train records
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
        # --recover: divergences so far, the batches skipped for them (epoch, index) and the
        # product of the learning-rate factors applied; all in state.pt, and kept by a rollback
        self.recoveries = 0
        self.skip: set[tuple[int, int]] = set()
        self.lr_scale = 1.0
        self._good: dict[str, Any] | None = None  # the last saved local state, on the CPU
        self._batch_at = (0, 0)  # the (epoch, index) of the batch of the latest step
        self._grad_norm: torch.Tensor | None = None  # the latest step's, for the divergence check
        self._saved_clock = 0.0  # _clock() at the latest save (--checkpoint-every)
        # --validate-every-seconds: _clock() when the next validation is due, and when the
        # latest one started (its length is read at the next step, from the agreed clock)
        self._validate_at = math.inf
        self._validation_began: float | None = None
        self._bar_seconds = False  # the progress bar counts seconds of --max-time, not steps
        # --average: the running mean of the weights since validation first stalled
        self.averaged: AveragedModel | None = None
        # the total gradient norm before clipping of the last step (a tensor, so reading it
        # costs no sync): kept whenever clip > 0, and with clip 0 when record_grad_norm is set
        self.record_grad_norm = False
        self.last_grad_norm: torch.Tensor | None = None
        # DDP, when launched by torchrun: rank 0 writes, logs and validates; each rank trains
        # on its share of every batch; the step's all-reduce brings what all ranks agree on
        self.world = distributed.setup(device)
        self.writes = self.world.is_main
        self.ddp: DistributedDataParallel | None = None
        self.agreed_signal = 0  # a signal number any rank got (0: none), as of the last step
        self.agreed_clock = 0.0  # rank 0's seconds in this call to fit, as of the last step
        self._interrupt: _InterruptFlag | None = None
        self._start = 0.0
        if self.world.active:
            task.set_shard(self.world.rank, self.world.size)
            if not self.writes:
                self.log = lambda msg: None
                self.progress = False
                # another random stream on each rank (dropout); rank 0 keeps one process's
                seq = np.random.SeedSequence([config.seed, self.world.rank])
                torch.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
            self.metrics.write = self.writes
            # an adaptive softmax's tail clusters sit out a step no target falls in: DDP must
            # then look for unused weights (a graph traversal a step), or it waits for them
            skips = any(isinstance(m, nn.AdaptiveLogSoftmaxWithLoss) for m in model.modules())
            self.ddp = DistributedDataParallel(
                _TaskStep(self.model, task), find_unused_parameters=skips
            )

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
    def state_dict(self, local: dict[str, Any] | None = None) -> dict[str, Any]:
        """The resume state (from ``local``, this rank's, when given). Under DDP every rank
        must call it (it gathers): the carry is put together from the ranks' shares into one
        process's (batch B), so state.pt is the same whatever the number of ranks, and each
        rank's random state is kept."""
        state = dict(self._local_state_dict() if local is None else local)
        if self.world.active:
            parts = distributed.gather((self._own_carry(state["hidden"]), state["rng"]))
            if parts is not None:
                state["hidden"] = _join_carries([p[0] for p in parts])
                state["rng_ranks"] = [p[1] for p in parts]
        return state

    def _local_state_dict(self) -> dict[str, Any]:
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
                "train_loss": self.ema,
                "recoveries": self.recoveries,
                "skip": [list(at) for at in sorted(self.skip)],
                "lr_scale": self.lr_scale,
            },
            "hidden": _pack_carry(self.carry),
            "averaged": None
            if self.averaged is None
            else {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # the weights files eval and generate read must be whole before training goes on
        # (state.pt holds its own weights: a damaged file would only be noticed later)
        distributed.on_main(self.check_weights_files)  # under DDP: every rank stops
        self._check_shapes(state["model"])
        pos = self._restore(state)
        self.seconds = float(pos.get("seconds", 0.0))
        if "best_saved" in pos:
            self.best_saved = None if pos["best_saved"] is None else float(pos["best_saved"])
        else:  # a run saved before best_saved existed (a language model's: the metric is the
            # loss): model.safetensors holds its schedule's best
            best = self.schedule.best_loss
            self.best_saved = best if math.isfinite(best) else None
        self.best_loss = float(pos.get("best_loss", self.schedule.best_loss))
        self.validated_step = int(pos.get("validated_step", -1))
        self.ema = float(pos.get("train_loss", math.nan))
        self.recoveries = int(pos.get("recoveries", 0))
        self.skip = {(int(e), int(i)) for e, i in pos.get("skip", [])}
        self.lr_scale = float(pos.get("lr_scale", 1.0))
        self.schedule.initial_lr = self.config.learning_rate * self.lr_scale
        self.carry = _unpack_carry(self._my_carry(state["hidden"]), self.device)
        ranks = state.get("rng_ranks")
        if self.world.active and self.world.rank > 0:
            if ranks is not None and self.world.rank < len(ranks):
                _set_rng_state(ranks[self.world.rank])
            else:  # started on fewer ranks: a stream of its own, from the step
                seq = np.random.SeedSequence([self.config.seed, self.world.rank, self.step])
                torch.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
        self.averaged = None
        if state.get("averaged") is not None:
            self._start_averaging()
            assert self.averaged is not None
            self.averaged.load_state_dict(state["averaged"])
        with writing(self.metrics.path):
            self.metrics.truncate_after(self.step)
        self.saved_step = self.step
        self._good = None  # taken again at the start of fit

    def _check_shapes(self, saved: dict[str, torch.Tensor]) -> None:
        """RunError when state.pt's weights do not fit the model config.json describes (an
        edited config.json), instead of torch's size-mismatch traceback."""
        wanted = self.model.state_dict()
        for name, tensor in saved.items():
            if name in wanted and tuple(tensor.shape) != tuple(wanted[name].shape):
                raise RunError(
                    f"{str(self.run / STATE)!r} holds {name!r} with shape "
                    f"{tuple(tensor.shape)} but config.json's model needs "
                    f"{tuple(wanted[name].shape)}; restore config.json to resume this run."
                )

    def check_weights_files(self) -> None:
        """RunError naming model.safetensors or last.safetensors if either is damaged."""
        for name in (BEST, LAST):
            if (self.run / name).exists():
                check_weights_file(self.run / name)

    def _own_carry(self, packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The carry of this rank's own rows, for state.pt: a stand-in's is not theirs (rows
        whose sentences have ended get zeros: padding until their bucket ends)."""
        if not self.task.shard_padding:
            return packed
        n = self.task.shard_size
        if not n or not packed:
            return None
        return {k: v.new_zeros(v.shape[0], n, *v.shape[2:]) for k, v in packed.items()}

    def _my_carry(self, packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's share of a saved carry (one process's, batch B): the same rows as its
        share of the batches, so a run resumes on any number of ranks."""
        if not packed or not self.world.active:
            return packed
        batch = next(iter(packed.values())).shape[1]
        rows = torch.from_numpy(self.task.shard(np.arange(batch)))
        return {k: v.index_select(1, rows) for k, v in packed.items()}

    def save_checkpoint(self, best: bool = False, validated: bool = True) -> None:
        """last.safetensors and state.pt (and model.safetensors when ``best``), atomically.

        ``validated`` False marks best weights that no validation has scored (metadata
        ``validated: no``): written only when a run stops before its first validation.
        """
        if not self._weights_finite():
            raise _Diverged("the weights are not finite")  # never saved
        meta = {"step": str(self.step)}
        self.saved_step = self.step
        self._saved_clock = self._clock()
        local = self._local_state_dict()
        if self.config.recover:
            self._good = _cpu_copy(local)  # the state a divergence rolls back to
        state = self.state_dict(local)  # under DDP every rank takes part; rank 0 alone writes
        if not self.writes:
            return
        files = []
        if best:
            validated_meta = {**meta, "validated": "yes" if validated else "no"}
            best_data = weights_bytes(self.scored_model, **validated_meta)
            files.append((self.run / BEST, lambda f: f.write(best_data)))
        last_data = weights_bytes(self.scored_model, **meta)
        files.append((self.run / LAST, lambda f: f.write(last_data)))
        files.append((self.run / STATE, lambda f: torch.save(state, f)))
        # all written before any is renamed: a full disk leaves the previous checkpoint whole
        write_checkpoint(files)

    def _weights_finite(self) -> bool:
        tensors = [p.detach() for p in self.model.parameters()]
        if self.averaged is not None:
            tensors += [p.detach() for p in self.scored_model.parameters()]
        flags = torch.stack([torch.isfinite(t).all() for t in tensors]) if tensors else None
        return flags is None or bool(flags.all())

    # -- one step and one validation ----------------------------------------------------
    def train_step(self) -> float:
        batch = self.task.batch(self.epoch, self.window)
        self.model.train()
        # bf16 autocast runs the matrix products in bfloat16 (weights, gradients and the
        # optimizer stay float32).
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            if self.ddp is None:
                loss, units, self.carry = self.task.loss(self.model, batch, self.carry)
            else:
                loss, units, self.carry = self.ddp(batch, self.carry)
        objective = loss
        if self.ddp is not None:
            loss, units, objective = self._agree(loss, 0 if self.task.shard_padding else units)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self._grad_norm = None
        if self.config.clip > 0:
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.clip
            )
            self._grad_norm = self.last_grad_norm
        elif self.record_grad_norm or self.config.recover:
            # --recover needs the norm even unclipped: a non-finite gradient with a finite
            # loss would poison the weights, and the next batch would be blamed for it
            grads = [q.grad for q in self.model.parameters() if q.grad is not None]
            self._grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None
            if self.record_grad_norm:
                self.last_grad_norm = self._grad_norm
        self.optimizer.step()
        self.step += 1
        # every few steps: one update reads and writes every weight (for a word LM mostly
        # the embedding), a third of a step's time when done at every step
        if self.averaged is not None and self.step % self.config.average_every == 0:
            self.averaged.update_parameters(self.model)
        self.window += 1
        self.tokens += units
        return loss.item()

    def _agree(self, loss: torch.Tensor, units: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """DDP: one all-reduce of this rank's units and loss, the signals and rank 0's clock;
        returns the batch's mean loss over all ranks, its units, and what this rank must
        differentiate.

        The task's loss is a mean over this rank's ``units``; weighted by ``units * N / U``
        (U the batch's units over all ranks), DDP's average of the N gradients is the
        gradient of the whole batch's mean, as one process computes it. A rank with a
        stand-in share (no units of its own) differentiates its loss times zero: a zero
        gradient, through the same weights as its forward pass, so DDP hears from each.
        """
        interrupt = self._interrupt
        signum = interrupt.signum if interrupt is not None and interrupt.set else 0
        clock = time.perf_counter() - self._start - self.paused if self.writes else 0.0
        local = torch.tensor(
            [float(units), float(signum == signal.SIGINT), float(signum == signal.SIGTERM), clock],
            dtype=torch.float64,
            device=self.device,
        )
        weighted = (
            loss.detach().double() * units if units else loss.new_zeros((), dtype=torch.float64)
        )
        total = distributed.all_sum(torch.cat([weighted.reshape(1), local]))
        loss_sum, units_all, sigint, sigterm, clock = total.tolist()
        self.agreed_signal = signal.SIGINT if sigint else signal.SIGTERM if sigterm else 0
        self.agreed_clock = clock
        mean = torch.tensor(loss_sum / units_all if units_all else math.nan)
        scale = units * self.world.size / units_all if units else 0.0
        return mean, int(units_all), loss * scale

    def validate(self) -> dict[str, float]:
        """The task's validation figures for the weights that would be saved (under DDP:
        rank 0's, on every rank, so all take the same decisions)."""
        if not self.world.active:
            return self.task.validate(self.scored_model)
        figures = self.task.validate(self.scored_model) if self.writes else None
        result: dict[str, float] = distributed.broadcast(figures)
        return result

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
        RnnkitError that stops the run. Under DDP, ``on_validation`` runs on rank 0 only and
        ``on_step`` on every rank (with the whole batch's loss).
        """
        cfg = self.config
        self.on_validation = on_validation
        self.paused = 0.0
        start = time.perf_counter()
        start_tokens = self.tokens
        self.seconds_before_fit = self.seconds
        total_steps = self.total_steps = sum(self.task.num_batches(e) for e in range(cfg.epochs))
        stopped = ""
        # a budget in seconds: the bar counts them (the steps of the epochs are only a cap)
        self._bar_seconds = max_time is not None
        bar = tqdm(
            total=round(max_time) if max_time is not None else total_steps,
            initial=0 if max_time is not None else min(self.step, total_steps),
            unit="s" if max_time is not None else "step",
            file=sys.stderr,
            disable=None if self.progress is None else not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        self._start, self.agreed_clock, self._saved_clock = start, 0.0, 0.0
        self._validate_at = cfg.validate_seconds or math.inf
        self._validation_began = None
        if self._good is None and cfg.recover and self._weights_finite():
            self._good = _cpu_copy(self._local_state_dict())  # as state.pt holds it
        with _InterruptFlag(grace=2.0 if self.world.active else 0.0) as interrupt, bar:
            self._interrupt = interrupt
            while not stopped:
                if self.epoch >= cfg.epochs:
                    stopped = f"finished {cfg.epochs} epochs"
                    break
                if self.window == 0:
                    self.carry = None  # a_0 = 0 at the start of each pass over the data
                try:
                    stopped = self._one_batch(
                        bar, start, start_tokens, max_time, max_steps, on_step
                    )
                except _Diverged as exc:
                    self._recover(exc.reason)
                    if not self._bar_seconds:
                        bar.n = min(self.step, total_steps)
                        bar.refresh()
            try:
                if self.saved_step != self.step:
                    self.save_checkpoint()
                if self.validated_step != self.step:
                    self._validate_at_stop(stopped)
            except _Diverged as exc:  # only non-finite weights at a stop: nothing is saved
                raise self._diverged_error(exc.reason) from None
            # under DDP no rank leaves before rank 0 has written: torchrun ends the others
            # when the first rank exits, and a run stopped by a signal exits with 130 or 143
            distributed.barrier()
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

    def _one_batch(
        self,
        bar: Any,
        start: float,
        start_tokens: int,
        max_time: float | None,
        max_steps: int | None,
        on_step: Callable[[Trainer, float], None] | None,
    ) -> str:
        """Train on the next batch (or pass over one skipped by a recovery), log, validate and
        save as due; return why training stops ("" to go on). _Diverged on a divergence."""
        cfg = self.config
        self._batch_at = (self.epoch, self.window)
        trained = self._batch_at not in self.skip
        if trained:
            if cfg.lr_schedule == "linear":
                self._set_lr(self.schedule.at_progress(self._progress(start, max_time)))
            loss = self.train_step()
            if on_step is not None:
                on_step(self, loss)
            norm = math.nan if self._grad_norm is None else float(self._grad_norm)
            if not math.isfinite(loss):
                raise _Diverged(f"the loss is {loss}")
            if self._grad_norm is not None and not math.isfinite(norm):
                raise _Diverged(f"the gradient norm is {norm}")
            self.ema = loss if math.isnan(self.ema) else 0.95 * self.ema + 0.05 * loss
        else:
            # a batch where training diverged once: passed over, and for the stream language
            # model the hidden state starts again from zeros after the gap in the text
            self.window += 1
            self.carry = None
        if self._bar_seconds:
            bar.update(max(0, min(int(self._clock()), bar.total) - bar.n))
        else:
            bar.update(1)
        epoch_batches = self.windows
        end_of_epoch = self.window >= epoch_batches
        if end_of_epoch:
            self.epoch += 1
            self.window = 0
        elapsed = time.perf_counter() - start - self.paused
        self.seconds = self.seconds_before_fit + elapsed
        if trained and (self.step % cfg.log_every == 0 or end_of_epoch):
            tps = (self.tokens - start_tokens) / max(elapsed, 1e-9)
            bar.set_postfix_str(self._postfix(self.ema, tps), refresh=False)
            self._append(
                {
                    "kind": "train",
                    "step": self.step,
                    "epoch": self.epoch + self.window / epoch_batches,
                    "tokens": self.tokens,
                    "time": round(self.seconds, 3),  # over every call to fit: a resumed run's too
                    "lr": self.schedule.lr,
                    "train_loss": self.ema,
                    "tokens_per_second": round(tps, 1),
                }
            )
        stopped = ""
        validate = trained and cfg.validate_every and self.step % cfg.validate_every == 0
        if cfg.validate_seconds:
            now = self._clock()
            if self._validation_began is not None:  # the first step after a validation
                took = now - self._validation_began
                self._validate_at = now + max(cfg.validate_seconds, 9 * took)
                self._validation_began = None
            validate = validate or (trained and now >= self._validate_at)
        if end_of_epoch or validate:
            if cfg.validate_seconds:
                self._validation_began = self._clock()
            stopped = self._validate_and_save(bar, start)
        elif cfg.checkpoint_every and self._clock() - self._saved_clock >= cfg.checkpoint_every:
            self.save_checkpoint()  # --checkpoint-every: what a kill can lose is bounded
        if not stopped:
            interrupt = self._interrupt
            # under DDP: what the ranks agreed on at this step's all-reduce
            signum = (
                self.agreed_signal
                if self.ddp
                else interrupt is not None and interrupt.set and interrupt.signum
            )
            if signum:
                stopped = "interrupted" if signum == signal.SIGINT else "terminated"
            elif max_steps is not None and self.step >= max_steps:
                stopped = f"reached --max-steps {max_steps}"
            elif max_time is not None and self._clock() >= max_time:
                stopped = f"reached --max-time {max_time:g} s"
        return stopped

    def _append(self, record: dict[str, Any]) -> None:
        with writing(self.metrics.path):
            self.metrics.append(record)

    def _diverged_error(self, reason: str) -> RnnkitError:
        after = (
            f" after {self.recoveries} recoveries (--recover {self.config.recover})"
            if self.recoveries
            else ""
        )
        return RnnkitError(
            f"training diverged at step {self.step} ({reason}){after}; lower --lr or use "
            "--clip. The run keeps its last good checkpoint."
        )

    def _recover(self, reason: str) -> None:
        """A divergence at this step: roll back to the last saved state, lower the learning
        rate by ``recover_lr_factor``, mark the batch to be skipped, record it and go on; or,
        after ``recover`` recoveries (or with no good state to go back to), stop with an error.

        The rolled-back state is the one state.pt holds, so a run killed after a recovery
        resumes as if never killed: the recovery is saved at once (its skipped batch, its
        learning rate and its count are in state.pt) and its record kept.
        """
        cfg = self.config
        if self.recoveries >= cfg.recover or self._good is None:
            raise self._diverged_error(reason)
        diverged_step, (epoch, index) = self.step, self._batch_at
        self._rollback(_cpu_copy(self._good))
        self.recoveries += 1
        self.skip.add((epoch, index))
        self.lr_scale *= cfg.recover_lr_factor
        self.schedule.initial_lr *= cfg.recover_lr_factor  # what linear and step start from
        self.schedule.lr *= cfg.recover_lr_factor
        self._set_lr(self.schedule.lr)
        record = {
            "kind": "recover",
            "step": self.step,  # the step rolled back to: later records replay what follows
            "lr": self.schedule.lr,
            "reason": f"{reason} at step {diverged_step}",
            "diverged_step": diverged_step,
            "skipped": {"epoch": epoch, "batch": index},
        }
        with writing(self.metrics.path):
            self.metrics.truncate_after(self.step)
        self._append(record)
        self.log(
            f"step {diverged_step}: training diverged ({reason}); rolled back to step "
            f"{self.step}, learning rate {self.schedule.lr:.3g}, skipping batch {index} of "
            f"epoch {epoch + 1} (recovery {self.recoveries} of {cfg.recover})"
        )
        self.save_checkpoint()

    def _restore(self, state: dict[str, Any]) -> dict[str, Any]:
        """Weights, optimizer, schedule, random state and data position from ``state`` (a
        resume's and a rollback's common part); returns the position record."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        pos = state["position"]
        self.step, self.epoch, self.window = int(pos["step"]), int(pos["epoch"]), int(pos["window"])
        self.tokens, self.last_valid = int(pos["tokens"]), float(pos["last_valid"])
        return pos

    def _rollback(self, state: dict[str, Any]) -> None:
        """Back to a local state (this rank's own carry and random state); the recoveries,
        the skipped batches and the learning-rate factor are kept."""
        pos = self._restore(state)
        self.best_saved = None if pos["best_saved"] is None else float(pos["best_saved"])
        self.best_loss = float(pos["best_loss"])
        self.validated_step = int(pos["validated_step"])
        self.ema = float(pos["train_loss"])
        self.carry = _unpack_carry(state["hidden"], self.device)
        self.averaged = None
        if state.get("averaged") is not None:
            self._start_averaging()
            assert self.averaged is not None
            self.averaged.load_state_dict(state["averaged"])
        self.saved_step = self.step

    def _progress(self, start: float, max_time: float | None) -> float:
        """The share of the budget spent: of the steps in ``epochs``, or of the seconds
        up to the end of this call's ``max_time`` (earlier calls' seconds included), whichever
        is further on."""
        progress = self.step / max(1, self.total_steps)
        if max_time is not None:
            spent = self.seconds_before_fit + self._clock()
            progress = max(progress, spent / (self.seconds_before_fit + max_time))
        return progress

    def _clock(self) -> float:
        """Seconds of training in this call to fit; under DDP rank 0's, as of the last step,
        so that budgets and the linear schedule give every rank the same answer."""
        if self.ddp is not None:
            return self.agreed_clock
        return time.perf_counter() - self._start - self.paused

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
        self._append(record)
        self.log(self._describe(figures, keep, "final valid"))
        self.save_checkpoint(best=keep)

    def _keep_if_best(self, figures: dict[str, float]) -> bool:
        """Whether these weights beat model.safetensors by the task's metric (and note it)."""
        value = figures[self.task.metric]
        # a non-finite figure (weights that overflow in evaluation) is never the best
        keep = math.isfinite(value) and self.task.better(value, self.best_saved)
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
        # seconds of training over every call to fit, as the train records count them
        record["time"] = round(
            self.seconds_before_fit + time.perf_counter() - start - self.paused, 3
        )
        self._append(record)
        self.log(self._describe(figures, keep) + f", lr {self.schedule.lr:.3g}")
        if self.config.average and self.averaged is None and stalled and not stop:
            self._start_averaging()
            self.log(f"step {self.step}: validation stalled, averaging the weights from here")
        self.save_checkpoint(best=keep)
        if self.on_validation is not None and self.writes:
            t0 = time.perf_counter()
            self.on_validation(record, self.scored_model)
            self.model.train()
            self.paused += time.perf_counter() - t0
        return stop or ""
