"""Models: the recurrent language model and its output layers (no I/O, nothing printed)."""

from rnnkit.models.config import CELLS, NONLINEARITIES, ModelConfig
from rnnkit.models.rnnlm import RNNLanguageModel, State, cat_states, detach_state, select_state

__all__ = [
    "CELLS",
    "NONLINEARITIES",
    "ModelConfig",
    "RNNLanguageModel",
    "State",
    "cat_states",
    "detach_state",
    "select_state",
]
