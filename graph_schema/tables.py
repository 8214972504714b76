"""Columnar layout of a published graph version (nodes and edges tables).

The embedded store writes these tables as Parquet, the Neo4j store reads them back into the same shape,
and the server builds its index from them. Nested values (attributes, evidence) travel as JSON text so
every store can hold them as plain properties.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import polars as pl

from graph_schema.models import Evidence, Product, Provenance, Relation, finite_or_none

NODE_SCHEMA: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "id": pl.String,
    "title": pl.String,
    "description": pl.String,
    "brand": pl.String,
    "category": pl.List(pl.String),
    "price": pl.Float64,
    "attributes": pl.String,  # JSON object of raw catalog attributes
    "enriched": pl.String,  # JSON object of normalized attributes from the LLM
    "keyphrases": pl.List(pl.String),
    "content_hash": pl.String,
}

EDGE_SCHEMA: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "source": pl.String,
    "target": pl.String,
    "kind": pl.String,
    "score": pl.Float64,
    "reasons": pl.List(pl.String),
    "evidence": pl.String,  # JSON object of Evidence
    "run_id": pl.String,
    "model": pl.String,
    "prompt_version": pl.String,
    "stage": pl.String,
}


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def product_row(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "brand": product.brand,
        "category": list(product.category),
        "price": product.price,
        "attributes": _json(product.attributes),
        "enriched": _json(product.enriched),
        "keyphrases": list(product.keyphrases),
        "content_hash": product.content_hash,
    }


def product_from_row(row: Mapping[str, Any]) -> Product:
    return Product(
        id=row["id"],
        title=row["title"],
        description=row.get("description"),
        brand=row.get("brand"),
        category=tuple(row.get("category") or ()),
        price=finite_or_none(row.get("price")),
        attributes=json.loads(row.get("attributes") or "{}"),
        enriched=json.loads(row.get("enriched") or "{}"),
        keyphrases=tuple(row.get("keyphrases") or ()),
        content_hash=row.get("content_hash") or "",
    )


def relation_row(relation: Relation) -> dict[str, Any]:
    return {
        "source": relation.source,
        "target": relation.target,
        "kind": relation.kind,
        "score": relation.score,
        "reasons": list(relation.reasons),
        "evidence": relation.evidence.model_dump_json(exclude_none=True),
        "run_id": relation.provenance.run_id,
        "model": relation.provenance.model,
        "prompt_version": relation.provenance.prompt_version,
        "stage": relation.provenance.stage,
    }


def relation_from_row(row: Mapping[str, Any]) -> Relation:
    return Relation(
        source=row["source"],
        target=row["target"],
        kind=row["kind"],
        score=row["score"],
        reasons=tuple(row["reasons"]),
        evidence=Evidence.model_validate_json(row.get("evidence") or "{}"),
        provenance=Provenance(
            run_id=row["run_id"],
            model=row.get("model"),
            prompt_version=row.get("prompt_version"),
            stage=row.get("stage"),
        ),
    )


def nodes_frame(products: Iterable[Product]) -> pl.DataFrame:
    return pl.DataFrame([product_row(p) for p in products], schema=NODE_SCHEMA)


class EdgeRows(Sequence[Relation]):
    """Relations already held as an EDGE_SCHEMA frame, `.frame` (graph_schema.relation_table.RelationTable, which
    builds on this module: the base class lets `edges_frame` recognise it without importing it)."""

    frame: pl.DataFrame


def edges_frame(relations: Iterable[Relation]) -> pl.DataFrame:
    """The edges table of `relations`; a `RelationTable` is one already."""
    if isinstance(relations, EdgeRows):
        return relations.frame
    return pl.DataFrame([relation_row(r) for r in relations], schema=EDGE_SCHEMA)
