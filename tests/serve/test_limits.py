"""Ids longer than any catalog id are a JSON 400 with the stable error shape (the app side of the limits)."""

from __future__ import annotations

from flask.testing import FlaskClient

from serve.api import MAX_ID_LENGTH
from serve.server import MAX_REQUEST_LINE, gunicorn_argv
from serve.settings import ServeSettings


def test_too_long_ids_are_a_json_400(client: FlaskClient) -> None:
    for path in ("", "/complements", "/substitutes"):
        response = client.get(f"/v1/products/{'a' * (MAX_ID_LENGTH + 1)}{path}")
        assert response.status_code == 400 and response.is_json
        error = response.get_json()["error"]
        assert error["code"] == "invalid_parameter" and error["details"]["parameter"] == "product_id"
    assert client.get(f"/v1/products/{'a' * MAX_ID_LENGTH}").status_code == 404


def test_gunicorn_accepts_request_lines_longer_than_any_id() -> None:
    argv = gunicorn_argv(ServeSettings())
    assert argv[argv.index("--limit-request-line") + 1] == str(MAX_REQUEST_LINE)
    assert MAX_REQUEST_LINE > len("GET /v1/products/ HTTP/1.1") + 9 * MAX_ID_LENGTH + len("/complements?k=10")
