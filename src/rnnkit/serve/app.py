"""The HTTP side: a Starlette app over :mod:`rnnkit.serve.models`.

Routes: ``GET /`` (the page), ``GET /static/...`` (its script and style, shipped in the
package), ``GET /api/models``, and ``POST /api/score``, ``/api/compare``, ``/api/hidden``,
``/api/generate`` (server-sent events), ``/api/classify``, ``/api/tag``, ``/api/translate``,
``/api/condition``; each POST takes a JSON object. The models are fixed when the app is made: a request names one of them by name,
never a file. Every answer under ``/api`` is JSON (or an event stream): a refused request is
a 4xx with ``{"error": "one sentence"}``, never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rnnkit.errors import RnnkitError
from rnnkit.serve.models import (
    Conditioning,
    Limits,
    RequestError,
    Sampling,
    Served,
    classify_text,
    compare_texts,
    condition_generate,
    generate_stream,
    hidden_units,
    prepare_generation,
    score_text,
    tag_text,
    translate_text,
)

STATIC = Path(__file__).resolve().parent / "static"
CONDITION_FIELDS = [
    *("model", "label", "num_samples", "greedy", "temperature", "top_k", "top_p", "seed"),
    *("beam", "n_best", "alpha", "max_len"),
]
log = logging.getLogger("rnnkit.serve")


def _clean(value: Any) -> Any:
    """JSON has no infinities or NaN: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(_clean(data), status_code=status)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# -- reading a request -----------------------------------------------------------------------


async def read_json(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object; a 4xx RequestError for anything else or anything too big."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(415, "send the request body as JSON (Content-Type: application/json).")
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "the Content-Length header is not a number.") from None
        if size > limit:
            raise RequestError(413, f"the request body has {size:,} bytes; the limit is {limit:,}.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the request body is over the limit of {limit:,} bytes.")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object.")
    return data


