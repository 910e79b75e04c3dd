"""``rnnkit serve RUN [RUN ...]``: the local page (see docs/serve.md).

Binds 127.0.0.1 unless ``--host`` says otherwise (then it warns: the page has no login).
The runs are loaded once, at start; requests name them, never a file.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local page: what a model predicts, and why",
        description="Serve a local page for one or more runs (language models, classifiers, "
        "taggers, translators, generators) and ARPA n-gram models: each token coloured by its probability with its "
        "alternatives, two models side by side, hidden units and gates as heat-maps, "
        "generation token by token, a classifier's evidence, a tagger's labels, a translation with its "
        "attention and sentences generated from a label. Needs "
        "pip install 'rnnkit[serve]'.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory or ARPA file")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (127.0.0.1: this machine only; anything else warns)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument(
        "--weights", choices=("best", "last"), default="best", help="which weights to load (best)"
    )
    p.set_defaults(func=cmd_serve)


def check_port(host: str, port: int) -> None:
    """ConfigError if ``port`` cannot be bound on ``host`` (in use, or not allowed)."""
    from rnnkit.errors import ConfigError

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1 to 65535, not {port}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host} port {port} ({exc.strerror}); choose another --port."
            ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from rnnkit.errors import ConfigError

    try:
        import uvicorn

        from rnnkit.serve.app import create_app
    except ImportError as exc:
        raise ConfigError(
            f"rnnkit serve needs the serve extra ({exc.name} is missing): "
            "pip install 'rnnkit[serve]'."
        ) from None
    from rnnkit.api.runs import resolve_device
    from rnnkit.serve.models import load_models

    check_port(args.host, args.port)
    models = load_models(args.runs, device=str(resolve_device(args.device)), weights=args.weights)
    local = args.host in LOOPBACK
    if not local:
        print(
            f"rnnkit: warning: --host {args.host} lets other machines reach this page; it has "
            "no login, and anyone who reaches it can run the models.",
            file=sys.stderr,
        )
    hosts = [*LOOPBACK, "[::1]"] if local else None
    app = create_app(models, allowed_hosts=hosts)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(m.name for m in models)
    print(f"serving {names} at http://{shown}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
