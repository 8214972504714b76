"""Neo4jStore against a real Neo4j: round trips, atomic switch under concurrent reads, crashed publishes,
idempotence, hostile text, keep-N cleanup, and one publisher at a time (two processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import neo4j
import pytest

from pydantic import SecretStr

from distill.errors import PublisherBusy, StoreError, VersionNotFound
from distill.settings import DistillSettings
from graph_schema.store import GraphStore
from graph_store.neo4j import Neo4jStore, Publisher, complements_query
from graph_schema.models import Evidence, GraphVersion, Product, Provenance, Relation, catalog_fingerprint

pytestmark = pytest.mark.neo4j

REPO_ROOT = Path(__file__).resolve().parents[2]

HOSTILE = [
    "MATCH (n) DETACH DELETE n",
    "'; DROP DATABASE neo4j; //",
    '"double" and \'single\' quotes',
    "back\\slash \\\\ and \\n literal",
    "line one\nline two\r\nline three\ttab",
    "`backtick` label}`) RETURN 1 //",
    "unicode: Grüße, 日本語, emoji 🚲, RTL עברית",
    "$param {rows} ${injection}",
    "unit\u001fseparator",
]


def make_graph(
    version: str, n_products: int = 30, fanout: int = 3, *, prefix: str = "p", title_suffix: str = ""
) -> tuple[list[Product], list[Relation], GraphVersion]:
    products = [
        Product(
            id=f"{prefix}{i:05d}",
            title=f"Product {i}{title_suffix}",
            description=None if i % 3 == 0 else f"desc {i}",
            brand=None if i % 2 else "Acme",
            category=("Home", f"Leaf{i % 4}") if i % 5 else (),
            price=None if i % 7 == 0 else round(1.5 + i, 2),
            attributes={"colour": "red"} if i % 2 else {},
            enriched={"material": "steel"} if i % 3 == 1 else {},
            keyphrases=("kp one", "kp two") if i % 4 else (),
        )
        for i in range(n_products)
    ]
    relations: list[Relation] = []
    for i in range(n_products):
        for step in range(1, fanout + 1):
            j = (i + step) % n_products
            kind = "complement" if step % 2 else "substitute"
            relations.append(
                Relation(
                    source=products[i].id,
                    target=products[j].id,
                    kind=kind,
                    score=round(1.0 / (step + 1), 4),
                    reasons=(f"reason {i}-{j}", "second reason"),
                    evidence=Evidence(llm_score=0.5, copurchase_count=step, query=f"q{i}"),
                    provenance=Provenance(run_id=version, model="m", prompt_version="pv1", stage="verify"),
                )
            )
    manifest = GraphVersion(
        version_id=version,
        catalog_fingerprint=catalog_fingerprint(products),
        product_count=len(products),
        relation_counts={
            "complement": sum(r.kind == "complement" for r in relations),
            "substitute": sum(r.kind == "substitute" for r in relations),
        },
        models=["m"],
        prompt_versions=["pv1"],
    )
    return products, relations, manifest


def count(driver: neo4j.Driver, query: Any, **params: Any) -> int:
    records, _, _ = driver.execute_query(query, params)
    return int(records[0][0])


def node_count(driver: neo4j.Driver, version: str) -> int:
    return count(driver, "MATCH (p:Product {version: $v}) RETURN count(p)", v=version)


def rel_count(driver: neo4j.Driver, version: str) -> int:
    return count(driver, "MATCH (:Product {version: $v})-[r]->() RETURN count(r)", v=version)


def assert_same_graph(
    store: Neo4jStore, version: str | None, products: list[Product], relations: list[Relation]
) -> None:
    graph = store.load(version)
    assert sorted(graph.products(), key=lambda p: p.id) == sorted(products, key=lambda p: p.id)
    assert sorted(graph.relations(), key=lambda r: r.key) == sorted(relations, key=lambda r: r.key)


def test_store_satisfies_protocol(clean_neo4j: neo4j.Driver) -> None:
    assert isinstance(Neo4jStore(clean_neo4j), GraphStore)


def test_empty_store_has_no_version(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j)
    assert store.current_version() is None
    assert store.list_versions() == []
    with pytest.raises(VersionNotFound):
        store.load()
    with pytest.raises(VersionNotFound):
        store.manifest()


def test_publish_two_versions_and_read_back_exactly(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j, batch_size=7)
    p1, r1, m1 = make_graph("v1")
    p2, r2, m2 = make_graph("v2", n_products=25, fanout=4, title_suffix=" (new)")

    assert store.publish(p1, r1, m1) == m1
    assert store.current_version() == "v1"
    assert_same_graph(store, None, p1, r1)

    store.publish(p2, r2, m2)
    assert store.current_version() == "v2"
    assert_same_graph(store, None, p2, r2)
    assert_same_graph(store, "v1", p1, r1)
    assert store.manifest() == m2
    assert store.manifest("v1") == m1
    assert [m.version_id for m in store.list_versions()] == ["v1", "v2"]
    graph = store.load()
    assert graph.manifest == m2
    assert graph.nodes.height == 25 and graph.edges.height == 100


def test_reader_sees_old_or_new_version_never_a_mix(clean_neo4j: neo4j.Driver) -> None:
    # keep=1 makes cleanup delete the old version while readers may still be loading it.
    store = Neo4jStore(clean_neo4j, batch_size=100, keep=1)
    p1, r1, m1 = make_graph("v1", n_products=400, fanout=4)
    p2, r2, m2 = make_graph("v2", n_products=500, fanout=4)
    store.publish(p1, r1, m1)

    errors: list[BaseException] = []
    seen: list[str] = []
    publishing = threading.Event()
    # Every reader loads once before the publish starts, so "v1" is seen however the threads are scheduled.
    readers_started = threading.Barrier(4)

    def publish() -> None:
        try:
            readers_started.wait(timeout=120)
            store.publish(p2, r2, m2)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            publishing.set()

    def read_once() -> None:
        graph = store.load()
        version = graph.manifest.version_id
        seen.append(version)
        assert set(graph.edges["run_id"].unique()) == {version}
        assert graph.nodes.height == graph.manifest.product_count
        assert graph.edges.height == sum(graph.manifest.relation_counts.values())

    def read() -> None:
        try:
            read_once()
            readers_started.wait(timeout=120)
            while not publishing.is_set():
                read_once()
        except BaseException as exc:
            errors.append(exc)
            readers_started.abort()

    threads = [threading.Thread(target=publish)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert "v1" in seen
    final = store.load()
    assert final.manifest.version_id == "v2"
    assert set(final.edges["run_id"].unique()) == {"v2"}
    assert node_count(clean_neo4j, "v1") == 0


class _CrashingStore(Neo4jStore):
    """Dies after `survive` batches, as a publish would when the process or the connection goes away."""

    def __init__(self, driver: neo4j.Driver, survive: int, **kwargs: Any) -> None:
        super().__init__(driver, **kwargs)
        self.survive = survive

    def _write_batch(self, query: str, params: dict[str, Any], version: str) -> int:
        if self.survive == 0:
            raise StoreError("simulated crash")
        self.survive -= 1
        return super()._write_batch(query, params, version)


@pytest.mark.parametrize("survive", [1, 6])  # 1: inside the node batches; 6: inside the relation batches
def test_crashed_publish_keeps_old_version_and_retry_has_no_duplicates(
    clean_neo4j: neo4j.Driver, survive: int
) -> None:
    p1, r1, m1 = make_graph("v1")
    p2, r2, m2 = make_graph("v2", n_products=40)
    Neo4jStore(clean_neo4j).publish(p1, r1, m1)

    with pytest.raises(StoreError, match="simulated crash"):
        _CrashingStore(clean_neo4j, survive, batch_size=10).publish(p2, r2, m2)
    store = Neo4jStore(clean_neo4j, batch_size=10)
    assert store.current_version() == "v1"
    assert [m.version_id for m in store.list_versions()] == ["v1"]
    assert_same_graph(store, None, p1, r1)
    with pytest.raises(VersionNotFound):
        store.load("v2")

    store.publish(p2, r2, m2)  # resumes the partial version
    assert store.current_version() == "v2"
    assert node_count(clean_neo4j, "v2") == len(p2)
    assert rel_count(clean_neo4j, "v2") == len(r2)
    assert_same_graph(store, None, p2, r2)


def test_crashed_partial_of_other_content_is_replaced_and_cleaned(clean_neo4j: neo4j.Driver) -> None:
    p1, r1, m1 = make_graph("v1")
    store = Neo4jStore(clean_neo4j, batch_size=10)
    store.publish(p1, r1, m1)
    big, big_r, big_m = make_graph("v2", n_products=50)
    with pytest.raises(StoreError):
        _CrashingStore(clean_neo4j, 3, batch_size=10).publish(big, big_r, big_m)
    # Same version id, different (smaller) content: the partial rows must not leak into it.
    p2, r2, m2 = make_graph("v2", n_products=20, prefix="q")
    store.publish(p2, r2, m2)
    assert_same_graph(store, "v2", p2, r2)
    assert node_count(clean_neo4j, "v2") == 20
    # A crash in v3 followed by a publish of v4 leaves no trace of v3.
    p3, r3, m3 = make_graph("v3")
    with pytest.raises(StoreError):
        _CrashingStore(clean_neo4j, 2, batch_size=10).publish(p3, r3, m3)
    assert node_count(clean_neo4j, "v3") > 0
    p4, r4, m4 = make_graph("v4")
    store.publish(p4, r4, m4)
    assert node_count(clean_neo4j, "v3") == 0
    assert count(clean_neo4j, "MATCH (v:GraphVersion {version_id: 'v3'}) RETURN count(v)") == 0


_KILLED_PUBLISHER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import neo4j
    from graph_store.neo4j import Neo4jStore
    from tests.integration.test_neo4j_store import make_graph
    driver = neo4j.GraphDatabase.driver(os.environ["T_URI"], auth=(os.environ["T_USER"], os.environ["T_PASSWORD"]))
    products, relations, manifest = make_graph("v2", n_products=2000, fanout=3)
    Neo4jStore(driver, batch_size=50).publish(products, relations, manifest)
    """
)


