"""``rnnkit serve``: a local page that shows what an RNN predicts, and why.

:func:`~rnnkit.serve.models.load_models` loads the runs (and ARPA files) once;
:func:`~rnnkit.serve.app.create_app` makes the Starlette app that serves the page (every
asset ships in ``rnnkit/serve/static``) and its JSON API. Needs the ``serve`` extra
(``pip install 'rnnkit[serve]'``: starlette and uvicorn). See docs/serve.md.
"""

from rnnkit.serve.models import Limits, RequestError, Served, load_models

__all__ = ["Limits", "RequestError", "Served", "create_app", "load_models"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # starlette is imported only when the app is made
        from rnnkit.serve.app import create_app

        return create_app
    raise AttributeError(name)
