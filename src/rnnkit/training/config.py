"""Training and data settings, saved in config.json so a run can be redone or resumed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from rnnkit.choices import OPTIMIZERS, PRECISIONS, SCHEDULES
from rnnkit.errors import ConfigError, did_you_mean
from rnnkit.models.config import check_types

DEFAULT_LR = {"adam": 2e-3, "sgd": 1.0}


@dataclass
class TrainConfig:
    """Optimisation settings: truncated BPTT over batch columns, clipping, LR schedule.

    ``lr_schedule``: ``rnnlm`` is the RNNLM toolkit's (halve the learning rate once the
    validation loss improves by a factor below ``min_improvement``, halve at every
    validation after that, stop when it fails to improve by that factor again);
    ``plateau`` halves whenever the improvement is below ``min_improvement``;
    ``constant`` never changes it; ``step`` (Zaremba et al.) keeps it for ``decay_after``
    epochs and then multiplies it by ``lr_decay`` after every epoch; ``linear`` lowers it at
    every step in proportion to the budget spent (steps of ``epochs``, or seconds of
    ``--max-time`` when that ends first), reaching 0 at the end (budgeted training, Li et al.
    2020: the best use of a fixed budget, where halving on a noisy stall stops too early).
    ``patience`` stops after that many validations without a new best (0: never);
    ``min_lr`` stops once a validation leaves the rate below it (0: never; not ``linear``).
    ``validate_every`` validates every N steps as well as after each epoch (0: epochs only);
    ``validate_seconds`` after every that many seconds of training as well, and never sooner
    than nine times the last validation's own length after it (validation at most a tenth of
    the time: a large validation text would otherwise eat the budget). ``average``: from the first
    validation that improves by less than ``min_improvement``, keep the running mean of the
    weights (updated every ``average_every`` steps) and validate and save that mean (triggered
    averaging, NT-ASGD, Merity et al. 2018; here with any optimizer and schedule).
    ``checkpoint_every`` also saves the resume state after every that many seconds of
    training (0: only at validations and stops), bounding what a kill can lose.
    ``recover``: on a non-finite loss or gradient, roll back to the last saved state, multiply
    the learning rate by ``recover_lr_factor``, skip the offending batch and go on, up to this
    many times in the run (0: stop with an error at the first, as before).
    """

    batch_size: int = 32
    bptt: int = 64
    optimizer: str = "adam"
    lr: float | None = None  # None: 2e-3 for adam, 1.0 for sgd
    lr_schedule: str = "plateau"
    min_improvement: float = 1.003
    lr_decay: float = 0.5  # --lr-schedule step: factor applied after each epoch ...
    decay_after: int = 4  # ... once this many epochs have run at the initial rate
    clip: float = 5.0  # max gradient norm; 0 turns clipping off
    weight_decay: float = 0.0
    epochs: int = 20
    patience: int = 5
    min_lr: float = 0.0  # stop once the schedule has lowered the rate below this (0: never)
    validate_every: int = 0
    validate_seconds: float = 0.0  # also validate after this many seconds of training (0: off)
    log_every: int = 20
    eval_batch_size: int = 16
    seed: int = 1234
    precision: str = "fp32"  # fp32, or bf16: autocast the training step to bfloat16
    average: bool = False  # average the weights once validation stalls (NT-ASGD)
    average_every: int = 10  # steps between updates of the mean (each reads every weight)
    checkpoint_every: float = 0.0  # seconds of training between resume saves (0: off)
    recover: int = 3  # divergences rolled back before the run stops (0: stop at the first)
    recover_lr_factor: float = 0.5  # the learning rate's factor at each of those

    def validate(self) -> None:
        check_types(self, "training")
        for name in (
            "lr",
            "min_improvement",
            "lr_decay",
            "clip",
            "weight_decay",
            "min_lr",
            "checkpoint_every",
            "validate_seconds",
            "recover_lr_factor",
        ):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be a finite number, not {value}."
                )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be between 0 and 2^63 - 1, not {self.seed}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"--optimizer must be adam or sgd, not {self.optimizer!r}"
                f"{did_you_mean(self.optimizer, OPTIMIZERS)}."
            )
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(
                f"--lr-schedule must be one of {', '.join(SCHEDULES)}, not {self.lr_schedule!r}"
                f"{did_you_mean(self.lr_schedule, SCHEDULES)}."
            )
        for name in (
            "batch_size",
            "bptt",
            "epochs",
            "eval_batch_size",
            "log_every",
            "average_every",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}."
                )
        for name in ("patience", "validate_every", "recover"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative.")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, not {self.lr}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision must be fp32 or bf16, not {self.precision!r}"
                f"{did_you_mean(self.precision, PRECISIONS)}."
            )
        if not self.min_lr >= 0:
            raise ConfigError(f"--min-lr must not be negative, not {self.min_lr}.")
        if self.clip < 0:
            raise ConfigError(f"--clip must not be negative, not {self.clip}.")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"--lr-decay must be in (0, 1], not {self.lr_decay}.")
        if self.decay_after < 0:
            raise ConfigError(f"--decay-after must not be negative, not {self.decay_after}.")
        if self.validate_seconds < 0:
            raise ConfigError(
                f"--validate-every-seconds must not be negative, not {self.validate_seconds}."
            )
        if self.checkpoint_every < 0:
            raise ConfigError(
                f"--checkpoint-every must not be negative, not {self.checkpoint_every}."
            )
        if not 0.0 < self.recover_lr_factor <= 1.0:
            raise ConfigError(
                f"--recover-lr-factor must be in (0, 1], not {self.recover_lr_factor}."
            )
        if self.min_improvement < 1.0:
            raise ConfigError(
                f"--min-improvement must be at least 1.0, not {self.min_improvement}."
            )

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


def from_dict(cls: Any, data: dict[str, Any], what: str) -> Any:
    """Build a settings dataclass from a dict, naming any unknown key."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown {what} setting {unknown[0]!r}{did_you_mean(unknown[0], names)}."
        )
    obj = cls(**data)
    check_types(obj, what)
    obj.validate()
    return obj
