"""Graph stores: where published graph versions live. The embedded on-disk store is the default;
Neo4j is the production option. Both implement `GraphStore` from `graph_schema.store`.

The distiller writes through them and the server reads through them: this package imports neither.
"""

from __future__ import annotations

from typing import Literal

from graph_schema.store import GraphStore, PublishedGraph
from graph_store.config import StoreSettings

StoreKind = Literal["embedded", "neo4j"]


def open_store(settings: StoreSettings, kind: StoreKind | None = None) -> GraphStore:
    """The store named by `kind` (default: settings.store), configured from settings."""
    chosen = kind or settings.store
    if chosen == "neo4j":
        from graph_store.neo4j import Neo4jStore

        return Neo4jStore.from_settings(settings)
    from graph_store.embedded import EmbeddedStore

    return EmbeddedStore(settings.embedded_store_dir, keep=settings.keep_versions)


__all__ = ["GraphStore", "PublishedGraph", "StoreKind", "StoreSettings", "open_store"]
