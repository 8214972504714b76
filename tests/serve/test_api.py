"""Every endpoint and every error case through Flask's test client. Error bodies always have the shape
{"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from serve import create_app
from serve.index import GraphIndex
from serve.settings import ServeSettings


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]


def item_ids(response: Any) -> list[str]:
    return [item["product_id"] for item in response.get_json()["items"]]


# --- products --------------------------------------------------------------------------------------------
def test_get_product(client: FlaskClient) -> None:
    body = client.get("/v1/products/cam1").get_json()
    assert body["id"] == "cam1" and body["title"] == "Camera A"
    assert body["enriched"] == {"sensor": "full frame"}
    assert body["keyphrases"] == ["mirrorless camera"]
    assert body["counts"] == {"complement": 5, "substitute": 1}
    assert body["version"] == "v1"


def test_get_unknown_product(client: FlaskClient) -> None:
    assert error_of(client.get("/v1/products/nope"), 404, "unknown_product")["details"] == {"product_id": "nope"}


def test_complements(client: FlaskClient) -> None:
    response = client.get("/v1/products/cam1/complements")
    body = response.get_json()
    assert (body["product_id"], body["kind"], body["source"], body["version"]) == ("cam1", "complement", "direct", "v1")
    assert item_ids(response) == ["tri1", "sd1", "bag1", "lens1", "sd2"]  # default_k=5
    first = body["items"][0]
    assert first == {"product_id": "tri1", "title": "Tripod", "category": ["Electronics", "Camera Accessories"],
                     "price": 50.0, "score": 0.9, "reasons": ["keeps the camera steady", "long exposures"],
                     "via": None}


def test_complement_filters(client: FlaskClient) -> None:
    base = "/v1/products/cam1/complements"
    assert item_ids(client.get(f"{base}?k=2")) == ["tri1", "sd1"]
    assert item_ids(client.get(f"{base}?min_score=0.65")) == ["tri1", "sd1", "bag1"]
    assert item_ids(client.get(f"{base}?category=Storage")) == ["sd1", "sd2"]
    assert item_ids(client.get(f"{base}?price_min=20&price_max=40")) == ["sd1", "bag1", "sd2"]
    assert item_ids(client.get(f"{base}?exclude=tri1,%20bag1,,unknown")) == ["sd1", "lens1", "sd2"]


def test_fallback_sources_are_reported(client: FlaskClient) -> None:
    body = client.get("/v1/products/cam2/complements").get_json()
    assert body["source"] == "via_substitutes" and body["items"][0]["via"] == "cam1"
    assert client.get("/v1/products/cam3/complements").get_json()["source"] == "via_category"
    body = client.get("/v1/products/lonely/complements").get_json()
    assert (body["source"], body["items"]) == ("none", [])


def test_substitutes(client: FlaskClient) -> None:
    response = client.get("/v1/products/cam2/substitutes")
    assert response.get_json()["kind"] == "substitute"
    assert item_ids(response) == ["cam1"]
    error_of(client.get("/v1/products/nope/substitutes"), 404, "unknown_product")


def test_ids_with_slashes_route_to_the_product() -> None:
    from tests.serve.conftest import make_graph, product, rel

    ix = GraphIndex.from_published(make_graph([product("a/1", "A"), product("b", "B")],
                                              [rel("a/1", "b", "complement", 0.5)]))
    client = create_app(ServeSettings(reload_interval_s=0), index=ix).test_client()
    assert client.get("/v1/products/a/1").get_json()["id"] == "a/1"
    assert item_ids(client.get("/v1/products/a/1/complements")) == ["b"]


@pytest.mark.parametrize(
    "query",
    ["k=abc", "k=0", "k=-1", "k=21", "k=1.5", "k=", "k=%C2%B2", "min_score=-0.1", "min_score=abc", "min_score=nan",
     "price_min=-1", "price_max=inf", "price_min=50&price_max=10", "bogus=1", "k=1&k=2", "category="],
)
def test_bad_lookup_parameters_are_400(client: FlaskClient, query: str) -> None:
    for kind in ("complements", "substitutes"):
        error_of(client.get(f"/v1/products/cam1/{kind}?{query}"), 400, "invalid_parameter")


def test_too_many_excluded_ids(client: FlaskClient) -> None:
    exclude = ",".join(f"x{i}" for i in range(501))
    error_of(client.get(f"/v1/products/cam1/complements?exclude={exclude}"), 400, "invalid_parameter")


# --- cart ------------------------------------------------------------------------------------------------
def test_recommendations(client: FlaskClient) -> None:
    response = client.post("/v1/recommendations", json={"cart": ["cam1", "phone1", "ghost"], "k": 10})
    assert response.status_code == 200
    body = response.get_json()
    assert body["cart"] == ["cam1", "phone1"] and body["unknown_ids"] == ["ghost"]
    top = body["items"][0]
    assert top["product_id"] == "sd1" and top["score"] == pytest.approx(1.1)
    assert [(g["product_id"], g["reasons"], g["source"]) for g in top["goes_with"]] == [
        ("cam1", ["stores photos"], "direct"), ("phone1", ["extra storage"], "direct")]
    assert not {"cam1", "phone1", "cam2"} & set(item_ids(response))


def test_recommendation_filters_and_default_k(client: FlaskClient) -> None:
    response = client.post("/v1/recommendations", json={"cart": ["cam1"], "category": "Storage", "exclude": ["sd2"]})
    assert item_ids(response) == ["sd1"]
    response = client.post("/v1/recommendations", json={"cart": ["cam1"], "price_max": 45, "min_score": 0.6})
    assert item_ids(response) == ["sd1", "bag1"]
    assert len(client.post("/v1/recommendations", json={"cart": ["cam1", "phone1"]}).get_json()["items"]) == 5


def test_cart_of_unknown_ids_is_404(client: FlaskClient) -> None:
    err = error_of(client.post("/v1/recommendations", json={"cart": ["x", "y"]}), 404, "unknown_product")
    assert err["details"] == {"unknown_ids": ["x", "y"]}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_body"),
        (b"", "invalid_body"),
        (b"[]", "invalid_body"),
        (b'"cam1"', "invalid_body"),
        (b'{"cart": []}', "invalid_body"),
        (b'{"cart": "cam1"}', "invalid_body"),
        (b'{"cart": [1]}', "invalid_body"),
        (b'{"cart": [""]}', "invalid_body"),
        (b'{"cart": ["cam1"], "k": "5"}', "invalid_body"),
        (b'{"cart": ["cam1"], "k": 0}', "invalid_parameter"),
        (b'{"cart": ["cam1"], "k": 21}', "invalid_parameter"),
        (b'{"cart": ["cam1"], "k": 2.5}', "invalid_body"),
        (b'{"cart": ["cam1"], "k": true}', "invalid_body"),
        (b'{"cart": ["cam1"], "min_score": -1}', "invalid_body"),
        (b'{"cart": ["cam1"], "price_min": 9, "price_max": 1}', "invalid_parameter"),
        (b'{"cart": ["cam1"], "unknown_field": 1}', "invalid_body"),
        (b'{"cart": ["a", "b", "c", "d", "e", "f"]}', "cart_too_large"),
    ],
)
def test_bad_cart_bodies_are_400(client: FlaskClient, body: bytes, code: str) -> None:
    response = client.post("/v1/recommendations", data=body, content_type="application/json")
    error_of(response, 400, code)


def test_oversized_body_is_413(client: FlaskClient) -> None:
    response = client.post("/v1/recommendations", data=b'{"cart": ["' + b"x" * 100_000 + b'"]}',
                           content_type="application/json")
    error_of(response, 413, "payload_too_large")


def test_query_string_on_cart_is_400(client: FlaskClient) -> None:
    error_of(client.post("/v1/recommendations?k=3", json={"cart": ["cam1"]}), 400, "invalid_parameter")


# --- graph, health, metrics, openapi ---------------------------------------------------------------------
def test_graph(client: FlaskClient) -> None:
    body = client.get("/v1/graph").get_json()
    assert body["version"] == "v1" and body["products"] == 11
    assert body["relations"] == {"complement": 9, "substitute": 4}
    assert body["manifest"]["relation_counts"] == {"complement": 9, "substitute": 2}
    assert body["stale"] is False and body["memory_bytes"] > 0 and body["created_at"]


def test_health_and_ready(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    body = client.get("/readyz").get_json()
    assert body["ready"] is True and body["stale"] is False and body["version"] == "v1"


def test_metrics_count_requests_by_endpoint_and_status(client: FlaskClient) -> None:
    client.get("/v1/products/cam1/complements")
    client.get("/v1/products/nope/complements")
    text = client.get("/metrics").get_data(as_text=True)
    rule = 'endpoint="/v1/products/<path:product_id>/complements",method="GET"'
    assert f'shelfgraph_http_requests_total{{{rule},status="200"' in text
    assert f'shelfgraph_http_requests_total{{{rule},status="404"' in text
    assert "shelfgraph_http_request_duration_seconds_bucket{" in text and 'le="+Inf"' in text
    assert 'shelfgraph_graph_info{version="v1"' in text
    assert "shelfgraph_index_products{" in text and "} 11" in text
    assert 'shelfgraph_index_relations{kind="complement"' in text
    assert "shelfgraph_index_memory_bytes{" in text


def test_openapi_lists_every_route(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    app_rules = {r.rule.replace("<path:product_id>", "{product_id}") for r in client.application.url_map.iter_rules()
                 if r.endpoint != "static"}
    assert app_rules == set(spec["paths"])


# --- routing errors --------------------------------------------------------------------------------------
def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    error_of(client.get("/nope"), 404, "not_found")
    error_of(client.get("/v1/products"), 404, "not_found")


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    response = client.delete("/v1/products/cam1")
    err = error_of(response, 405, "method_not_allowed")
    assert "GET" in err["details"]["allowed"]
    error_of(client.get("/v1/recommendations"), 405, "method_not_allowed")
    error_of(client.put("/v1/graph"), 405, "method_not_allowed")


def test_unexpected_errors_are_json_500(settings: ServeSettings, index: GraphIndex,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(GraphIndex, "complements", boom)
    client = create_app(settings, index=index).test_client()
    err = error_of(client.get("/v1/products/cam1/complements"), 500, "internal_error")
    assert "bug" not in err["message"]  # internals are logged, not shown


# --- admin -----------------------------------------------------------------------------------------------
def test_admin_reload_needs_the_token(client: FlaskClient) -> None:
    response = client.post("/admin/reload")
    error_of(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    error_of(client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    body = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).get_json()
    assert body["reloaded"] is False and body["version"] == "v1"


def test_admin_reload_is_404_without_a_token(index: GraphIndex) -> None:
    client = create_app(ServeSettings(reload_interval_s=0), index=index).test_client()
    error_of(client.post("/admin/reload", headers={"Authorization": "Bearer anything"}), 404, "not_found")


def test_metric_labels_stay_bounded(client: FlaskClient) -> None:
    for i in range(3):
        client.get(f"/no/such/path/{i}")
    client.open("/v1/graph", method="BREW")
    text = client.get("/metrics").get_data(as_text=True)
    assert "/no/such/path" not in text and "BREW" not in text
    assert 'endpoint="unmatched",method="GET",status="404"' in text
    assert 'method="other",status="405"' in text
