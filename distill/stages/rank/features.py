"""One feature row per candidate pair, from the evidence that exists: text (embedding, TF-IDF), category
structure, brand, price, behaviour (pair and leaf-pair co-purchase, popularity), enrichment and the LLM.
A source that has no observation for a pair leaves NaN: LightGBM routes missing values natively.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from distill.stages.rank.context import F32, BehaviourStats, CatalogView
from distill.stages.rank.pool import BIT, ORIGINS

FEATURES: Final[tuple[str, ...]] = (
    "text_sim", "text_rank", "tfidf_sim", "tfidf_rank",
    "same_leaf", "shared_depth", "source_depth", "same_brand", "log_price_ratio",
    "co_count", "co_lift", "co_npmi", "nb_score", "nb_count",
    "leaf_count", "leaf_cond", "leaf_lift",
    "target_pop", "target_pop_rank", "target_leaf_share", "source_pop",
    "enriched_match", "keyphrase_overlap", "llm_score", "llm_retrieval",
    *(f"from_{name}" for name in ORIGINS),
)
COUNT_FEATURES: Final = frozenset({"co_count", "nb_count", "leaf_count", "target_pop", "source_pop"})
"""Counts that grow with the size of the log: read on the fitted scale (see BehaviourStats.scale)."""


def _rows_dot(a: F32, b: F32, s: np.ndarray, t: np.ndarray, block: int = 1 << 18) -> F32:
    out = np.empty(len(s), dtype=np.float32)
    for start in range(0, len(s), block):
        stop = start + block
        out[start:stop] = np.einsum("ij,ij->i", a[s[start:stop]], b[t[start:stop]])
    return out


def _sparse_rows_dot(matrix: object, s: np.ndarray, t: np.ndarray, block: int = 1 << 17) -> F32:
    out = np.empty(len(s), dtype=np.float32)
    for start in range(0, len(s), block):
        stop = start + block
        product = matrix[s[start:stop]].multiply(matrix[t[start:stop]])  # type: ignore[index]
        out[start:stop] = np.asarray(product.sum(axis=1)).ravel()
    return out


def _rank_within(pool: pl.DataFrame, column: str) -> pl.Series:
    """1 = best within the source's candidates (descending; NaN last)."""
    return pool.select(pl.col(column).fill_nan(None).rank("ordinal", descending=True).over("s"))[column].cast(
        pl.Float32)


def _set_overlap(sets: tuple[frozenset[object], ...], s: np.ndarray, t: np.ndarray, *, jaccard: bool) -> F32:
    out = np.full(len(s), np.nan, dtype=np.float32)
    if not any(sets):
        return out
    for i, (a, b) in enumerate(zip(s.tolist(), t.tolist(), strict=True)):
        x, y = sets[a], sets[b]
        if x and y:
            shared = len(x & y)
            out[i] = shared / len(x | y) if jaccard else shared
    return out


def pair_features(
    pool: pl.DataFrame, smoothed: pl.DataFrame, catalog: CatalogView, behaviour: BehaviourStats, *,
    scale: float = 1.0, llm: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`pool` (s, t, origins) with one column per name in FEATURES. `llm`: (s, t, llm_score, llm_retrieval)
    for the pairs the model judged or proposed. `scale` multiplies the COUNT_FEATURES."""
    s = pool["s"].to_numpy()
    t = pool["t"].to_numpy()
    cols: dict[str, np.ndarray] = {}
    if catalog.embeddings is not None:
        cols["text_sim"] = _rows_dot(catalog.embeddings, catalog.embeddings, s, t)
    else:
        cols["text_sim"] = np.full(len(s), np.nan, dtype=np.float32)
    cols["tfidf_sim"] = _sparse_rows_dot(catalog.tfidf, s, t)
    cols["same_leaf"] = ((catalog.leaf[s] == catalog.leaf[t]) & (catalog.leaf[s] >= 0)).astype(np.float32)
    shared = (catalog.path_codes[s] == catalog.path_codes[t]) & (catalog.path_codes[s] >= 0)
    cols["shared_depth"] = np.cumprod(shared, axis=1).sum(axis=1).astype(np.float32)
    cols["source_depth"] = catalog.depth[s].astype(np.float32)
    brand_known = (catalog.brand[s] >= 0) & (catalog.brand[t] >= 0)
    cols["same_brand"] = np.where(brand_known, (catalog.brand[s] == catalog.brand[t]).astype(np.float32), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["log_price_ratio"] = np.log(catalog.price[t] / catalog.price[s]).astype(np.float32)
    cols["target_pop"] = behaviour.popularity[t] * np.float32(scale)
    cols["source_pop"] = behaviour.popularity[s] * np.float32(scale)
    pop = behaviour.popularity
    order = np.argsort(-pop, kind="stable")
    pop_rank = np.empty(len(pop), dtype=np.float32)
    pop_rank[order] = np.arange(1, len(pop) + 1, dtype=np.float32)
    cols["target_pop_rank"] = np.log(pop_rank[t]) if len(pop) else np.zeros(len(t), dtype=np.float32)
    cols["target_leaf_share"] = behaviour.leaf_popularity[t]
    cols["enriched_match"] = _set_overlap(catalog.enriched, s, t, jaccard=False)  # type: ignore[arg-type]
    cols["keyphrase_overlap"] = _set_overlap(catalog.keyphrases, s, t, jaccard=True)  # type: ignore[arg-type]
    origins = pool["origins"].to_numpy()
    for name in ORIGINS:
        cols[f"from_{name}"] = ((origins & BIT[name]) > 0).astype(np.float32)

    frame = pool.with_columns(**{name: pl.Series(name, values) for name, values in cols.items()})
    frame = frame.with_columns(leaf_s=pl.Series(catalog.leaf[s]), leaf_t=pl.Series(catalog.leaf[t]))
    observed = behaviour.baskets > 0
    frame = (
        frame.join(behaviour.pairs, on=["s", "t"], how="left")
        .join(smoothed, on=["s", "t"], how="left")
        .join(behaviour.leaf_pairs, on=["leaf_s", "leaf_t"], how="left")
    )
    if llm is not None and llm.height:
        frame = frame.join(llm.select("s", "t", "llm_score", "llm_retrieval"), on=["s", "t"], how="left")
    else:
        frame = frame.with_columns(llm_score=pl.lit(None, pl.Float32), llm_retrieval=pl.lit(None, pl.Float32))
    # With a log, "never bought together" is an observation (0); without one it is unknown (NaN).
    def seen(name: str) -> pl.Expr:
        return pl.col(name).fill_null(0.0) if observed else pl.col(name)

    frame = frame.with_columns(
        seen("co_count") * scale, seen("nb_score"), seen("nb_count") * scale, seen("leaf_count") * scale,
        seen("leaf_cond"),
    )
    frame = frame.with_columns(text_rank=_rank_within(frame, "text_sim"), tfidf_rank=_rank_within(frame, "tfidf_sim"))
    return frame.select("s", "t", *[pl.col(name).cast(pl.Float32) for name in FEATURES])


def matrix(frame: pl.DataFrame) -> F32:
    """The feature matrix (rows = pairs, columns = FEATURES), NaN for missing (polars turns a null float into
    NaN), in one copy of the frame's columns."""
    return frame.select(FEATURES).to_numpy().astype(np.float32, copy=False)


