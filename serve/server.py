"""Running the app: `serve_forever` (production, gunicorn) and `run_dev` (werkzeug, for tests).

Gunicorn is exec'd with `serve.wsgi:app`, so every worker builds its own app and index from the same
settings (passed through the environment, the one channel gunicorn workers share).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import BaseWSGIServer, make_server

from serve import create_app
from serve.index import GraphIndex
from serve.loader import GraphSource
from serve.settings import ServeSettings


MAX_REQUEST_LINE = 8190
"""Bytes of the HTTP request line gunicorn accepts (its maximum; longer lines get gunicorn's own 414)."""


def settings_env(settings: ServeSettings) -> dict[str, str]:
    """Settings as SHELFGRAPH_* variables, so gunicorn workers rebuild the same ServeSettings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"SHELFGRAPH_{name.upper()}"] = str(value)
    return env


def gunicorn_argv(settings: ServeSettings, app_ref: str = "serve.wsgi:app") -> list[str]:
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(settings.workers),
        "--access-logfile", "-" if settings.access_log else "/dev/null",
        # workers build their index before answering: a large graph takes minutes, which a short
        # timeout would mistake for a hung worker
        "--timeout", "600",
        # gunicorn's default (4094 bytes) answers a long id with an HTML 414 before the app sees it; at its
        # maximum, every id the API can name (256 characters, 9 bytes each when percent-encoded UTF-8) and
        # far longer ones reach the app, which answers with a JSON 400 (docs/serving.md, "Limits").
        "--limit-request-line", str(MAX_REQUEST_LINE),
    ]
    if settings.threads > 1:
        argv += ["--threads", str(settings.threads), "--worker-class", "gthread"]
    return argv + [app_ref]


def serve_forever(settings: ServeSettings) -> None:
    """Replace this process with gunicorn serving the app (never returns)."""
    env = {**os.environ, **settings_env(settings)}
    argv = gunicorn_argv(settings)
    os.execve(argv[0], argv, env)


run_server = serve_forever


@contextmanager
def run_dev(
    settings: ServeSettings | None = None,
    *,
    source: GraphSource | None = None,
    index: GraphIndex | None = None,
) -> Iterator[BaseWSGIServer]:
    """Serve on settings.host:settings.port (0 = ephemeral) with werkzeug in a thread; yields the server
    (its `.port` is the bound port) and shuts it down on exit."""
    settings = settings or ServeSettings(port=0)
    app = create_app(settings, source=source, index=index)
    server = make_server(settings.host, settings.port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="shelfgraph-dev-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=5)
        holder = app.extensions["shelfgraph"].holder
        holder.stop_polling()