def test_killed_publisher_process_leaves_old_version_current(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j, batch_size=500)
    p1, r1, m1 = make_graph("v1")
    store.publish(p1, r1, m1)
    uri = clean_neo4j.get_server_info().address
    env = {
        **os.environ,
        "T_URI": f"bolt://{uri.host}:{uri.port}",
        "T_USER": os.environ.get("NEO4J_USER", "neo4j"),
        "T_PASSWORD": os.environ.get("NEO4J_PASSWORD", "shelfgraph"),
    }
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PUBLISHER, str(REPO_ROOT)], env=env)
    try:
        deadline = time.monotonic() + 120
        while node_count(clean_neo4j, "v2") < 500:
            assert proc.poll() is None, "publisher ended before it could be killed"
            assert time.monotonic() < deadline, "publisher made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert store.current_version() == "v1"
    assert_same_graph(store, None, p1, r1)

    p2, r2, m2 = make_graph("v2", n_products=2000, fanout=3)
    store.publish(p2, r2, m2)
    assert store.current_version() == "v2"
    assert node_count(clean_neo4j, "v2") == 2000
    assert rel_count(clean_neo4j, "v2") == 6000


def test_republishing_same_version_writes_no_duplicates(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j, batch_size=8)
    p1, r1, m1 = make_graph("v1")
    p2, r2, m2 = make_graph("v2")
    store.publish(p1, r1, m1)
    store.publish(p2, r2, m2)
    store.publish(p1, r1, m1)  # identical content again: switches back, writes nothing new
    assert store.current_version() == "v1"
    store.publish(p1, r1, m1)
    assert count(clean_neo4j, "MATCH (p:Product) RETURN count(p)") == len(p1) + len(p2)
    assert count(clean_neo4j, "MATCH ()-[r]->() RETURN count(r)") == len(r1) + len(r2)
    assert count(clean_neo4j, "MATCH (v:GraphVersion) RETURN count(v)") == 2
    assert count(clean_neo4j, "MATCH (c:CurrentGraph) RETURN count(c)") == 1
    assert_same_graph(store, None, p1, r1)

    changed, changed_r, _ = make_graph("v1", title_suffix=" changed")
    with pytest.raises(StoreError, match="immutable"):
        store.publish(changed, changed_r, m1)
    assert_same_graph(store, "v1", p1, r1)


