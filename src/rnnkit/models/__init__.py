"""Models: the recurrent and fixed-window language models and their output layers.

No I/O, nothing printed. :func:`make_model` builds the model a :class:`ModelConfig` names.
"""

from rnnkit.models.base import LanguageModel
from rnnkit.models.config import ARCHS, CELLS, NONLINEARITIES, ModelConfig
from rnnkit.models.rnnlm import RNNLanguageModel, State, cat_states, detach_state, select_state
from rnnkit.models.window import WindowLanguageModel


def make_model(config: ModelConfig) -> LanguageModel:
    """The language model of ``config.arch``: RNNLanguageModel or WindowLanguageModel."""
    if config.arch == "window":
        return WindowLanguageModel(config)
    return RNNLanguageModel(config)


__all__ = [
    "ARCHS",
    "CELLS",
    "NONLINEARITIES",
    "LanguageModel",
    "ModelConfig",
    "RNNLanguageModel",
    "State",
    "WindowLanguageModel",
    "cat_states",
    "detach_state",
    "make_model",
    "select_state",
]
