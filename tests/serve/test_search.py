"""GET /v1/search (the explorer's product search over the in-memory index) and GET /explore (the page)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from serve import create_app
from serve.index import GraphIndex
from serve.settings import ServeSettings
from tests.serve.conftest import catalog, make_graph, relations


@pytest.fixture
def client() -> FlaskClient:
    index = GraphIndex.from_published(make_graph(catalog(), relations()))
    return create_app(ServeSettings(reload_interval_s=0), index=index).test_client()


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["product_id"] for item in body["items"]]


def test_exact_id_then_id_prefix_then_title(client: FlaskClient) -> None:
    body = client.get("/v1/search?q=cam1").get_json()
    assert _ids(body) == ["cam1"] and body["items"][0]["match"] == "id" and body["version"] == "v1"
    body = client.get("/v1/search?q=SD").get_json()
    assert _ids(body) == ["sd1", "sd2"] and {i["match"] for i in body["items"]} == {"id_prefix"}
    body = client.get("/v1/search?q=camera").get_json()
    assert _ids(body) == ["bag1", "cam1", "cam2", "cam3"] and body["total"] == 4
    first = body["items"][1]
    assert first == {"product_id": "cam1", "title": "Camera A", "category": ["Electronics", "Cameras"],
                     "price": 500.0, "match": "title_prefix", "counts": {"complement": 5, "substitute": 1}}


def test_every_word_must_appear_in_the_title_in_any_order(client: FlaskClient) -> None:
    assert _ids(client.get("/v1/search?q=card%20128gb").get_json()) == ["sd2"]
    assert _ids(client.get("/v1/search?q=128GB%20card").get_json()) == ["sd2"]
    assert _ids(client.get("/v1/search?q=phone").get_json()) == ["phone1", "case1"]  # an id prefix ranks first
    assert client.get("/v1/search?q=zebra").get_json() == {"query": "zebra", "version": "v1", "total": 0, "items": []}


def test_k_caps_the_items_not_the_total(client: FlaskClient) -> None:
    body = client.get("/v1/search?q=camera&k=2").get_json()
    assert _ids(body) == ["bag1", "cam1"] and body["total"] == 4


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("", "q"), ("q=", "q"), ("q=a&k=0", "k"), ("q=a&k=51", "k"), ("q=a&k=two", "k"), ("q=" + "x" * 201, "q")],
)
def test_bad_parameters_are_json_400s(client: FlaskClient, query: str, parameter: str) -> None:
    response = client.get(f"/v1/search?{query}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter" and error["details"] == {"parameter": parameter}


def test_unknown_and_repeated_parameters_are_json_400s(client: FlaskClient) -> None:
    unknown = client.get("/v1/search?q=a&limit=3")
    assert unknown.status_code == 400 and unknown.get_json()["error"]["details"] == {"unknown": ["limit"]}
    repeated = client.get("/v1/search?q=a&q=b")
    assert repeated.status_code == 400 and repeated.get_json()["error"]["details"] == {"repeated": ["q"]}


def test_search_before_any_index_is_a_503() -> None:
    class Nothing:
        def current_version(self) -> str | None:
            return None

        def load(self) -> Any:
            raise AssertionError("never called: nothing is published")

    app = create_app(ServeSettings(reload_interval_s=0), source=Nothing(), start_polling=False)
    response = app.test_client().get("/v1/search?q=a")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "not_ready"


def test_explore_page_is_self_contained(client: FlaskClient) -> None:
    response = client.get("/explore")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "/v1/search" in page and "/v1/products/" in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched from elsewhere
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'sha256-" in policy
