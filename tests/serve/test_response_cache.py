"""The per-version response cache: repeated lookups are answered from it, a reload never serves an answer
of the old version, and bad parameters are still refused."""

from __future__ import annotations

from flask.testing import FlaskClient

from serve import create_app
from serve.loader import IndexHolder
from serve.render import renderer_for
from tests.serve.conftest import catalog, make_graph, relations
from tests.serve.test_loader import FakeSource, graph_v2, settings


def test_repeated_lookup_is_served_from_the_cache(client: FlaskClient) -> None:
    first = client.get("/v1/products/cam1/complements?k=3")
    index = client.application.extensions["shelfgraph"].holder.index
    assert renderer_for(index).cached(("complement", "cam1", b"k=3")) == first.get_data(as_text=True)
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
