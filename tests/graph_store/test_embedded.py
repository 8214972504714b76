"""EmbeddedStore: round-trip, keep-N, atomic publish under a concurrent reader, interrupted publishes, GraphML."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import networkx as nx  # type: ignore[import-untyped]
import polars as pl
import pytest

from distill.errors import StoreError, VersionNotFound
from graph_schema.store import GraphStore
from graph_store.embedded import EmbeddedStore, export_graphml
from graph_schema.kinds import RelationKind
from graph_schema.models import GraphVersion, Product, Provenance, Relation, catalog_fingerprint

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def relations_for(products: list[Product], run_id: str, count: int = 12) -> list[Relation]:
    """`count` relations whose provenance carries `run_id`, so a reader can tell which version a row came from."""
    out = []
    for i in range(count):
        kind: RelationKind = "complement" if i % 3 else "substitute"
        out.append(Relation(
            source=products[i % len(products)].id, target=products[(i + 1) % len(products)].id, kind=kind,
            score=round(0.1 + i / (2 * count), 3), reasons=(f"reason {i} of {run_id}", "second reason"),
            provenance=Provenance(run_id=run_id, model="m", prompt_version="v1", stage="verify"),
        ))
    return out


def manifest_for(version_id: str, products: list[Product], minutes: int = 0) -> GraphVersion:
    return GraphVersion(
        version_id=version_id, created_at=T0 + timedelta(minutes=minutes),
        catalog_fingerprint=catalog_fingerprint(products), product_count=0, relation_counts={},
    )


def publish(store: EmbeddedStore, version_id: str, products: list[Product], minutes: int = 0) -> GraphVersion:
    return store.publish(products, relations_for(products, version_id), manifest_for(version_id, products, minutes))


def test_satisfies_the_protocol(tmp_path: Path) -> None:
    assert isinstance(EmbeddedStore(tmp_path), GraphStore)


def test_empty_store(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "graph")
    assert store.current_version() is None
    assert store.list_versions() == []
    with pytest.raises(VersionNotFound, match="nothing published"):
        store.load()
    with pytest.raises(VersionNotFound):
        store.manifest("v1")


def test_publish_and_load_round_trip(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path / "graph")
    relations = relations_for(tiny_catalog, "v1")
    stored = store.publish(tiny_catalog, relations, manifest_for("v1", tiny_catalog))
    assert stored.product_count == 20
    assert stored.relation_counts == {"complement": 8, "substitute": 4}  # counted from the tables
    assert stored.parent_version is None
    assert store.current_version() == "v1"
    graph = store.load()
    assert graph.manifest == stored == store.manifest() == store.manifest("v1")
    assert graph.products() == tiny_catalog
    assert graph.relations() == relations
    assert sorted(p.name for p in (tmp_path / "graph" / "versions" / "v1").iterdir()) == [
        "edges.parquet", "manifest.json", "nodes.parquet"]
    second = publish(store, "v2", tiny_catalog, minutes=1)
    assert second.parent_version == "v1"
    assert store.load("v1").manifest.version_id == "v1"  # older versions stay readable
    assert store.load().manifest.version_id == "v2"


def test_keeps_the_last_n_versions(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path, keep=2)
    for i in range(5):
        publish(store, f"v{i}", tiny_catalog, minutes=i)
    assert [m.version_id for m in store.list_versions()] == ["v3", "v4"]
    assert store.current_version() == "v4"
    with pytest.raises(VersionNotFound, match="v0"):
        store.load("v0")


def test_current_version_is_never_pruned(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path, keep=1)
    publish(store, "late", tiny_catalog, minutes=10)
    publish(store, "early", tiny_catalog, minutes=0)  # published last, so current, though created earlier
    assert store.current_version() == "early"
    assert {m.version_id for m in store.list_versions()} == {"late", "early"}


def test_republishing_an_existing_version_fails(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path)
    publish(store, "v1", tiny_catalog)
    with pytest.raises(StoreError, match="already exists"):
        publish(store, "v1", tiny_catalog)
    assert store.current_version() == "v1"


def test_refuses_dangling_or_duplicate_relations(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path)
    relations = relations_for(tiny_catalog, "v1")
    with pytest.raises(StoreError, match="outside the catalog"):
        store.publish(tiny_catalog[:5], relations, manifest_for("v1", tiny_catalog))
    with pytest.raises(StoreError, match="duplicate"):
        store.publish(tiny_catalog, relations + relations[:1], manifest_for("v1", tiny_catalog))
    assert store.current_version() is None


def test_interrupted_publish_leaves_the_previous_version(
    tmp_path: Path, tiny_catalog: list[Product], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    publish(store, "v1", tiny_catalog)
    real_write = pl.DataFrame.write_parquet
    calls = {"n": 0}

    def failing_write(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # nodes written, edges not
            raise OSError("disk full")
        real_write(self, file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing_write)
    with pytest.raises(StoreError, match="disk full"):
        publish(store, "v2", tiny_catalog, minutes=1)
    monkeypatch.undo()
    assert store.current_version() == "v1"
    assert store.load().manifest.version_id == "v1"
    assert [m.version_id for m in store.list_versions()] == ["v1"]
    assert not any((tmp_path / "staging").glob("*"))  # the half-written folder is gone
    publish(store, "v2", tiny_catalog, minutes=1)  # and the id can be published for real
    assert store.current_version() == "v2"


def test_failed_pointer_swap_keeps_the_previous_version(
    tmp_path: Path, tiny_catalog: list[Product], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    publish(store, "v1", tiny_catalog)

    def broken_swap(version_id: str) -> None:
        raise OSError("pointer write failed")

    monkeypatch.setattr(store, "_swap_pointer", broken_swap)
    with pytest.raises(StoreError, match="pointer write failed"):
        publish(store, "v2", tiny_catalog, minutes=1)
    assert store.current_version() == "v1"
    assert not (tmp_path / "versions" / "v2").exists()


def test_leftovers_of_a_crashed_publish_are_cleaned_up(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path)
    publish(store, "v1", tiny_catalog)
    leftover = tmp_path / "staging" / "v2.deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "nodes.parquet").write_bytes(b"half a file")
    (tmp_path / "current.tmp").write_text("v2")
    assert store.current_version() == "v1"  # readers never see staging
    assert [m.version_id for m in store.list_versions()] == ["v1"]
    publish(store, "v3", tiny_catalog, minutes=2)
    assert not leftover.exists()
    assert not (tmp_path / "current.tmp").exists()
    assert store.current_version() == "v3"


def test_concurrent_reader_never_sees_a_mixed_version(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path, keep=3)
    publish(store, "v00", tiny_catalog)
    seen: list[str] = []
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                graph = store.load()
            except Exception as exc:  # any failure is a finding, reported below
                problems.append(repr(exc))
                continue
            version = graph.manifest.version_id
            run_ids = set(graph.edges["run_id"])
            if run_ids != {version} or graph.nodes.height != 20:
                problems.append(f"{version}: edges of {sorted(run_ids)}, {graph.nodes.height} nodes")
            seen.append(version)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 25):
            publish(store, f"v{i:02d}", tiny_catalog, minutes=i)
    finally:
        done.set()
        thread.join(timeout=30)
    assert problems == []
    assert len(seen) > 0
    assert seen == sorted(seen)  # versions only move forward
    assert store.load().manifest.version_id == "v24"


def test_invalid_version_ids_are_refused(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path)
    with pytest.raises(VersionNotFound, match="invalid version id"):
        store.load("../outside")
    with pytest.raises(StoreError, match="safe folder name"):
        store.publish(tiny_catalog, [], manifest_for("v1", tiny_catalog).model_copy(update={"version_id": "vé"}))
    with pytest.raises(StoreError):
        EmbeddedStore(tmp_path, keep=0)


def test_export_graphml_opens_with_networkx(tmp_path: Path, tiny_catalog: list[Product]) -> None:
    store = EmbeddedStore(tmp_path / "graph")
    publish(store, "v1", tiny_catalog)
    graph = store.load()
    path = export_graphml(graph, tmp_path / "out" / "graph.graphml")
    read = nx.read_graphml(path)
    assert read.number_of_nodes() == 20
    assert read.number_of_edges() == 12
    assert read.nodes["P-01"]["title"] == "Novaphone N12 128GB Smartphone"
    assert read.nodes["P-01"]["category"] == "Electronics > Phones > Smartphones"
    assert "price" not in read.nodes["P-20"]  # None values are left out, not written as "None"
    relation = graph.relations()[1]
    (attrs,) = [a for _, _, a in read.edges(relation.source, data=True) if a["kind"] == relation.kind]
    assert attrs["reasons"] == " | ".join(relation.reasons)
    assert float(attrs["score"]) == pytest.approx(relation.score)


def _failing_root_sync(store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Directory fsync fails for the store root only, i.e. right after the pointer was replaced."""
    import graph_store.embedded as embedded

    real = embedded._fsync_dir

    def fsync_dir(path: Path) -> None:
        if Path(path) == store.root:
            raise OSError(5, "Input/output error (injected)")
        real(path)

    monkeypatch.setattr(embedded, "_fsync_dir", fsync_dir)


def test_failed_directory_sync_after_the_swap_never_leaves_the_pointer_on_a_missing_version(
    tmp_path: Path, tiny_catalog: list[Product], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    publish(store, "v1", tiny_catalog)
    _failing_root_sync(store, monkeypatch)
    with pytest.raises(StoreError, match="Input/output error"):
        publish(store, "v2", tiny_catalog, minutes=1)
    monkeypatch.undo()
    # Whichever version the pointer names (on disk it may be either after a crash), that version is readable.
    assert store.current_version() == "v1"
    assert store.load().manifest.version_id == "v1"
    assert (tmp_path / "versions" / "v2" / "manifest.json").exists()
    assert store.load("v2").manifest.version_id == "v2"


def test_failed_directory_sync_on_the_first_publish_keeps_the_version_it_names(
    tmp_path: Path, tiny_catalog: list[Product], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    _failing_root_sync(store, monkeypatch)
    with pytest.raises(StoreError, match="no previous version"):
        publish(store, "v1", tiny_catalog)
    monkeypatch.undo()
    assert store.current_version() == "v1"
    assert store.load().manifest.version_id == "v1"
    publish(store, "v2", tiny_catalog, minutes=1)  # the store goes on working
    assert store.load().manifest.version_id == "v2"
