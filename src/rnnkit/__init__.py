"""rnnkit: recurrent neural network sequence models, correct, fast and pleasant to use.

The verbs of the command line are functions here with the same argument names::

    import rnnkit
    run = rnnkit.train(corpus="shakespeare", out="runs/demo", cell="lstm", max_time=60)
    print(rnnkit.evaluate("runs/demo", "valid.txt"))
    print(rnnkit.generate("runs/demo", prompt="ROMEO:", max_new_tokens=200))

torch is imported only when a verb that needs it is called.
"""

from __future__ import annotations

from typing import Any

from rnnkit.version import __version__

_API = ("train", "evaluate", "score", "generate", "rescore", "load", "plot")

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy re-export: `import rnnkit` stays cheap and torch-free until a verb is used.
    if name in _API:
        from rnnkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
