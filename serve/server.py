"""Running the app: `serve_forever` (production: granian by default, or gunicorn) and `run_dev` (werkzeug,
for tests).

Both servers are started on `serve.wsgi:app`, so every worker builds its own app from the same settings
(passed through the environment, the one channel the workers share) and maps the same index files. The
workers also share one PROMETHEUS_MULTIPROC_DIR, so a scrape of any worker counts the requests of all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from werkzeug.serving import BaseWSGIServer, make_server

from serve import create_app
from serve.index import GraphIndex
from serve.loader import GraphSource
from serve.settings import ServeSettings

APP_REF = "serve.wsgi:app"
GRACEFUL_TIMEOUT_S = 30
"""On SIGTERM a worker finishes the requests it holds for at most this long, then is killed."""
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


MAX_REQUEST_LINE = 8190
"""Bytes of the HTTP request line gunicorn accepts (its maximum; longer lines get gunicorn's own 414)."""


def settings_env(settings: ServeSettings) -> dict[str, str]:
    """Settings as SHELFGRAPH_* variables, so the workers rebuild the same ServeSettings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"SHELFGRAPH_{name.upper()}"] = str(value)
    return env


def gunicorn_argv(settings: ServeSettings, app_ref: str = APP_REF) -> list[str]:
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
        "--graceful-timeout", str(GRACEFUL_TIMEOUT_S),
    ]
    if settings.threads > 1:
        argv += ["--threads", str(settings.threads), "--worker-class", "gthread"]
    return argv + [app_ref]


def granian_argv(settings: ServeSettings, app_ref: str = APP_REF) -> list[str]:
    return [
        sys.executable, "-m", "granian",
        "--interface", "wsgi",
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
        "--blocking-threads", str(settings.threads),
        "--access-log" if settings.access_log else "--no-access-log",
        "--workers-kill-timeout", str(GRACEFUL_TIMEOUT_S),
        "--respawn-failed-workers",
        app_ref,
    ]


def server_argv(settings: ServeSettings, app_ref: str = APP_REF) -> list[str]:
    """The command line of the server `settings.server` names."""
    if settings.server == "gunicorn":
        return gunicorn_argv(settings, app_ref)
    return granian_argv(settings, app_ref)


def reset_metrics_dir(path: Path) -> None:
    """Counters of an earlier server run in the same folder must not be added to this run's."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def server_env(settings: ServeSettings, metrics_dir: Path) -> dict[str, str]:
    """Everything a worker needs on top of the inherited environment."""
    return {**settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def serve_forever(settings: ServeSettings) -> int:
    """Run the server in a child process until it exits; signals sent to this process are passed on
    (SIGTERM/SIGINT = graceful shutdown). Returns the server's exit code."""
    owned = settings.metrics_dir is None
    metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="shelfgraph-metrics-"))
    reset_metrics_dir(metrics_dir)
    env = {**os.environ, **server_env(settings, metrics_dir)}
    # its own session: a Ctrl-C reaches the server once (through us), not twice
    child = subprocess.Popen(server_argv(settings), env=env, start_new_session=True)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


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
