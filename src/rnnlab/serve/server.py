"""Running the playground: uvicorn on a socket this module binds (so a busy port is one line of
error and port 0 picks a free one), in the foreground (``rnnlab serve``) or in a thread (tests,
the load benchmark).

Safe by default: :data:`LOCAL_HOSTS` only, unless the caller passes another host explicitly,
which :func:`exposure_warning` words for the command to print.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI

from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.serve.app import create_app
from rnnlab.serve.limits import Limits
from rnnlab.serve.registry import load_registry

DEFAULT_HOST = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str) -> str | None:
    """The warning for binding ``host``, or None for a loopback address."""
    if host in LOCAL_HOSTS:
        return None
    return (
        f"serving on {host}: anyone who can reach this machine on that address can use the "
        "models (there is no login); use the default 127.0.0.1 to keep it local"
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port); a busy or bad address is
    one line of :class:`ConfigError`."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve --host {host!r} ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}); choose another --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def make_server(app: FastAPI) -> uvicorn.Server:
    """A uvicorn server for ``app``: no access log, no signal handlers of its own when run in a
    thread (the caller stops it with ``should_exit``)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def serve(
    run_dirs: Sequence[str | Path],
    *,
    host: str = DEFAULT_HOST,
    port: int = 8000,
    limits: Limits | None = None,
    device: str = "cpu",
    announce: bool = True,
) -> None:
    """Load ``run_dirs`` and serve them until interrupted (``rnnlab serve``)."""
    limits = limits or Limits()
    torch.set_num_threads(limits.threads)
    models = load_registry(run_dirs, device)
    sock = bind(host, port)
    server = make_server(create_app(models, limits))
    if announce:
        names = ", ".join(models)
        print(
            f"rnnlab: serving {names} at {url_of(sock)} ({limits.max_generations} generations "
            f"at once, {limits.threads} torch thread(s) each; Ctrl-C stops)",
            flush=True,
        )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serve_in_thread(
    app: FastAPI, host: str = DEFAULT_HOST, port: int = 0, timeout: float = 20.0
) -> Iterator[str]:
    """Serve ``app`` on ``host``:``port`` (0: a free port) in a background thread; yields the
    base URL once the server accepts connections, and stops it on exit."""
    sock = bind(host, port)
    server = make_server(app)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RnnlabError("the playground server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
