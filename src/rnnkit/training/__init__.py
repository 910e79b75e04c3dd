"""Training: the Trainer (truncated BPTT), schedules, the run directory, metrics."""

from rnnkit.text.dataset import DataConfig
from rnnkit.training.checkpoint import LoadedRun, load_run
from rnnkit.training.config import TrainConfig
from rnnkit.training.trainer import Trainer, TrainResult

__all__ = ["DataConfig", "LoadedRun", "TrainConfig", "TrainResult", "Trainer", "load_run"]
