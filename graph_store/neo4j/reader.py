"""Reading versions back from Neo4j: the current pointer, manifests, whole versions (paged, checked against
their manifest row), and the live per-request complements lookup the in-memory index is compared against.
"""

from __future__ import annotations

import json
from typing import Any

import neo4j
import polars as pl

from graph_schema import cypher
from graph_schema.errors import StoreError, VersionNotFound
from graph_schema.models import GraphVersion, Relation
from graph_schema.store import PublishedGraph
from graph_schema.tables import EDGE_SCHEMA, NODE_SCHEMA, relation_from_row
from graph_store.neo4j.session import _KIND_OF_TYPE, Neo4jBase, _node_key, _q, _translated

_LOAD_ATTEMPTS = 3
"""A load retries when cleanup removed the version it was reading (only possible with a small `keep`)."""
_READ_PAGE = 10_000
"""Products per read page (their relations come with them)."""


_PROVENANCE_FIELDS = ("run_id", "model", "prompt_version", "stage")


def _decode_provenance(row: dict[str, Any]) -> dict[str, Any]:
    """`row` (a COMPLEMENTS_TOP_K record) with run_id, model, prompt_version and stage taken from the version's
    provenance table; rows of versions written before the table already carry them."""
    table_json, position = row.pop("provenance"), row.pop("p")
    if position is None:
        return row
    if table_json is None:
        raise StoreError("a relation in Neo4j points into a provenance table its version does not have")
    return {**row, **dict(zip(_PROVENANCE_FIELDS, json.loads(table_json)[position], strict=True))}


class Reader(Neo4jBase):
    """The read half of the GraphStore protocol."""

    def current_version(self) -> str | None:
        with _translated("reading the current version"):
            rows = self._read_rows(cypher.GET_CURRENT, name=cypher.CURRENT_NAME)
        return str(rows[0]["version"]) if rows and rows[0]["version"] is not None else None

    def _complete_version(self, version_id: str | None) -> dict[str, Any]:
        wanted = version_id if version_id is not None else self.current_version()
        if wanted is None:
            raise VersionNotFound("no graph version has been published to Neo4j yet")
        with _translated(f"reading version {wanted!r}"):
            rows = self._read_rows(cypher.GET_VERSION, version=wanted)
        if not rows or rows[0]["state"] != cypher.STATE_COMPLETE:
            state = rows[0]["state"] if rows else "absent"
            raise VersionNotFound(f"graph version {wanted!r} is not available in Neo4j (state: {state})")
        return rows[0]

    def manifest(self, version_id: str | None = None) -> GraphVersion:
        row = self._complete_version(version_id)
        return GraphVersion.model_validate_json(row["manifest"])

    def list_versions(self) -> list[GraphVersion]:
        with _translated("listing versions"):
            rows = self._read_rows(cypher.LIST_COMPLETE_VERSIONS, complete=cypher.STATE_COMPLETE)
        return [GraphVersion.model_validate_json(row["manifest"]) for row in rows]

    def load(self, version_id: str | None = None) -> PublishedGraph:
        for _ in range(_LOAD_ATTEMPTS):
            row = self._complete_version(version_id)
            version = str(row["version_id"])
            with _translated(f"loading version {version!r}"):
                nodes, edges = self._read(lambda tx: self._load_frames(tx, version, row["provenance"]))
                # Cleanup marks a version `deleting` before removing anything, so a version still
                # complete after the read was whole while it was read (read-committed isolation).
                state = self._read_rows(cypher.VERSION_STATE, version=version)
            if state and state[0]["state"] == cypher.STATE_COMPLETE:
                if nodes.height != row["product_rows"] or edges.height != row["relation_rows"]:
                    raise StoreError(
                        f"version {version!r} in Neo4j holds {nodes.height} products and {edges.height} "
                        f"relations, its manifest row says {row['product_rows']} and {row['relation_rows']}"
                    )
                manifest = GraphVersion.model_validate_json(row["manifest"])
                return PublishedGraph(manifest=manifest, nodes=nodes, edges=edges)
            if version_id is not None:
                raise VersionNotFound(f"graph version {version!r} was removed while it was being loaded")
        raise StoreError(f"the current version changed and was removed {_LOAD_ATTEMPTS} times during load")

    def _load_frames(
        self, tx: neo4j.ManagedTransaction, version: str, provenance_json: str | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        ids_record = tx.run(_q(cypher.LOAD_PRODUCT_IDS), version=version).single(strict=True)
        keys = [_node_key(version, pid) for pid in ids_record["ids"]]
        node_rows: list[list[Any]] = []
        edge_rows: list[list[Any]] = []
        for start in range(0, len(keys), _READ_PAGE):
            page = keys[start : start + _READ_PAGE]
            node_rows += tx.run(_q(cypher.LOAD_PRODUCTS_PAGE), keys=page).single(strict=True)["rows"]
            edge_rows += tx.run(_q(cypher.LOAD_RELATIONS_PAGE), keys=page).single(strict=True)["rows"]
        # Entities deleted while being read come back as nulls (read-committed); they are dropped here and
        # the caller's state check then sees the version as `deleting` and retries.
        node_rows = [row for row in node_rows if row[0] is not None]
        table = [list(entry) for entry in json.loads(provenance_json)] if provenance_json else []
        kept_edges = []
        for row in edge_rows:
            kind = _KIND_OF_TYPE.get(row[2])
            if kind is None or row[0] is None or row[1] is None:
                continue
            position, legacy = row[6], row[7:]
            del row[6:]
            if position is None:
                row.extend(legacy)  # written before the provenance table
            elif 0 <= position < len(table):
                row.extend(table[position])
            else:
                raise StoreError(f"relation {row[0]!r} -> {row[1]!r} in version {version!r} has no provenance entry")
            row[2] = kind
            kept_edges.append(row)
        nodes = pl.DataFrame(node_rows, schema=NODE_SCHEMA, orient="row")
        edges = pl.DataFrame(kept_edges, schema=EDGE_SCHEMA, orient="row")
        return nodes.sort("id"), edges.sort("source", "kind", "target")


def complements_query(
    driver: neo4j.Driver, product_id: str, k: int = 10, *, database: str | None = None
) -> list[Relation]:
    """Live lookup of the top-k complements of one product in the current version, best first.
    The serving path answers from memory; this is the per-request Cypher it is compared against."""
    with _translated(f"looking up complements of {product_id!r}"):
        records, _, _ = driver.execute_query(
            _q(cypher.COMPLEMENTS_TOP_K),
            name=cypher.CURRENT_NAME,
            separator=cypher.KEY_SEPARATOR,
            product_id=product_id,
            k=k,
            database_=database,
            routing_=neo4j.RoutingControl.READ,
        )
    out = []
    for record in records:
        row = _decode_provenance(record.data())
        out.append(relation_from_row({**row, "kind": _KIND_OF_TYPE[row.pop("type")]}))
    return out
