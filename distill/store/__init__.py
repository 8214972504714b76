"""Graph stores: where published graph versions live. The embedded on-disk store is the default;
Neo4j is the production option. Both implement `GraphStore` from `distill.store.base`."""

from distill.store.base import GraphStore, PublishedGraph

__all__ = ["GraphStore", "PublishedGraph"]
