"""Repeat lookups answered before Flask: a plain GET of /v1/products/<id>/complements (or /substitutes)
whose answer the per-version response cache (`serve.render`) already holds is written straight from the
WSGI environ, with no request context, routing, hooks or Response object, which are most of a cache hit's
CPU. Every other request, and every miss, goes to Flask unchanged; status, headers, body and the latency
metric are the same either way. It decides nothing: a body is only ever one Flask rendered and cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from serve.loader import IndexHolder
from serve.metrics import Metrics
from serve.render import renderer_for

STARTED = "shelfgraph.started"
"""WSGI environ key: when the request arrived (perf_counter), for the latency metric."""

_PREFIX = "/v1/products/"
_ROUTES = (
    ("/complements", "complement", "/v1/products/<path:product_id>/complements"),
    ("/substitutes", "substitute", "/v1/products/<path:product_id>/substitutes"),
)
"""(path suffix, kind, the route template Flask reports as the metric's endpoint label)."""


class CachedLookups:
    """WSGI middleware in front of the Flask app (`app.wsgi_app = CachedLookups(app.wsgi_app, ...)`)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], holder: IndexHolder, metrics: Metrics) -> None:
        self.app = app
        self._holder = holder
        self._metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        if environ.get("REQUEST_METHOD") == "GET":
            hit = self._cached(environ)
            if hit is not None:
                body, rule = hit
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                self._metrics.observe(rule, "GET", 200, time.perf_counter() - started)
                return [body]
        environ[STARTED] = started
        return self.app(environ, start_response)

    def _cached(self, environ: dict[str, Any]) -> tuple[bytes, str] | None:
        """(body, route template) of a cached answer to this request, or None."""
        path: str = environ.get("PATH_INFO", "")
        # ASCII only: then the WSGI (latin-1) path is the same text Flask's router decodes from UTF-8
        if not path.startswith(_PREFIX) or not path.isascii():
            return None
        index = self._holder.index
        if index is None:
            return None
        for suffix, kind, rule in _ROUTES:
            if path.endswith(suffix):
                # the key the API files each answered query string under (see serve.api._lookup)
                key = (kind, path[len(_PREFIX) : -len(suffix)], environ.get("QUERY_STRING", "").encode("latin-1"))
                body = renderer_for(index).cached(key)
                return (body.encode(), rule) if body is not None else None
        return None
