"""The recommendation server: a Flask app factory over an immutable in-memory `GraphIndex`.

`create_app` builds (or is handed) the index once at start-up and keeps it on the app; requests never
reach a store or a model. This package never loads the LLM client library (nor distill.llm.gateway).
"""

from __future__ import annotations

import logging
import time

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from serve.api import ServeState, bp
from serve.errors import SourceUnavailable, register_error_handlers
from serve.explore import bp as explore_bp
from serve.fastpath import STARTED, CachedLookups
from serve.index import GraphIndex
from serve.loader import GraphSource, IndexHolder, source_from_settings
from serve.metrics import Metrics
from serve.settings import ServeSettings

__all__ = ["create_app", "GraphIndex", "ServeSettings"]

log = logging.getLogger(__name__)


class _SyncFlask(Flask):
    """Every view and hook here is synchronous: skip Flask's per-request coroutine check."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def create_app(
    settings: ServeSettings | None = None,
    *,
    source: GraphSource | None = None,
    index: GraphIndex | None = None,
    start_polling: bool = True,
) -> Flask:
    """Build the app. With `index` only, the app serves that index forever (tests, benchmarks); with a
    `source` (default: the one `settings` names) it loads the current version now and, when
    `reload_interval_s` > 0, polls for new ones in a daemon thread. If the first load fails the app still
    starts: /readyz answers 503 and lookups 503 until a version loads."""
    settings = settings or ServeSettings()
    own_source = source is None and index is None
    if own_source:
        source = source_from_settings(settings)
    # a source the settings name is mapped from shared files; a source handed in (tests) is built in memory
    holder = IndexHolder(source, index, settings.resolved_index_dir() if own_source else None,
                         native=not settings.pure_python)
    if index is None:
        try:
            holder.reload_if_changed()
        except SourceUnavailable as exc:
            log.error("starting without a graph index: %s", exc)
    if start_polling:
        holder.start_polling(settings.reload_interval_s)

    app = _SyncFlask("shelfgraph")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    metrics = Metrics()
    app.extensions["shelfgraph"] = ServeState(settings=settings, holder=holder, metrics=metrics)
    app.register_blueprint(bp)
    app.register_blueprint(explore_bp)
    register_error_handlers(app)

    # stamps the start time into the environ (cheaper than a before_request hook and `g`) and answers
    # cached lookups without entering Flask
    app.wsgi_app = CachedLookups(app.wsgi_app, holder, metrics)  # type: ignore[method-assign]

    @app.after_request
    def _record(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not four
        started = req.environ.get(STARTED)
        if started is not None:
            # labels stay bounded: route templates, not paths; known methods only
            rule = req.url_rule.rule if req.url_rule is not None else "unmatched"
            method = req.method if req.method in _METHODS else "other"
            metrics.observe(rule, method, response.status_code, time.perf_counter() - started)
        return response

    return app
