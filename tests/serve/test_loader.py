"""IndexHolder and reloads: atomic swaps under concurrent requests, a failing source keeps the last
index serving (stale), the poller picks up new versions, and serve never imports litellm."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from graph_schema.store import PublishedGraph
from serve import create_app
from serve.errors import SourceUnavailable
from serve.loader import GraphSource, IndexHolder
from serve.settings import ServeSettings
from tests.serve.conftest import catalog, make_graph, rel, relations

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeSource:
    """A GraphSource whose current version and health the test controls."""

    def __init__(self, graph: PublishedGraph | None) -> None:
        self.graph = graph
        self.down: Exception | None = None
        self.load_fails = False
        self.loads = 0

    def current_version(self) -> str | None:
        if self.down:
            raise self.down
        return self.graph.manifest.version_id if self.graph else None

    def load(self) -> PublishedGraph:
        if self.down:
            raise self.down
        if self.load_fails:
            raise OSError("corrupt parquet")
        assert self.graph is not None
        self.loads += 1
        return self.graph


def graph_v2() -> PublishedGraph:
    # v2: cam1's best complement changes, so a response tells which version answered it
    return make_graph(catalog(), relations() + [rel("cam1", "case1", "complement", 0.95, "v2 reason")], "v2")


EXPECTED_TOP = {"v1": "tri1", "v2": "case1"}


def settings() -> ServeSettings:
    return ServeSettings(reload_interval_s=0, admin_token="tok")


def test_fake_source_is_a_graph_source() -> None:
    assert isinstance(FakeSource(None), GraphSource)


def test_app_loads_from_source_and_reloads_new_versions() -> None:
    source = FakeSource(make_graph(catalog(), relations()))
    app = create_app(settings(), source=source)
    client = app.test_client()
    assert client.get("/readyz").get_json()["version"] == "v1"
    holder: IndexHolder = app.extensions["shelfgraph"].holder
    assert holder.reload_if_changed().reloaded is False  # same version: no rebuild
    assert source.loads == 1
    source.graph = graph_v2()
    outcome = holder.reload_if_changed()
    assert (outcome.reloaded, outcome.version, outcome.previous_version) == (True, "v2", "v1")
    body = client.get("/v1/products/cam1/complements").get_json()
    assert body["version"] == "v2" and body["items"][0]["product_id"] == "case1"


def test_swap_while_requests_are_in_flight_loses_nothing() -> None:
    g1, g2 = make_graph(catalog(), relations()), graph_v2()
    source = FakeSource(g1)
    app = create_app(settings(), source=source)
    holder: IndexHolder = app.extensions["shelfgraph"].holder
    stop = threading.Event()
    failures: list[str] = []
    seen: set[str] = set()
    counts = [0]

    def hammer() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.get("/v1/products/cam1/complements?k=3")
            body = response.get_json()
            counts[0] += 1
            if response.status_code != 200:
                failures.append(f"{response.status_code} {body}")
                continue
            seen.add(body["version"])
            if body["items"][0]["product_id"] != EXPECTED_TOP[body["version"]]:
                failures.append(f"mixed answer {body}")
            cart = client.post("/v1/recommendations", json={"cart": ["cam1", "phone1"], "k": 3})
            if cart.status_code != 200 or cart.get_json()["version"] not in EXPECTED_TOP:
                failures.append(f"cart {cart.status_code}")

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(8):
            source.graph = g2 if i % 2 == 0 else g1
            assert holder.reload_if_changed().reloaded
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert counts[0] > 0
    assert seen <= {"v1", "v2"} and seen


def test_source_down_keeps_serving_and_reports_stale() -> None:
    source = FakeSource(make_graph(catalog(), relations()))
    app = create_app(settings(), source=source)
    client = app.test_client()
    holder: IndexHolder = app.extensions["shelfgraph"].holder
    source.down = ConnectionError("store unreachable")
    with pytest.raises(SourceUnavailable):
        holder.reload_if_changed()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["stale"] is True and body["stale_since"] and "store unreachable" in body["reason"]
    assert client.get("/v1/products/cam1/complements").status_code == 200
    assert client.get("/v1/graph").get_json()["stale"] is True
    assert "shelfgraph_graph_stale{" in (text := client.get("/metrics").get_data(as_text=True))
    assert float(text.split("shelfgraph_graph_stale{")[1].split("}", 1)[1].split("\n", 1)[0]) == 1
    # the admin endpoint says so too, and still serves the old version
    response = client.post("/admin/reload", headers={"Authorization": "Bearer tok"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "source_unavailable"
    assert response.get_json()["error"]["details"] == {"serving": "v1"}
    # recovery clears the stale flag
    source.down = None
    source.graph = graph_v2()
    assert client.post("/admin/reload", headers={"Authorization": "Bearer tok"}).get_json()["version"] == "v2"
    assert client.get("/readyz").get_json()["stale"] is False


def test_failed_load_keeps_the_old_index() -> None:
    source = FakeSource(make_graph(catalog(), relations()))
    app = create_app(settings(), source=source)
    holder: IndexHolder = app.extensions["shelfgraph"].holder
    source.graph = graph_v2()
    source.load_fails = True
    with pytest.raises(SourceUnavailable, match="corrupt parquet"):
        holder.reload_if_changed()
    status = holder.status()
    assert status.version == "v1" and status.stale and "v2" in (status.last_error or "")


@pytest.mark.parametrize("graph", [None, "down"])
def test_no_index_at_start_is_503_until_a_version_loads(graph: str | None) -> None:
    source = FakeSource(None)
    if graph == "down":
        source.down = ConnectionError("refused")
    app = create_app(settings(), source=source)
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["error"]["code"] == "not_ready"
    for response in (client.get("/v1/products/cam1/complements"), client.get("/v1/graph"),
                     client.post("/v1/recommendations", json={"cart": ["cam1"]})):
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "not_ready"
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    source.down = None
    source.graph = make_graph(catalog(), relations())
    app.extensions["shelfgraph"].holder.reload_if_changed()
    assert client.get("/readyz").status_code == 200


def test_poller_picks_up_a_new_version() -> None:
    source = FakeSource(make_graph(catalog(), relations()))
    app = create_app(ServeSettings(reload_interval_s=0.02), source=source)
    holder: IndexHolder = app.extensions["shelfgraph"].holder
    try:
        source.graph = graph_v2()
        deadline = time.monotonic() + 10
        while holder.status().version != "v2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert holder.status().version == "v2"
        # a failing source does not kill the poller
        source.down = ConnectionError("down")
        while not holder.status().stale and time.monotonic() < deadline:
            time.sleep(0.01)
        assert holder.status().stale
        source.down = None
        while holder.status().stale and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not holder.status().stale
    finally:
        holder.stop_polling()


def test_serve_never_imports_litellm() -> None:
    code = (
        "import sys, serve, serve.api, serve.loader, serve.server, serve.index, serve.metrics\n"
        "try:\n    import graph_store.embedded, graph_store.neo4j\nexcept ImportError:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m.startswith('litellm') or m == 'distill.llm.gateway')\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_versions_are_written_once_and_mapped_by_every_holder(tmp_path: Path) -> None:
    """Two holders (two workers) on one index_dir: the first builds and writes, the second only maps;
    a new version maps a new folder, and folders older than the previous version are removed."""
    index_dir = tmp_path / "index"
    source = FakeSource(make_graph(catalog(), relations(), "v1"))
    first, second = IndexHolder(source, None, index_dir), IndexHolder(source, None, index_dir)
    first.reload_if_changed()
    second.reload_if_changed()
    assert source.loads == 1  # the second worker read the files, not the store
    assert sorted(p.name for p in index_dir.iterdir() if not p.name.startswith(".")) == ["v1.f1"]
    for holder in (first, second):
        assert holder.index is not None
        assert holder.index.complements("cam1", 1).items[0].product_id == EXPECTED_TOP["v1"]
        assert not holder.index._a.complements.dst.flags.writeable  # noqa: SLF001

    source.graph = graph_v2()
    first.reload_if_changed()
    second.reload_if_changed()
    assert source.loads == 2
    assert second.index is not None and second.index.complements("cam1", 1).items[0].product_id == "case1"
    source.graph = make_graph(catalog(), relations(), "v3")
    first.reload_if_changed()
    assert sorted(p.name for p in index_dir.iterdir() if not p.name.startswith(".")) == ["v2.f1", "v3.f1"]
    # the second holder still serves v2 from its mapping, then maps v3
    assert second.index.version == "v2" and second.index.complements("cam1", 1).items[0].product_id == "case1"
    second.reload_if_changed()
    assert second.index.version == "v3" and source.loads == 3


def test_version_ids_become_safe_folder_names() -> None:
    from serve.loader import version_folder

    assert version_folder("2026-12-01T02-00-00Z") == "2026-12-01T02-00-00Z.f1"
    odd = version_folder("../../etc/passwd")
    assert "/" not in odd and not odd.startswith(".") and odd != version_folder("other")
