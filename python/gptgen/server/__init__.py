"""`gptgen serve`: an OpenAI-compatible HTTP server (FastAPI on uvicorn) over one model, its
requests decoded together by a continuous-batching scheduler. Needs the `serve` extra:
`pip install 'gptgen[serve]'`.

scheduler.py owns the engine; protocol.py reads OpenAI's request bodies; app.py is the HTTP
side; metrics.py the Prometheus metrics; settings.py what the command's options set. This
module binds the socket and runs uvicorn.
"""

from __future__ import annotations

import copy
import importlib
import signal
import socket
from typing import Callable

from ..errors import GptgenError
from .settings import Settings

# The packages `gptgen serve` needs beyond gptgen's own: import name -> PyPI name.
REQUIRED = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}

__all__ = ["Settings", "check_installed", "serve"]

# Seconds a stopping server (SIGTERM, Ctrl-C) lets running requests finish before cancelling them.
GRACEFUL_SHUTDOWN_S = 3


def check_installed() -> None:
    """A clear error naming the extra when a package the server needs is missing."""
    missing = []
    for module, pypi in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(pypi)
    if missing:
        raise GptgenError(f"gptgen serve needs {', '.join(missing)}: pip install 'gptgen[serve]'")


def serve(settings: Settings, host: str, port: int, log: Callable[[str], None]) -> None:
    """Listens on host:port (0: a free port), says where on one line, and serves until
    SIGTERM or Ctrl-C; a model that fails to load stops the server with its error."""
    check_installed()
    import uvicorn

    from .app import ServerState, create_app

    sock = _listen(host, port)
    state = ServerState(settings, log)
    config = uvicorn.Config(
        create_app(state), log_config=_log_config(), access_log=True, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on"
    )
    server = uvicorn.Server(config)
    failures: list[str] = []

    def failed(message: str) -> None:
        failures.append(message)
        server.should_exit = True

    state.on_load_failure = failed
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    log(f"gptgen serve: listening on http://{shown_host}:{bound_port} (the model loads; /health answers 503 until it is ready)")
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found:
    # give it one that lets the command end normally (exit 0), as a stop asked for should.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failures:
        raise GptgenError(failures[0])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise GptgenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _log_config() -> dict:
    """uvicorn's logging, all of it on stderr (its access log goes to stdout by default), its
    startup chatter left out: the one line above says where the server is."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    return config