def test_hostile_text_round_trips_unchanged(clean_neo4j: neo4j.Driver) -> None:
    products = [
        Product(
            id=text[:200],
            title=text,
            description=text,
            brand=text,
            category=(text, "plain"),
            attributes={text: text},
            enriched={"k": text},
            keyphrases=(text,),
        )
        for text in HOSTILE
    ]
    relations = [
        Relation(
            source=products[i].id,
            target=products[(i + 1) % len(products)].id,
            kind="complement" if i % 2 else "substitute",
            score=0.5,
            reasons=(HOSTILE[i], HOSTILE[-1 - i]),
            evidence=Evidence(query=HOSTILE[i]),
            provenance=Provenance(run_id="r1", model=HOSTILE[i], prompt_version="p", stage=HOSTILE[0]),
        )
        for i in range(len(products))
    ]
    manifest = GraphVersion(
        version_id="hostile-1",
        catalog_fingerprint=catalog_fingerprint(products),
        product_count=len(products),
        relation_counts={"complement": 4, "substitute": 5},
    )
    store = Neo4jStore(clean_neo4j, batch_size=4)
    store.publish(products, relations, manifest)
    assert_same_graph(store, None, products, relations)
    assert count(clean_neo4j, "MATCH (n) RETURN count(n)") == len(products) + 2  # + GraphVersion, CurrentGraph


