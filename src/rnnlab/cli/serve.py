"""``rnnlab serve``: the local web playground and JSON API over trained runs."""

from __future__ import annotations

import argparse
import sys

from rnnlab.errors import ConfigError


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web playground and JSON API: write, write poems, score text",
        description="Serve trained runs in a web page (Write, Poem, Score) and a JSON API "
        "(/api/models, /api/generate, /api/poem, /api/score; /docs lists them). Binds "
        "127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="trained text runs to serve")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; another address "
        "exposes the models to the network, with a warning)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument(
        "--max-generations",
        type=int,
        default=2,
        metavar="N",
        help="generations and poems running at once; more are refused with 503 (default 2)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=1000,
        metavar="N",
        help="tokens one generation may draw (default 1000)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per model call (default: the CPU's cores / --max-generations)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from rnnlab.serve.limits import Limits, default_threads
        from rnnlab.serve.server import exposure_warning, serve
    except ImportError as e:
        raise ConfigError(
            f"rnnlab serve needs the serve extra ({e.name} is missing): pip install -e '.[serve]'"
        ) from None

    for flag, value in (
        ("--max-generations", args.max_generations),
        ("--max-length", args.max_length),
        ("--threads", args.threads),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    threads = args.threads or default_threads(args.max_generations)
    limits = Limits(
        max_generations=args.max_generations, max_length=args.max_length, threads=threads
    )
    warning = exposure_warning(args.host)
    if warning:
        print(f"rnnlab: warning: {warning}", file=sys.stderr, flush=True)
    serve(args.run_dirs, host=args.host, port=args.port, limits=limits, device=args.device)
    return 0
