"""serve.fastpath: a cached lookup answered before Flask is the same answer (status, headers, body) and is
counted in the metrics; everything it must not answer still reaches Flask."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from flask.testing import FlaskClient

from serve.fastpath import CachedLookups


def _spy(client: FlaskClient) -> list[str]:
    """Paths that reached Flask (the middleware's inner app)."""
    middleware = client.application.wsgi_app
    assert isinstance(middleware, CachedLookups)
    reached: list[str] = []
    inner = middleware.app

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        reached.append(environ["PATH_INFO"] + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""))
        return inner(environ, start_response)

    middleware.app = app
    return reached


def _count(client: FlaskClient, endpoint: str) -> float:
    metrics = client.application.extensions["shelfgraph"].metrics
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels["endpoint"] == endpoint and sample.labels["status"] == "200":
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize("path", [
    "/v1/products/cam1/complements", "/v1/products/cam1/complements?k=2&min_score=0.5",
    "/v1/products/cam1/substitutes", "/v1/products/tri1/complements?category=Cameras",
])
def test_a_repeat_lookup_skips_flask_and_is_the_same_answer(client: FlaskClient, path: str) -> None:
    reached = _spy(client)
    first = client.get(path)
    second = client.get(path)
    assert first.status_code == second.status_code == 200
    assert second.headers.to_wsgi_list() == first.headers.to_wsgi_list()
    assert second.get_data() == first.get_data()
    assert reached == [path]  # only the first one was rendered by Flask
    endpoint = "/v1/products/<path:product_id>/" + ("substitutes" if "substitutes" in path else "complements")
    assert _count(client, endpoint) == 2


def test_what_the_cache_cannot_answer_reaches_flask(client: FlaskClient) -> None:
    reached = _spy(client)
    for _ in range(2):
        assert client.get("/v1/products/nope/complements").status_code == 404  # errors are never cached
        assert client.get("/v1/products/cam1/complements?k=abc").status_code == 400
        assert client.head("/v1/products/cam1/complements").status_code == 200  # GET only
        assert client.get("/v1/products/cam1").status_code == 200  # not a lookup
    assert client.get("/v1/products/cam1/complements/").status_code == 404
    assert len(reached) == 9
    assert client.get("/v1/products/cam1/complements").status_code == 200  # cached by the HEAD's rendering
    assert len(reached) == 9


def test_non_ascii_ids_take_flasks_decoding(client: FlaskClient) -> None:
    reached = _spy(client)
    for _ in range(2):
        response = client.get("/v1/products/caméra/complements")
        assert response.status_code == 404 and response.get_json()["error"]["details"]["product_id"] == "caméra"
    assert len(reached) == 2
