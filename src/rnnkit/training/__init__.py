"""Training: the Trainer (truncated BPTT), schedules, the run directory, metrics."""

from rnnkit.training.checkpoint import LoadedRun, load_run
from rnnkit.training.config import DataConfig, TrainConfig
from rnnkit.training.trainer import Trainer, TrainResult

__all__ = ["DataConfig", "LoadedRun", "TrainConfig", "TrainResult", "Trainer", "load_run"]
