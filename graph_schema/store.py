"""The interface every graph store implements, and the columnar graph it hands back.

A store publishes immutable versions and swaps a `current` pointer atomically: a reader sees the old
version or the new one, never a mix. Stores never import litellm (the server reads through them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import polars as pl

from graph_schema.models import GraphVersion, Product, Relation
from graph_schema.tables import EDGE_SCHEMA, NODE_SCHEMA, product_from_row, relation_from_row


@dataclass(frozen=True)
class PublishedGraph:
    """One graph version as two tables (layout in `graph_schema.tables`) plus its manifest."""

    manifest: GraphVersion
    nodes: pl.DataFrame
    edges: pl.DataFrame

    def __post_init__(self) -> None:
        for name, frame, schema in (("nodes", self.nodes, NODE_SCHEMA), ("edges", self.edges, EDGE_SCHEMA)):
            missing = set(schema) - set(frame.columns)
            if missing:
                raise ValueError(f"{name} table lacks columns {sorted(missing)}")

    def products(self) -> list[Product]:
        return [product_from_row(row) for row in self.nodes.iter_rows(named=True)]

    def relations(self) -> list[Relation]:
        return [relation_from_row(row) for row in self.edges.iter_rows(named=True)]


@runtime_checkable
class GraphStore(Protocol):
    """Where graph versions are published and read back."""

    def publish(
        self, products: Sequence[Product], relations: Sequence[Relation], manifest: GraphVersion
    ) -> GraphVersion:
        """Write a new version and make it current atomically. Returns the stored manifest.
        Raises StoreError; on failure the previous version stays current."""
        ...

    def current_version(self) -> str | None:
        """Id of the current version, or None if nothing was published yet."""
        ...

    def load(self, version_id: str | None = None) -> PublishedGraph:
        """Read a version (default: current). Raises VersionNotFound."""
        ...

    def manifest(self, version_id: str | None = None) -> GraphVersion:
        """The manifest alone (cheap): lets a server poll for new versions."""
        ...

    def list_versions(self) -> list[GraphVersion]:
        """Manifests of the versions kept, oldest first."""
        ...
