"""Tiny real graphs for the server tests: a camera/phone catalog of 11 products, built as the
`PublishedGraph` a store would hand back."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from graph_schema.store import PublishedGraph
from graph_schema.kinds import RelationKind
from graph_schema.models import GraphVersion, Product, Provenance, Relation
from graph_schema.tables import edges_frame, nodes_frame
from serve import create_app
from serve import native
from serve.index import GraphIndex
from serve.settings import ServeSettings

PROV = Provenance(run_id="run-test", model="test-model", prompt_version="p1", stage="verify")


def product(pid: str, title: str, category: tuple[str, ...] = (), price: float | None = None, **extra: object) -> Product:
    return Product(id=pid, title=title, category=category, price=price, **extra)  # type: ignore[arg-type]


def rel(source: str, target: str, kind: RelationKind, score: float, *reasons: str) -> Relation:
    return Relation(
        source=source,
        target=target,
        kind=kind,
        score=score,
        reasons=reasons or (f"{source} {kind} {target}",),
        provenance=PROV,
    )


READERS = ["native", "pure"]
"""The two read paths of a GraphIndex: the C extension (serve/_fastindex.c) and pure Python."""


def use_native(reader: str) -> bool:
    """`native=` for a GraphIndex read by `reader`; skips the test when the extension is not built."""
    if reader == "native" and not native.available():
        pytest.skip("serve._fastindex is not built (test_native.py says why CI must build it)")
    return reader == "native"


def make_graph(products: Sequence[Product], relations: Sequence[Relation], version: str = "v1") -> PublishedGraph:
    counts: dict[RelationKind, int] = {"complement": 0, "substitute": 0}
    for r in relations:
        counts[r.kind] += 1
    manifest = GraphVersion(
        version_id=version,
        catalog_fingerprint="f" * 32,
        product_count=len(products),
        relation_counts=counts,
    )
    return PublishedGraph(manifest=manifest, nodes=nodes_frame(products), edges=edges_frame(relations))


def catalog() -> list[Product]:
    return [
        product("cam1", "Camera A", ("Electronics", "Cameras"), 500.0,
                enriched={"sensor": "full frame"}, keyphrases=("mirrorless camera",), brand="Acme",
                description="A camera", attributes={"color": "black"}),
        product("cam2", "Camera B", ("Electronics", "Cameras"), 450.0),
        product("cam3", "Camera C", ("Electronics", "Cameras"), 300.0),
        product("tri1", "Tripod", ("Electronics", "Camera Accessories"), 50.0),
        product("lens1", "Lens", ("Electronics", "Camera Accessories"), None),
        product("bag1", "Camera bag", ("Bags",), 40.0),
        product("sd1", "SD card 64GB", ("Electronics", "Storage"), 20.0),
        product("sd2", "SD card 128GB", ("Electronics", "Storage"), 35.0),
        product("phone1", "Phone", ("Electronics", "Phones"), 800.0),
        product("case1", "Phone case", ("Accessories", "Phone cases"), 15.0),
        product("lonely", "Lonely thing"),
    ]


def relations() -> list[Relation]:
    return [
        rel("cam1", "tri1", "complement", 0.9, "keeps the camera steady", "long exposures"),
        rel("cam1", "sd1", "complement", 0.8, "stores photos"),
        rel("cam1", "bag1", "complement", 0.7, "carries the camera"),
        rel("cam1", "lens1", "complement", 0.6, "wider shots"),
        rel("cam1", "sd2", "complement", 0.5, "stores photos"),
        rel("phone1", "case1", "complement", 0.9, "protects the phone"),
        rel("phone1", "sd1", "complement", 0.3, "extra storage"),
        rel("phone1", "cam2", "complement", 0.2, "better photos"),
        rel("tri1", "cam1", "complement", 0.4, "something to mount"),
        rel("cam1", "cam2", "substitute", 0.85, "comparable camera"),
        rel("sd1", "sd2", "substitute", 0.9, "same card, larger"),
    ]


@pytest.fixture
def graph() -> PublishedGraph:
    return make_graph(catalog(), relations())


@pytest.fixture
def index(graph: PublishedGraph) -> GraphIndex:
    return GraphIndex.from_published(graph)


@pytest.fixture
def settings() -> ServeSettings:
    return ServeSettings(reload_interval_s=0, max_k=20, default_k=5, max_cart_items=5, admin_token="s3cret")


@pytest.fixture
def client(settings: ServeSettings, index: GraphIndex):  # type: ignore[no-untyped-def]
    return create_app(settings, index=index).test_client()
