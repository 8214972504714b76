"""The real server over real HTTP on 127.0.0.1: gunicorn (two workers) and the werkzeug dev server,
both reading a graph published to an EmbeddedStore; a new published version reaches every worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.store.embedded import EmbeddedStore
from graph_schema.models import GraphVersion
from serve.loader import EmbeddedSource
from serve.server import gunicorn_argv, run_dev, settings_env
from serve.settings import ServeSettings
from tests.serve.conftest import catalog, rel, relations

REPO_ROOT = Path(__file__).resolve().parents[2]


def publish(store: EmbeddedStore, version: str, extra: bool = False) -> None:
    rels = relations() + ([rel("cam1", "case1", "complement", 0.95, "v2 reason")] if extra else [])
    manifest = GraphVersion(version_id=version, catalog_fingerprint="f" * 32, product_count=0,
                            relation_counts={"complement": 0, "substitute": 0})
    store.publish(catalog(), rels, manifest)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(base: str, path: str, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json",
                                                                      **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_ready(base: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read().decode() if process.stdout else ''}")
        try:
            if call(base, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} not ready after {timeout}s")


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    store = EmbeddedStore(tmp_path / "graph")
    publish(store, "v1")
    return store


@pytest.fixture
def gunicorn(store: EmbeddedStore) -> Iterator[str]:
    settings = ServeSettings(graph_dir=store.root, port=free_port(), workers=2, reload_interval_s=0.2,
                             admin_token="tok")
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(gunicorn_argv(settings), cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        wait_ready(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gunicorn_serves_the_published_graph(gunicorn: str, store: EmbeddedStore) -> None:
    status, body = call(gunicorn, "/v1/products/cam1/complements?k=3")
    assert status == 200 and body["version"] == "v1"
    assert [i["product_id"] for i in body["items"]] == ["tri1", "sd1", "bag1"]
    status, body = call(gunicorn, "/v1/recommendations", {"cart": ["cam1", "phone1"], "k": 3})
    assert status == 200 and body["items"][0]["product_id"] == "sd1"
    status, body = call(gunicorn, "/v1/products/nope/complements")
    assert status == 404 and body["error"]["code"] == "unknown_product"
    status, body = call(gunicorn, "/v1/recommendations", {"cart": ["cam1"], "bogus": 1})
    assert status == 400 and body["error"]["code"] == "invalid_body"

    # a new version reaches every worker (admin reload for one, the poller for the others)
    publish(store, "v2", extra=True)
    status, body = call(gunicorn, "/admin/reload", {}, {"Authorization": "Bearer tok"})
    assert status == 200 and body["version"] == "v2"
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 20 and time.monotonic() < deadline:
        status, body = call(gunicorn, "/v1/products/cam1/complements?k=1")
        assert status == 200
        assert body["items"][0]["product_id"] == {"v1": "tri1", "v2": "case1"}[body["version"]]
        streak = streak + 1 if body["version"] == "v2" else 0
    assert streak >= 20


def test_dev_server_over_http(store: EmbeddedStore) -> None:
    settings = ServeSettings(port=0, reload_interval_s=0)
    with run_dev(settings, source=EmbeddedSource(store.root)) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, body = call(base, "/v1/graph")
        assert status == 200 and body["version"] == "v1" and body["products"] == 11
        status, body = call(base, "/v1/products/cam2/complements")
        assert status == 200 and body["source"] == "via_substitutes"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            assert b"shelfgraph_http_requests_total" in response.read()


@pytest.mark.neo4j
def test_dev_server_reads_a_graph_published_to_neo4j(clean_neo4j: Any) -> None:
    from distill.store.neo4j import Neo4jStore
    from serve.loader import Neo4jSource

    publish_to = Neo4jStore(clean_neo4j)
    manifest = GraphVersion(version_id="n1", catalog_fingerprint="f" * 32, product_count=0,
                            relation_counts={"complement": 0, "substitute": 0})
    publish_to.publish(catalog(), relations(), manifest)
    with run_dev(ServeSettings(port=0, reload_interval_s=0), source=Neo4jSource(clean_neo4j)) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, body = call(base, "/v1/products/cam1/complements?k=2")
        assert status == 200 and body["version"] == "n1"
        assert [i["product_id"] for i in body["items"]] == ["tri1", "sd1"]
        status, body = call(base, "/v1/products/cam1")
        assert body["enriched"] == {"sensor": "full frame"} and body["keyphrases"] == ["mirrorless camera"]