def test_keep_n_removes_old_versions_and_their_nodes(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j, keep=2, batch_size=10)
    for n in range(1, 5):
        products, relations, manifest = make_graph(f"v{n}")
        store.publish(products, relations, manifest)
    assert [m.version_id for m in store.list_versions()] == ["v3", "v4"]
    for gone in ("v1", "v2"):
        assert node_count(clean_neo4j, gone) == 0
        with pytest.raises(VersionNotFound):
            store.load(gone)
    assert node_count(clean_neo4j, "v3") == 30 and node_count(clean_neo4j, "v4") == 30
    assert count(clean_neo4j, "MATCH (p:Product) RETURN count(p)") == 60


def test_bad_input_is_refused_before_writing(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j)
    products, relations, manifest = make_graph("v1")
    with pytest.raises(StoreError, match="not in the publish"):
        store.publish(products[:-1], relations, manifest)
    with pytest.raises(StoreError, match="duplicate product"):
        store.publish([*products, products[0]], relations, manifest)
    with pytest.raises(StoreError, match="duplicate relation"):
        store.publish(products, [*relations, relations[0]], manifest)
    assert count(clean_neo4j, "MATCH (n) RETURN count(n)") == 0


def test_complements_query_returns_top_k_of_current_version(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j)
    p1, r1, m1 = make_graph("v1", fanout=5)
    store.publish(p1, r1, m1)
    got = complements_query(clean_neo4j, "p00003", k=2)
    expected = sorted((r for r in r1 if r.source == "p00003" and r.kind == "complement"), key=lambda r: -r.score)
    assert got == expected[:2]
    assert complements_query(clean_neo4j, "no-such-id", k=5) == []


