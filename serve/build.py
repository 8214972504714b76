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

from graph_schema.store import PublishedGraph

log = logging.getLogger(__name__)

KIND_CODES: dict[str, int] = {"complement": 0, "substitute": 1}
CATEGORY_TOP = 50
"""Complement candidates kept per category for the `via_category` fallback."""
SCORE_LEVELS = 1 << 16
"""Distinct scores the packed index stores exactly (a uint16 code each). A graph with more is first
rounded to the grid k/65535 (error <= 7.7e-6, below what a ranking can mean), before anything is ranked,
so order, ties and filters all follow the scores that are served."""
_GRID = np.float64(SCORE_LEVELS - 1)
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
    score_table: F32 | None = None
    """Packed indexes: `score` holds uint16 codes into this sorted table of the distinct scores."""

    def scores(self, lo: int, hi: int) -> F32:
        codes = self.score[lo:hi]
        return codes if self.score_table is None else self.score_table[codes]

    def nbytes(self) -> int:
        arrays: list[np.ndarray] = [self.indptr, self.dst, self.score, self.reason_id]
        if self.via is not None:
            arrays.append(self.via)
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


def _score_desc_bits(score: F32) -> npt.NDArray[np.uint64]:
    """Non-negative float32 bit patterns sort like the floats; inverted they sort descending."""
    clean = np.where(score > 0, score, np.float32(0)).astype(np.float32)  # also turns -0.0 and NaN into 0.0
    return (np.uint64(0xFFFFFFFF) - clean.view(np.uint32).astype(np.uint64)).astype(np.uint64)


def _group_starts(sorted_keys: np.ndarray) -> I64:
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))


def _best_per_group(order: I64, keys_sorted: np.ndarray, score: F32) -> tuple[I64, I64]:
    """Within runs of equal keys (in `order`), the first position holding the run's max score.
    Returns (chosen original indices, run start positions)."""
    starts = _group_starts(keys_sorted)
    if len(starts) == len(order):  # no duplicates: the common case costs nothing more
        return order, starts
    run_scores = score[order]
    run_id = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(order))))
    is_max = run_scores == np.maximum.reduceat(run_scores, starts)[run_id]
    at = np.flatnonzero(is_max)
    first = at[np.concatenate([[True], run_id[at][1:] != run_id[at][:-1]])]
    return order[first], starts


def _csr(n_rows: int, src: I32, dst: I32, score: F32, reason_id: I32) -> Csr:
    """Keep the best edge per (src, dst), then sort by (src, score desc, dst) and cut into rows.
    Two argsorts: by pair (which also orders ties by dst), then a stable one by (src, score desc)."""
    pair = (src.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
    by_pair = np.argsort(pair)
    keep, _ = _best_per_group(by_pair, pair[by_pair], score)
    del pair, by_pair
    src, dst, score, reason_id = src[keep], dst[keep], score[keep], reason_id[keep]
    key = (src.astype(np.uint64) << np.uint64(32)) | _score_desc_bits(score)
    order = np.argsort(key, kind="stable")
    del key
    counts = np.bincount(src, minlength=n_rows) if len(src) else np.zeros(n_rows, np.int64)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    csr = Csr(
        indptr=indptr,
        dst=dst[order].astype(np.int32, copy=False),
        score=score[order].astype(np.float32, copy=False),
        reason_id=reason_id[order].astype(np.int32, copy=False),
    )
    _readonly(csr.indptr, csr.dst, csr.score, csr.reason_id)
    return csr


def quantize(score: F32) -> F32:
    """Scores in [0, 1] rounded to the grid k/65535, as float32."""
    return (np.round(np.clip(score.astype(np.float64), 0.0, 1.0) * _GRID) / _GRID).astype(np.float32)


def _fit_levels(score: F32, levels: int) -> F32:
    return quantize(score) if len(np.unique(score)) > levels else score


def _category_complements(nodes: NodeColumns, comp: Csr, levels: int = SCORE_LEVELS) -> Csr:
    """Per category: targets its products complement, scored by the mean edge score over the category's
    products that have complements (a target linked from every such product at 0.9 scores 0.9; from one of
    ten, 0.09). `via` is the category product whose edge to the target scores highest. Top CATEGORY_TOP."""
    n_cat = len(nodes.categories)
    degree = np.diff(comp.indptr)
    src = np.repeat(np.arange(len(nodes.ids), dtype=np.int32), degree)
    cat = nodes.category_id[src]
    keep = np.flatnonzero(cat >= 0)
    src, cat, dst = src[keep], cat[keep], comp.dst[keep]
    score, reason = comp.score[keep], comp.reason_id[keep]
    sources_per_cat = np.bincount(nodes.category_id[(degree > 0) & (nodes.category_id >= 0)], minlength=n_cat)

    pair = (cat.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
    by_pair = np.argsort(pair)
    best, starts = _best_per_group(by_pair, pair[by_pair], score)
    totals = np.add.reduceat(score[by_pair].astype(np.float64), starts) if len(starts) else np.zeros(0)
    del pair, by_pair
    g_cat, g_dst, g_src, g_reason = cat[best], dst[best], src[best], reason[best]
    g_score = (totals / np.maximum(sources_per_cat[g_cat], 1)).astype(np.float32)
    # together with the edge scores, at most `levels` distinct values (means of grid values leave the grid)
    if len(np.union1d(np.unique(comp.score), np.unique(g_score))) > levels:
        g_score = quantize(g_score)

    key = (g_cat.astype(np.uint64) << np.uint64(32)) | _score_desc_bits(g_score)
    order = np.argsort(key, kind="stable")  # groups arrive in dst order, so ties stay ordered by dst
    g_cat = g_cat[order]
    counts = np.bincount(g_cat, minlength=n_cat) if len(g_cat) else np.zeros(n_cat, np.int64)
    run_start = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_cat else np.zeros(0, np.int64)
    top = order[(np.arange(len(order)) - run_start[g_cat]) < CATEGORY_TOP] if len(order) else order
    kept = np.bincount(cat[best][top], minlength=n_cat) if len(top) else np.zeros(n_cat, np.int64)
    indptr = np.zeros(n_cat + 1, dtype=np.int64)
    np.cumsum(kept, out=indptr[1:])
    csr = Csr(
        indptr=indptr,
        dst=g_dst[top].astype(np.int32),
        score=g_score[top],
        reason_id=g_reason[top].astype(np.int32),
        via=g_src[top].astype(np.int32),
    )
    assert csr.via is not None
    _readonly(csr.indptr, csr.dst, csr.score, csr.reason_id, csr.via)
    return csr


def build_arrays(
    meta: IndexMeta, nodes: NodeColumns, edges: EdgeColumns, *, score_levels: int = SCORE_LEVELS
) -> IndexArrays:
    """Substitutes are symmetric: each stored direction is mirrored before the best edge per pair is kept.
    More than `score_levels` distinct scores are rounded to the uint16 grid first (see SCORE_LEVELS)."""
    n = len(nodes.ids)
    if not 1 <= score_levels <= SCORE_LEVELS:
        raise ValueError(f"score_levels must be in 1..{SCORE_LEVELS}, got {score_levels}")
    edges = EdgeColumns(edges.src, edges.dst, edges.kind, _fit_levels(edges.score, score_levels), edges.reason_id,
                        edges.reasons)
    proper = edges.src != edges.dst  # the contract forbids self-loops; arrays from elsewhere might not
    is_comp = (edges.kind == KIND_CODES["complement"]) & proper
    is_sub = (edges.kind == KIND_CODES["substitute"]) & proper
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
        category_complements=_category_complements(nodes, comp, score_levels),
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
