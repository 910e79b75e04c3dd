"""Tasks: what differs between the RNN shapes (data, batches, loss, metrics, prediction).

One :class:`Task` per shape; the Trainer drives any of them. ``lm`` is the language model
(:class:`LanguageModelTask`).
"""

from rnnkit.tasks.base import Task

__all__ = ["Task"]
