"""Learning-rate schedules driven by the validation loss, and early stopping."""

from __future__ import annotations

import math
from typing import Any


class ValidationSchedule:
    """Decides after each validation: new learning rate, and whether to stop.

    ``rnnlm`` (Mikolov's RNNLM toolkit): once the loss improves by a factor below
    ``min_improvement`` the rate is halved, and halved again after every later validation;
    the next time the improvement falls below the factor, training stops.
    ``plateau``: halve whenever the improvement is below the factor. ``constant``: never.
    ``step`` (Zaremba et al.): the rate is fixed for ``decay_after`` epochs, then multiplied
    by ``lr_decay`` at the end of every later epoch, whatever the validation loss.
    ``linear``: set at every step by :meth:`at_progress`, from the initial rate down to 0 at
    the end of the budget; validations leave it alone.
    ``patience`` > 0 stops after that many validations without a new best loss; ``min_lr``
    > 0 stops once a validation leaves the rate below it (``linear`` excepted: it ends at 0
    by design), so a budget is not spent at a rate that no longer moves the weights.
    """

    def __init__(
        self,
        kind: str,
        lr: float,
        min_improvement: float,
        patience: int,
        lr_decay: float = 0.5,
        decay_after: int = 4,
        min_lr: float = 0.0,
    ) -> None:
        self.kind = kind
        self.lr = lr
        self.initial_lr = lr
        self.lr_decay = lr_decay
        self.decay_after = decay_after
        self.min_improvement = min_improvement
        self.patience = patience
        self.min_lr = min_lr
        self.prev_loss = math.inf
        self.best_loss = math.inf
        self.halving = False
        self.bad = 0

    def step(self, loss: float, epochs_done: int | None = None) -> tuple[bool, str | None]:
        """Record a validation loss; return (is_new_best, reason_to_stop or None).

        ``epochs_done`` is the number of finished epochs when the validation ends an epoch
        (None for a validation in the middle of one); only ``step`` reads it.
        """
        improved = loss * self.min_improvement < self.prev_loss
        is_best = loss < self.best_loss
        stop: str | None = None
        if self.kind == "rnnlm":
            if not improved:
                if self.halving:
                    stop = "validation stopped improving after the learning rate was halved"
                self.halving = True
            if self.halving and stop is None:
                self.lr /= 2
        elif self.kind == "plateau" and not improved and math.isfinite(self.prev_loss):
            self.lr /= 2
        elif self.kind == "step" and epochs_done is not None:
            # epochs 1..decay_after at the initial rate, then one more factor per epoch
            self.lr = self.initial_lr * self.lr_decay ** max(0, epochs_done + 1 - self.decay_after)
        self.bad = 0 if is_best else self.bad + 1
        if stop is None and self.patience and self.bad >= self.patience:
            stop = f"no new best validation loss in {self.patience} validations (patience)"
        if stop is None and self.kind != "linear" and self.lr < self.min_lr:
            stop = f"the learning rate fell to {self.lr:.3g}, below --min-lr {self.min_lr:g}"
        self.prev_loss = loss
        self.best_loss = min(self.best_loss, loss)
        return is_best, stop

    def at_progress(self, progress: float) -> float:
        """``linear``: the rate once ``progress`` (0 to 1) of the budget is spent."""
        self.lr = self.initial_lr * max(0.0, 1.0 - progress)
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "prev_loss": self.prev_loss,
            "best_loss": self.best_loss,
            "halving": self.halving,
            "bad": self.bad,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.prev_loss = float(state["prev_loss"])
        self.best_loss = float(state["best_loss"])
        self.halving = bool(state["halving"])
        self.bad = int(state["bad"])