def test_from_settings_builds_its_own_driver(clean_neo4j: neo4j.Driver) -> None:
    address = clean_neo4j.get_server_info().address
    settings = DistillSettings(
        neo4j_uri=f"bolt://{address.host}:{address.port}",
        neo4j_user=os.environ.get("NEO4J_USER", "neo4j"),
        neo4j_password=SecretStr(os.environ.get("NEO4J_PASSWORD", "shelfgraph")),
        neo4j_batch_size=7,
        keep_versions=1,
    )
    products, relations, manifest = make_graph("v1")
    with Neo4jStore.from_settings(settings) as store:
        store.publish(products, relations, manifest)
        assert store.current_version() == "v1"
    assert_same_graph(Neo4jStore(clean_neo4j), "v1", products, relations)


def test_unreachable_server_raises_store_error() -> None:
    driver = neo4j.GraphDatabase.driver(
        "bolt://127.0.0.1:1", auth=("neo4j", "x"), connection_timeout=1, max_transaction_retry_time=0.5
    )
    try:
        with pytest.raises(StoreError):
            Neo4jStore(driver).current_version()
    finally:
        driver.close()


# --- one publisher at a time ---------------------------------------------------------------------------------

_SLOW_PUBLISHER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import neo4j
    from graph_store.neo4j import Neo4jStore
    from tests.integration.test_neo4j_store import make_graph
    driver = neo4j.GraphDatabase.driver(os.environ["T_URI"], auth=(os.environ["T_USER"], os.environ["T_PASSWORD"]))
    products, relations, manifest = make_graph(sys.argv[2], n_products=3000, fanout=3)
    store = Neo4jStore(driver, batch_size=25, parallel=1, lease_seconds=float(sys.argv[3]))
    store.publish(products, relations, manifest)
    print("published", sys.argv[2])
    """
)


def _start_publisher(driver: neo4j.Driver, version: str, lease_seconds: float) -> subprocess.Popen[str]:
    address = driver.get_server_info().address
    env = {
        **os.environ,
        "T_URI": f"bolt://{address.host}:{address.port}",
        "T_USER": os.environ.get("NEO4J_USER", "neo4j"),
        "T_PASSWORD": os.environ.get("NEO4J_PASSWORD", "shelfgraph"),
    }
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_PUBLISHER, str(REPO_ROOT), version, str(lease_seconds)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_nodes(driver: neo4j.Driver, proc: subprocess.Popen[str], version: str, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while node_count(driver, version) < at_least:
        assert proc.poll() is None, f"publisher ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "publisher made no progress"
        time.sleep(0.05)


def test_second_publisher_is_refused_while_one_runs(clean_neo4j: neo4j.Driver) -> None:
    store = Neo4jStore(clean_neo4j, keep=1)
    p1, r1, m1 = make_graph("v1")
    store.publish(p1, r1, m1)
    proc = _start_publisher(clean_neo4j, "v2", 30)
    try:
        _wait_for_nodes(clean_neo4j, proc, "v2", 300)
        written = node_count(clean_neo4j, "v2")
        p3, r3, m3 = make_graph("v3")
        with pytest.raises(PublisherBusy, match="another publisher is running") as refused:
            store.publish(p3, r3, m3)
        assert "writing version 'v2'" in str(refused.value)
        # The refused publisher wrote nothing and removed nothing (keep=1 would have doomed v2's partial rows).
        assert node_count(clean_neo4j, "v3") == 0
        assert node_count(clean_neo4j, "v2") >= written
        assert store.current_version() == "v1"
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert store.current_version() == "v2"
    assert node_count(clean_neo4j, "v2") == 3000 and rel_count(clean_neo4j, "v2") == 9000
    store.publish(p3, r3, m3)  # the lease was released: the next publish goes through
    assert store.current_version() == "v3"


def test_cleanup_never_removes_a_version_a_live_publisher_is_writing(clean_neo4j: neo4j.Driver) -> None:
    """The lease is taken from a publisher that is still alive (here: its lock node is deleted, as after a
    partition outlasting the lease). Another publish then runs its cleanup with keep=1: the live publisher's
    partial version has a fresh heartbeat and stays; the live publisher then finds its lease gone and does
    not switch the pointer."""
    store = Neo4jStore(clean_neo4j, keep=1, lease_seconds=6)
    p1, r1, m1 = make_graph("v1")
    store.publish(p1, r1, m1)
    proc = _start_publisher(clean_neo4j, "v2", 6)
    try:
        _wait_for_nodes(clean_neo4j, proc, "v2", 300)
        clean_neo4j.execute_query("MATCH (l:PublishLock) DELETE l")
        p3, r3, m3 = make_graph("v3")
        store.publish(p3, r3, m3)
        assert store.current_version() == "v3"
        assert node_count(clean_neo4j, "v2") >= 300
        assert count(clean_neo4j, "MATCH (v:GraphVersion {version_id: 'v2', state: 'writing'}) RETURN count(v)") == 1
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "lost the publish lease" in err, (out, err)
    assert store.current_version() == "v3"
    assert_same_graph(store, None, p3, r3)
    # Its partial version was given up when it stopped; the next publish removes it.
    p4, r4, m4 = make_graph("v4")
    store.publish(p4, r4, m4)
    assert node_count(clean_neo4j, "v2") == 0
    assert count(clean_neo4j, "MATCH (v:GraphVersion {version_id: 'v2'}) RETURN count(v)") == 0


def test_expired_lease_of_a_publisher_elsewhere_is_taken_over(clean_neo4j: neo4j.Driver) -> None:
    clean_neo4j.execute_query(
        "CREATE (:PublishLock {name: 'publish', owner: 'other-host:4242:feed', host: 'other-host', pid: 4242, "
        "version: 'v9', heartbeat_at: timestamp(), expires_at: timestamp() + 1500})"
    )
    store = Neo4jStore(clean_neo4j)
    p1, r1, m1 = make_graph("v1")
    with pytest.raises(PublisherBusy, match="other-host:4242:feed"):
        store.publish(p1, r1, m1)
    assert store.current_version() is None
    time.sleep(2.0)  # nobody renews it: the lease expires
    store.publish(p1, r1, m1)
    assert store.current_version() == "v1"
    assert count(clean_neo4j, "MATCH (l:PublishLock) RETURN count(l)") == 0  # released after the publish


def test_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once(clean_neo4j: neo4j.Driver) -> None:
    me = Publisher.this_process()
    if me.boot_id is None or me.pid_ns is None:
        pytest.skip("needs /proc to tell a dead process")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    clean_neo4j.execute_query(
        "CREATE (:PublishLock {name: 'publish', owner: $owner, host: $host, boot_id: $boot_id, pid_ns: $pid_ns, "
        "pid: $pid, pid_start: '1', heartbeat_at: timestamp(), expires_at: timestamp() + 600000})",
        owner=f"{me.host}:{gone.pid}:dead", host=me.host, boot_id=me.boot_id, pid_ns=me.pid_ns, pid=gone.pid,
    )
    store = Neo4jStore(clean_neo4j)
    p1, r1, m1 = make_graph("v1")
    store.publish(p1, r1, m1)
    assert store.current_version() == "v1"


def test_versions_written_before_the_provenance_table_still_load(clean_neo4j: neo4j.Driver) -> None:
    """Older versions carry run_id/model/prompt_version/stage on every relationship; an upgraded reader serves them."""
    store = Neo4jStore(clean_neo4j)
    p1, r1, m1 = make_graph("v1", fanout=5)
    store.publish(p1, r1, m1)
    clean_neo4j.execute_query(
        "MATCH (:Product {version: 'v1'})-[r]->() "
        "SET r.run_id = 'v1', r.model = 'm', r.prompt_version = 'pv1', r.stage = 'verify' REMOVE r.p"
    )
    clean_neo4j.execute_query("MATCH (v:GraphVersion {version_id: 'v1'}) REMOVE v.provenance")
    assert_same_graph(store, None, p1, r1)
    expected = sorted((r for r in r1 if r.source == "p00003" and r.kind == "complement"), key=lambda r: -r.score)
    assert complements_query(clean_neo4j, "p00003", k=2) == expected[:2]
