"""Long ids over real HTTP: gunicorn passes request lines up to its maximum to the app, and the app answers
an id no catalog can hold with the API's JSON error shape, never the server's HTML 414."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from serve.api import MAX_ID_LENGTH
from serve.server import MAX_REQUEST_LINE
from tests.integration.test_serve_http import call, served, store  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def base(served: tuple[str, object]) -> str:  # noqa: F811
    """The URL of `shelfgraph serve` under the server the `served` parameter names."""
    return served[0]


both = pytest.mark.parametrize("served", ["granian", "gunicorn"], indirect=True)


@both
@pytest.mark.parametrize("suffix", ["", "/complements", "/substitutes"])
def test_a_5000_character_id_is_a_json_400_not_an_html_414(base: str, suffix: str) -> None:
    status, body = call(base, f"/v1/products/{'x' * 5000}{suffix}")
    assert status == 400
    assert body["error"]["code"] == "invalid_parameter" and body["error"]["details"]["max_length"] == MAX_ID_LENGTH


@both
def test_ids_up_to_the_limit_are_looked_up(base: str) -> None:
    status, body = call(base, f"/v1/products/{'x' * MAX_ID_LENGTH}/complements")
    assert status == 404 and body["error"]["code"] == "unknown_product"
    # The longest id, percent-encoded 3-byte UTF-8 (9 bytes a character), still fits the request line.
    encoded = "%E2%82%AC" * MAX_ID_LENGTH
    assert len(encoded) + 100 < MAX_REQUEST_LINE
    status, body = call(base, f"/v1/products/{encoded}")
    assert status == 404 and body["error"]["code"] == "unknown_product"


@pytest.mark.parametrize("served", ["gunicorn"], indirect=True)
def test_beyond_the_request_line_limit_gunicorn_refuses(base: str) -> None:
    # Documented in docs/serving.md: past MAX_REQUEST_LINE bytes the server itself answers 414.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/v1/products/{'x' * (MAX_REQUEST_LINE + 10)}", timeout=10)
    assert info.value.code in (400, 414)
