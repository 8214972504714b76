"""Graph stores: where published graph versions live. The embedded on-disk store is the default;
Neo4j is the production option. Both implement `GraphStore` from `distill.store.base`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from distill.store.base import GraphStore, PublishedGraph

if TYPE_CHECKING:
    from distill.settings import DistillSettings

StoreKind = Literal["embedded", "neo4j"]


def open_store(settings: DistillSettings, kind: StoreKind | None = None) -> GraphStore:
    """The store named by `kind` (default: settings.store), configured from settings."""
    chosen = kind or settings.store
    if chosen == "neo4j":
        from distill.store.neo4j import Neo4jStore

        return Neo4jStore.from_settings(settings)
    from distill.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.embedded_store_dir, keep=settings.keep_versions)


__all__ = ["GraphStore", "PublishedGraph", "StoreKind", "open_store"]
