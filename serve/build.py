"""Turns a published graph (polars tables) into the flat numpy arrays `GraphIndex` answers from.

Everything here is vectorized (polars sorts and group-bys, numpy cumsums): a 20M-edge graph is built
without a per-edge Python loop. Nothing here does I/O or touches a store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from distill.store.base import PublishedGraph

log = logging.getLogger(__name__)

KIND_CODES: dict[str, int] = {"complement": 0, "substitute": 1}
CATEGORY_TOP = 50
"""Complement candidates kept per category for the `via_category` fallback."""
_SEP = "\x1f"  # joins list values into one interning key; stripped from the values first

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]


@dataclass(frozen=True)
class ProductDetails:
    """Per-product columns only GET /v1/products/<id> needs (JSON text parsed on request)."""

    description: list[str | None]
    brand: list[str | None]
    attributes_json: list[str | None]
    enriched_json: list[str | None]
    keyphrases: list[list[str] | None]


@dataclass(frozen=True)
class NodeColumns:
    ids: list[str]
    titles: list[str]
    category_id: I32
    """Row -> index into `categories` (the full category path), -1 when the product has none."""
    categories: tuple[tuple[str, ...], ...]
    price: F64
    """NaN when the catalog gives no price."""
    details: ProductDetails | None = None


@dataclass(frozen=True)
class EdgeColumns:
    src: I32
    dst: I32
    kind: I8
    """KIND_CODES values."""
    score: F32
    reason_id: I32
    reasons: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Csr:
    """Out-edges of every row, sorted by score descending then target row."""

    indptr: I64
    dst: I32
    score: F32
    reason_id: I32
    via: I32 | None = None
    """Category lists only: the product whose edge lent the candidate its reason."""

    def nbytes(self) -> int:
        arrays = [self.indptr, self.dst, self.score, self.reason_id] + ([self.via] if self.via is not None else [])
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True)
class IndexMeta:
    version: str
    created_at: datetime | None
    manifest_product_count: int
    manifest_relation_counts: dict[str, int]
    dropped_edges: int
    """Edges whose endpoints are not in the nodes table: counted here and logged, never served."""


@dataclass(frozen=True)
class IndexArrays:
    meta: IndexMeta
    nodes: NodeColumns
    reasons: tuple[tuple[str, ...], ...]
    complements: Csr
    substitutes: Csr
    category_complements: Csr
    """Row = category id: the category's most-used complement targets (mean score over its products)."""


def _readonly(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.flags.writeable = False


def _intern_lists(column: pl.Series) -> tuple[I32, tuple[tuple[str, ...], ...]]:
    """Dedup list-of-string values: row -> id into the sorted table of distinct tuples (-1 for empty/null)."""
    cleaned = column.list.eval(pl.element().str.replace_all(_SEP, " ", literal=True))
    keys = pl.DataFrame({"k": cleaned.list.join(_SEP), "n": cleaned.list.len().fill_null(0)}).select(
        pl.when(pl.col("n") > 0).then(pl.col("k")).alias("k")
    )["k"]
    table = keys.drop_nulls().unique().sort()
    ids = (keys.rank("dense").cast(pl.Int64) - 1).fill_null(-1).to_numpy().astype(np.int32)
    return ids, tuple(tuple(v.split(_SEP)) for v in table.to_list())


def columns_from_published(graph: PublishedGraph) -> tuple[IndexMeta, NodeColumns, EdgeColumns]:
    """Nodes sorted by id (so score ties break by product id) and edges mapped to rows."""
    nodes = graph.nodes.unique(subset="id", keep="first").sort("id")
    ids: list[str] = nodes["id"].to_list()
    category_id, categories = _intern_lists(nodes["category"])
    details = ProductDetails(
        description=nodes["description"].to_list(),
        brand=nodes["brand"].to_list(),
        attributes_json=nodes["attributes"].to_list(),
        enriched_json=nodes["enriched"].to_list(),
        keyphrases=nodes["keyphrases"].to_list(),
    )
    node_cols = NodeColumns(
        ids=ids,
        titles=nodes["title"].to_list(),
        category_id=category_id,
        categories=categories,
        price=nodes["price"].cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64),
        details=details,
    )

    rows = pl.DataFrame({"id": ids, "row": np.arange(len(ids), dtype=np.int32)})
    edges = graph.edges.select("source", "target", "kind", "score", "reasons").with_row_index("_i")
    joined = (
        edges.join(rows.rename({"id": "source", "row": "src"}), on="source", how="left")
        .join(rows.rename({"id": "target", "row": "dst"}), on="target", how="left")
        .with_columns(pl.col("kind").replace_strict(KIND_CODES, default=-1, return_dtype=pl.Int8).alias("k"))
        .sort("_i")
    )
    bad = joined.filter(pl.col("src").is_null() | pl.col("dst").is_null() | (pl.col("k") < 0))
    if bad.height:
        log.warning(
            "graph %s: %d edges name unknown products or kinds and are not served (e.g. %s)",
            graph.manifest.version_id,
            bad.height,
            bad.select("source", "target", "kind").head(3).rows(),
        )
    good = joined.filter(pl.col("src").is_not_null() & pl.col("dst").is_not_null() & (pl.col("k") >= 0))
    reason_id, reasons = _intern_lists(good["reasons"])
    edge_cols = EdgeColumns(
        src=good["src"].to_numpy().astype(np.int32),
        dst=good["dst"].to_numpy().astype(np.int32),
        kind=good["k"].to_numpy().astype(np.int8),
        score=good["score"].to_numpy().astype(np.float32),
        reason_id=reason_id,
        reasons=reasons,
    )
    meta = IndexMeta(
        version=graph.manifest.version_id,
        created_at=graph.manifest.created_at,
        manifest_product_count=graph.manifest.product_count,
        manifest_relation_counts={str(k): int(v) for k, v in graph.manifest.relation_counts.items()},
        dropped_edges=bad.height,
    )
    return meta, node_cols, edge_cols


