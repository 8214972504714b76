"""The real server over real HTTP on 127.0.0.1: `shelfgraph serve` under granian and under gunicorn (two
workers each), and the werkzeug dev server, all reading a graph published to an EmbeddedStore. A new
version reaches every worker without losing a request, one scrape of /metrics counts every worker's
requests, and SIGTERM shuts down cleanly."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph_store.embedded import EmbeddedStore
from graph_schema.models import GraphVersion
from serve.loader import EmbeddedSource
from serve.server import run_dev
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


SERVERS = ["granian", "gunicorn"]


@pytest.fixture(params=SERVERS)
def served(request: pytest.FixtureRequest, store: EmbeddedStore, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`shelfgraph serve` as a user starts it (the CLI, the signal-forwarding parent, two workers)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SHELFGRAPH_ADMIN_TOKEN": "tok",
           "SHELFGRAPH_RELOAD_INTERVAL_S": "0.2"}
    argv = [sys.executable, "-m", "shelfgraph", "serve", "--data-dir", str(tmp_path), "--port", str(port),
            "--workers", "2", "--server", request.param]
    assert store.root == tmp_path / "graph"
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


class Load:
    """Client threads asking for complements until stopped; every answer is kept."""

    def __init__(self, base: str, threads: int = 2) -> None:
        self.base, self.answers, self.errors = base, [], []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(call(self.base, "/v1/products/cam1/complements?k=1"))
            except (OSError, http.client.HTTPException) as exc:  # refused, reset or cut: a lost request
                self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_server_serves_the_published_graph(served: tuple[str, subprocess.Popen[bytes]], store: EmbeddedStore) -> None:
    base, _ = served
    status, body = call(base, "/v1/products/cam1/complements?k=3")
    assert status == 200 and body["version"] == "v1"
    assert [i["product_id"] for i in body["items"]] == ["tri1", "sd1", "bag1"]
    status, body = call(base, "/v1/recommendations", {"cart": ["cam1", "phone1"], "k": 3})
    assert status == 200 and body["items"][0]["product_id"] == "sd1"
    status, body = call(base, "/v1/products/nope/complements")
    assert status == 404 and body["error"]["code"] == "unknown_product"
    status, body = call(base, "/v1/recommendations", {"cart": ["cam1"], "bogus": 1})
    assert status == 400 and body["error"]["code"] == "invalid_body"
    status, body = call(base, "/admin/reload", {}, {"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_a_reload_under_load_loses_no_request(served: tuple[str, subprocess.Popen[bytes]], store: EmbeddedStore) -> None:
    """A new version reaches every worker (admin reload for one, the poller for the others) while
    clients keep asking: every request gets a 200 from one complete version."""
    base, _ = served
    with Load(base) as load:
        time.sleep(0.5)
        publish(store, "v2", extra=True)
        status, body = call(base, "/admin/reload", {}, {"Authorization": "Bearer tok"})
        assert status == 200 and body["version"] == "v2"
        deadline = time.monotonic() + 30
        streak = 0
        while streak < 20 and time.monotonic() < deadline:
            status, body = call(base, "/v1/products/cam1/complements?k=1")
            assert status == 200
            streak = streak + 1 if body["version"] == "v2" else 0
        assert streak >= 20
    assert load.errors == []
    assert len(load.answers) > 20
    assert {status for status, _ in load.answers} == {200}
    for _, body in load.answers:
        assert body["items"][0]["product_id"] == {"v1": "tri1", "v2": "case1"}[body["version"]]
    assert {body["version"] for _, body in load.answers} == {"v1", "v2"}


_COMPLEMENTS_200 = re.compile(
    r'^shelfgraph_http_requests_total\{endpoint="/v1/products/<path:product_id>/complements",method="GET",'
    r'status="200"\} ([0-9.e+]+)$', re.M)
_WORKER = re.compile(r'^shelfgraph_index_products\{worker="(\d+)"\}', re.M)


def test_one_scrape_counts_the_requests_of_every_worker(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _ = served
    for _ in range(30):  # new connections: the kernel spreads them over both workers
        assert call(base, "/v1/products/cam1/complements?k=1")[0] == 200
    workers, counts = set(), []
    for _ in range(200):
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        workers.update(_WORKER.findall(text))
        counts.append(float(_COMPLEMENTS_200.findall(text)[0]))
        if len(workers) >= 2 and len(counts) >= 10:
            break
    assert len(workers) == 2, "every scrape was answered by the same worker"
    assert counts == [30.0] * len(counts)  # whichever worker answers, it reports both workers' requests


def test_sigterm_shuts_down_gracefully(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, process = served
    with Load(base) as load:
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    # every answer that started arrived whole (json.loads would fail on a cut body); after the listener
    # closes, new connections are refused, and one still waiting in the accept queue may be reset
    assert load.answers and {status for status, _ in load.answers} == {200}
    assert not [error for error in load.errors if "IncompleteRead" in error], load.errors[:3]


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
    from graph_store.neo4j import Neo4jStore
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