class Fields:
    """Typed access to a request's fields; unknown fields and wrong types are 400s."""

    def __init__(self, data: dict[str, Any], allowed: Sequence[str]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise RequestError(
                400, f"unknown field {unknown[0]!r}; this request takes {', '.join(allowed)}."
            )
        self.data = data

    def text(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise RequestError(400, f"the field {name!r} is required (a string).")
        if not isinstance(value, str):
            raise RequestError(400, f"the field {name!r} must be a string.")
        return value

    def integer(
        self, name: str, default: int | None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self.data.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(400, f"the field {name!r} must be a whole number.")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise RequestError(400, f"the field {name!r} must be {lo} to {hi}, not {value}.")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise RequestError(400, f"the field {name!r} must be true or false.")
        return value

    def number(self, name: str) -> float | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError(400, f"the field {name!r} must be a number.")
        if not math.isfinite(value):
            raise RequestError(400, f"the field {name!r} must be a finite number.")
        return float(value)

    def numbers(self, name: str, whole: bool = False) -> list[Any] | None:
        value = self.data.get(name)
        if value is None:
            return None
        kinds = int if whole else int | float
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, kinds) for v in value
        ):
            what = "whole numbers" if whole else "numbers"
            raise RequestError(400, f"the field {name!r} must be a list of {what}.")
        return value


# -- the app ---------------------------------------------------------------------------------


def create_app(
    models: Sequence[Served],
    limits: Limits | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The page and its API over ``models`` (fixed for the app's life). ``allowed_hosts``:
    the Host headers answered (the CLI passes the loopback names, so a page elsewhere cannot
    reach the server through DNS rebinding); None answers any."""
    lim = limits or Limits()
    by_name = {m.name: m for m in models}
    streams = threading.BoundedSemaphore(lim.max_streams)

    def model(fields: Fields, key: str = "model") -> Served:
        name = fields.text(key)
        served = by_name.get(name)
        if served is None:
            raise RequestError(
                404, f"no model {name!r} here; the server shows {', '.join(sorted(by_name))}."
            )
        return served

    def top_k(fields: Fields) -> int:
        k = fields.integer("top_k", 5, 0, lim.max_top_k)
        assert k is not None
        return k

    Handler = Callable[[Request], Awaitable[Response]]

    def endpoint(fn: Callable[[Request], Awaitable[Response]]) -> Handler:
        """Any error as a JSON answer: 4xx with the user's sentence, 500 without details."""

        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except RequestError as exc:
                return _error(exc.status, exc.message)
            except RnnkitError as exc:
                return _error(400, str(exc))
            except Exception:
                log.exception("request %s failed", request.url.path)
                return _error(500, "the server failed on this request; its log says why.")

        return wrapped

    def compute(fields_of: Sequence[str], work: Callable[[Fields], Any]) -> Handler:
        """A POST endpoint: read the body, run ``work`` in a worker thread, answer JSON."""

        async def handler(request: Request) -> Response:
            fields = Fields(await read_json(request, lim), fields_of)
            return _json(await run_in_threadpool(work, fields))

        return endpoint(handler)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def list_models(request: Request) -> Response:
        return _json({"models": [m.info() for m in models], "limits": lim.to_dict()})

    def do_score(f: Fields) -> Any:
        return score_text(model(f), f.text("text"), top_k(f), lim)

    def do_compare(f: Fields) -> Any:
        a, b = model(f, "a"), model(f, "b")
        return compare_texts(a, b, f.text("text"), top_k(f), lim)

    def do_hidden(f: Fields) -> Any:
        units = f.numbers("units", whole=True)
        return hidden_units(
            model(f),
            f.text("text"),
            lim,
            layer=f.integer("layer", None),
            count=f.integer("count", min(16, lim.max_units), 1, lim.max_units) or 1,
            rank=f.text("rank", "variance"),
            pattern=f.numbers("pattern"),
            units=units,
        )

    def do_classify(f: Fields) -> Any:
        return classify_text(model(f), f.text("text"), lim)

    def do_tag(f: Fields) -> Any:
        return tag_text(model(f), f.text("text"), lim)

    def do_translate(f: Fields) -> Any:
        beam = f.integer("beam", 1, 1, lim.max_beam) or 1
        return translate_text(
            model(f),
            f.text("text"),
            lim,
            beam=beam,
            n_best=f.integer("n_best", 1, 1, lim.max_beam) or 1,
            alpha=f.number("alpha") or 0.0,
        )

    def do_condition(f: Fields) -> Any:
        served = model(f)
        label = f.data.get("label")
        c = Conditioning(
            label=None if label is None else f.text("label"),
            num_samples=f.integer("num_samples", 1, 1, lim.max_samples) or 1,
            greedy=f.flag("greedy"),
            temperature=f.number("temperature"),
            top_k=f.integer("top_k", None),
            top_p=f.number("top_p"),
            seed=f.integer("seed", None, 0, 2**63 - 1),
            beam=f.integer("beam", None, 1, lim.max_beam),
            n_best=f.integer("n_best", 1, 1, lim.max_beam) or 1,
            alpha=f.number("alpha") or 0.0,
            max_len=f.integer("max_len", None, 1, lim.max_output_tokens),
        )
        return condition_generate(served, c, lim)

    async def generate(request: Request) -> Response:
        f = Fields(
            await read_json(request, lim),
            ["model", "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"],
        )
        served = model(f)
        s = Sampling(
            prompt=f.text("prompt", ""),
            max_new_tokens=f.integer("max_new_tokens", 200) or 0,
            temperature=f.number("temperature"),
            top_k=f.integer("top_k", None),
            top_p=f.number("top_p"),
            seed=f.integer("seed", None, 0, 2**63 - 1),
        )
        context, sentence = await run_in_threadpool(prepare_generation, served, s, lim)
        if not streams.acquire(blocking=False):
            raise RequestError(
                429, f"{lim.max_streams} generations are streaming already; try again shortly."
            )

        def events() -> Iterator[str]:
            try:
                for event in generate_stream(served, s, context, sentence):
                    name = "done" if event.get("done") else "token"
                    yield f"event: {name}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
            except Exception:
                log.exception("generation failed")
                yield 'event: failed\ndata: {"error": "generation failed; the log says why."}\n\n'
            finally:
                streams.release()

        async def body() -> AsyncIterator[str]:
            async for chunk in iterate_in_threadpool(events()):
                yield chunk

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "server error"
        if status == 404:
            detail = f"nothing at {request.url.path}; the API is under /api (see /api/models)."
        elif status == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
        return _error(status, str(detail))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/models", endpoint(list_models), methods=["GET"]),
        Route("/api/score", compute(["model", "text", "top_k"], do_score), methods=["POST"]),
        Route("/api/compare", compute(["a", "b", "text", "top_k"], do_compare), methods=["POST"]),
        Route(
            "/api/hidden",
            compute(["model", "text", "layer", "count", "rank", "pattern", "units"], do_hidden),
            methods=["POST"],
        ),
        Route("/api/generate", endpoint(generate), methods=["POST"]),
        Route("/api/classify", compute(["model", "text"], do_classify), methods=["POST"]),
        Route("/api/tag", compute(["model", "text"], do_tag), methods=["POST"]),
        Route(
            "/api/translate",
            compute(["model", "text", "beam", "n_best", "alpha"], do_translate),
            methods=["POST"],
        ),
        Route("/api/condition", compute(CONDITION_FIELDS, do_condition), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
    )


__all__ = ["create_app", "read_json"]