def _csr(n_rows: int, src: I32, dst: I32, score: F32, reason_id: I32) -> Csr:
    """Sort by (src, score desc, dst), keep the best edge per (src, dst) pair, and cut into rows."""
    frame = pl.DataFrame({"src": src, "dst": dst, "score": score, "reason": reason_id})
    frame = frame.sort(["src", "score", "dst"], descending=[False, True, False])
    frame = frame.unique(subset=["src", "dst"], keep="first", maintain_order=True)
    src_sorted = frame["src"].to_numpy()
    counts = np.bincount(src_sorted, minlength=n_rows) if len(src_sorted) else np.zeros(n_rows, np.int64)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    csr = Csr(
        indptr=indptr,
        dst=frame["dst"].to_numpy().astype(np.int32, copy=False),
        score=frame["score"].to_numpy().astype(np.float32, copy=False),
        reason_id=frame["reason"].to_numpy().astype(np.int32, copy=False),
    )
    _readonly(csr.indptr, csr.dst, csr.score, csr.reason_id)
    return csr


def _category_complements(nodes: NodeColumns, comp: Csr) -> Csr:
    """Per category: targets its products complement, scored by the mean edge score over the category's
    products that have complements (a target linked from every such product at 0.9 scores 0.9; from one of
    ten, 0.09). `via` is the category product whose edge to the target scores highest."""
    n_cat = len(nodes.categories)
    n_rows = len(nodes.ids)
    src = np.repeat(np.arange(n_rows, dtype=np.int32), np.diff(comp.indptr))
    cat = nodes.category_id[src] if len(src) else np.zeros(0, np.int32)
    keep = cat >= 0
    frame = pl.DataFrame(
        {"cat": cat[keep], "src": src[keep], "dst": comp.dst[keep], "score": comp.score[keep],
         "reason": comp.reason_id[keep]}
    )
    # products with at least one complement edge, per category: the denominator of the mean
    has_edges = np.diff(comp.indptr) > 0
    cat_all = nodes.category_id
    sources_per_cat = np.bincount(cat_all[has_edges & (cat_all >= 0)], minlength=n_cat).astype(np.float64)
    agg = frame.group_by(["cat", "dst"]).agg(
        pl.col("score").sum().alias("total"),
        pl.col("src").get(pl.col("score").arg_max()).alias("via"),
        pl.col("reason").get(pl.col("score").arg_max()).alias("reason"),
    )
    denom = pl.Series("denom", sources_per_cat)
    agg = agg.with_columns(
        (pl.col("total") / pl.col("cat").map_batches(lambda c: denom.gather(c), return_dtype=pl.Float64))
        .cast(pl.Float32)
        .alias("score")
    )
    agg = agg.sort(["cat", "score", "dst"], descending=[False, True, False])
    cats = agg["cat"].to_numpy()
    counts = np.bincount(cats, minlength=n_cat) if len(cats) else np.zeros(n_cat, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_cat else np.zeros(0, np.int64)
    position = np.arange(len(cats)) - (starts[cats] if len(cats) else 0)
    top = position < CATEGORY_TOP
    kept_counts = np.bincount(cats[top], minlength=n_cat) if len(cats) else np.zeros(n_cat, np.int64)
    indptr = np.zeros(n_cat + 1, dtype=np.int64)
    np.cumsum(kept_counts, out=indptr[1:])
    csr = Csr(
        indptr=indptr,
        dst=agg["dst"].to_numpy()[top].astype(np.int32),
        score=agg["score"].to_numpy()[top].astype(np.float32),
        reason_id=agg["reason"].to_numpy()[top].astype(np.int32),
        via=agg["via"].to_numpy()[top].astype(np.int32),
    )
    assert csr.via is not None
    _readonly(csr.indptr, csr.dst, csr.score, csr.reason_id, csr.via)
    return csr


def build_arrays(meta: IndexMeta, nodes: NodeColumns, edges: EdgeColumns) -> IndexArrays:
    """Substitutes are symmetric: each stored direction is mirrored before the best edge per pair is kept."""
    n = len(nodes.ids)
    is_comp = edges.kind == KIND_CODES["complement"]
    is_sub = edges.kind == KIND_CODES["substitute"]
    comp = _csr(n, edges.src[is_comp], edges.dst[is_comp], edges.score[is_comp], edges.reason_id[is_comp])
    s_src, s_dst = edges.src[is_sub], edges.dst[is_sub]
    subs = _csr(
        n,
        np.concatenate([s_src, s_dst]),
        np.concatenate([s_dst, s_src]),
        np.tile(edges.score[is_sub], 2),
        np.tile(edges.reason_id[is_sub], 2),
    )
    _readonly(nodes.category_id, nodes.price)
    return IndexArrays(
        meta=meta,
        nodes=nodes,
        reasons=edges.reasons,
        complements=comp,
        substitutes=subs,
        category_complements=_category_complements(nodes, comp),
    )


def parse_json_object(text: str | None) -> dict[str, str]:
    """Attributes travel as JSON text (graph_schema.tables). A malformed value is logged and shown empty."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("malformed JSON attribute column: %.80r", text)
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
