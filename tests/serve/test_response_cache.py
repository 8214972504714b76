"""The per-version response cache: repeated lookups are answered from it, a reload never serves an answer
of the old version, and bad parameters are still refused."""

from __future__ import annotations

import tracemalloc

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from serve import render
from serve.api import parse_lookup_params

from serve import create_app
from serve.loader import IndexHolder
from serve.render import Renderer, renderer_for
from tests.serve.conftest import catalog, make_graph, relations
from tests.serve.test_loader import FakeSource, graph_v2, settings


def test_repeated_lookup_is_served_from_the_cache(client: FlaskClient) -> None:
    first = client.get("/v1/products/cam1/complements?k=3")
    index = client.application.extensions["shelfgraph"].holder.index
    params = parse_lookup_params(MultiDict({"k": "3"}), client.application.extensions["shelfgraph"].settings)
    assert renderer_for(index).cached(("complement", "cam1", params)) == first.get_data(as_text=True)
    second = client.get("/v1/products/cam1/complements?k=3")
    assert second.status_code == 200 and second.get_data() == first.get_data()
    # another query string is another answer
    assert len(client.get("/v1/products/cam1/complements?k=1").get_json()["items"]) == 1
    assert len(client.get("/v1/products/cam1/complements?k=3").get_json()["items"]) == 3


def test_bad_parameters_are_refused_even_for_a_cached_product(client: FlaskClient) -> None:
    assert client.get("/v1/products/cam1/complements").status_code == 200
    response = client.get("/v1/products/cam1/complements?k=abc")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"
    assert client.get("/v1/products/nope/complements").status_code == 404


def test_a_reload_drops_the_cached_answers_of_the_old_version() -> None:
    source = FakeSource(make_graph(catalog(), relations()))
    app = create_app(settings(), source=source)
    client = app.test_client()
    before = client.get("/v1/products/cam1/complements").get_json()
    assert before["version"] == "v1" and before["items"][0]["product_id"] != "case1"
    source.graph = graph_v2()
    holder: IndexHolder = app.extensions["shelfgraph"].holder
    assert holder.reload_if_changed().reloaded
    after = client.get("/v1/products/cam1/complements").get_json()
    assert after["version"] == "v2" and after["items"][0]["product_id"] == "case1"


def test_spellings_of_one_lookup_share_one_entry(client: FlaskClient) -> None:
    index = client.application.extensions["shelfgraph"].holder.index
    bodies = {client.get(f"/v1/products/cam1/complements?{query}").get_data()
              for query in ("k=3&min_score=0.1", "min_score=0.1&k=3", "k=03&min_score=0.10", "min_score=1e-1&k=3")}
    assert len(bodies) == 1
    keys = renderer_for(index).keys()
    assert len([key for key in keys if not isinstance(key[2], bytes)]) == 1  # one rendering ...
    assert len(keys) == 5  # ... and each validated spelling an alias of it


def test_a_flood_of_distinct_query_strings_stays_within_budget_and_keeps_the_hot_entry(client: FlaskClient) -> None:
    settings = client.application.extensions["shelfgraph"].settings
    hot_body = client.get("/v1/products/cam1/complements?k=3").get_data(as_text=True)
    hot = ("complement", "cam1", parse_lookup_params(MultiDict({"k": "3"}), settings))
    budget = 2 * 1024 * 1024
    renderer = Renderer(budget)
    renderer.remember(hot, hot_body)
    body = hot_body * 2  # ~ the size of a real answer
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1, 100_001):
        # what an attacker (or a buggy client) sends: every min_score a different string, parameters reordered
        query = MultiDict([("min_score", f"{i}e-9"), ("k", "3")] if i % 2 else [("k", "3"), ("min_score", f"0.{i:09d}")])
        renderer.remember(("complement", "cam1", parse_lookup_params(query, settings)), body)
        if i % 100 == 0:
            assert renderer.cached(hot) == hot_body  # the storefront's hot lookup keeps being asked
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert renderer.response_bytes <= budget
    assert held <= budget * 1.25, f"accounting is off: {held} bytes held for a {budget}-byte budget"
    assert renderer.cached(hot) == hot_body
    assert 0 < len(renderer) < 100_000


def test_the_api_cache_is_bounded_in_bytes(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "RESPONSE_CACHE_BYTES", 200_000)
    index = client.application.extensions["shelfgraph"].holder.index
    render._renderers.pop(index, None)  # a fresh renderer, built with the patched budget
    hot = client.get("/v1/products/cam1/complements").get_data()
    for i in range(3000):
        assert client.get(f"/v1/products/cam1/complements?min_score={i}e-9").status_code == 200
        if i % 50 == 0:
            assert client.get("/v1/products/cam1/complements").get_data() == hot
    cache = renderer_for(index)
    assert cache.response_bytes <= 200_000 and len(cache) < 3000
    assert cache.cached(("complement", "cam1", b"")) == hot.decode()  # the hot lookup (by its alias) survived
