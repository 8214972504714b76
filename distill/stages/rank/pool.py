"""Candidate complements with recall: every generator a baseline uses is also a candidate source (text
neighbours in any category, co-purchase, content-smoothed co-purchase, leaf-category-pair behaviour,
popularity overall and within a category) plus the LLM's grounded proposals. Output is one frame of
(s, t, origins) over catalog rows; the ranker decides. Pure numpy/polars.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import polars as pl

from distill.stages.rank.context import I32, BehaviourStats, CatalogView

ORIGINS: Final[tuple[str, ...]] = ("text", "lexical", "copurchase", "neighbour", "category", "popular",
                                   "leaf_popular", "llm")
"""Bit i of the `origins` column = ORIGINS[i] proposed the pair."""
BIT: Final[Mapping[str, int]] = {name: 1 << i for i, name in enumerate(ORIGINS)}

PER_SOURCE: Final = 40
"""Candidates each generator may add per source product: four times the served list (10), so the ranker
chooses among several times more than it keeps; the pool stays O(products x generators x 40)."""
SMOOTHING_NEIGHBOURS: Final = 20
"""Text neighbours whose co-purchases a product inherits (content-smoothed co-purchase, for sparse logs)."""
CATEGORY_FANOUT: Final = 5
"""Leaf categories most bought with the source's leaf whose popular products are candidates."""

POOL_SCHEMA: Final = {"s": pl.Int32, "t": pl.Int32, "origins": pl.UInt16}


def _frame(s: I32, t: I32, origin: str, **extra: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"s": s.astype(np.int32), "t": t.astype(np.int32),
                         "origins": np.full(len(s), BIT[origin], dtype=np.uint16), **extra})


def _top_rows(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k largest entries of each row, best first."""
    k = min(k, matrix.shape[1])
    if k <= 0:
        empty = np.zeros((matrix.shape[0], 0))
        return empty.astype(np.int64), empty
    part = np.argpartition(-matrix, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(matrix, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


def text_neighbours(catalog: CatalogView, sources: I32, k: int, *, block: int = 1024) -> pl.DataFrame:
    """(s, t, sim): the k nearest products by embedding cosine in any category (itself excluded)."""
    if catalog.embeddings is None or not len(sources):
        return pl.DataFrame(schema={"s": pl.Int32, "t": pl.Int32, "sim": pl.Float32})
    vectors = catalog.embeddings
    parts = []
    for start in range(0, len(sources), block):
        rows = sources[start:start + block]
        sims = vectors[rows] @ vectors.T
        sims[np.arange(len(rows)), rows] = -np.inf
        cols, values = _top_rows(sims, k)
        parts.append(pl.DataFrame({"s": np.repeat(rows, cols.shape[1]).astype(np.int32),
                                   "t": cols.ravel().astype(np.int32), "sim": values.ravel().astype(np.float32)}))
    return pl.concat(parts)


def lexical_neighbours(catalog: CatalogView, sources: I32, k: int, *, block: int = 1024) -> pl.DataFrame:
    """(s, t): the k nearest products by TF-IDF cosine (shared rare words: model numbers, brands, flavours)."""
    parts = []
    matrix_t = catalog.tfidf.T.tocsc()
    for start in range(0, len(sources), block):
        rows = sources[start:start + block]
        sims = (catalog.tfidf[rows] @ matrix_t).toarray()
        sims[np.arange(len(rows)), rows] = -np.inf
        cols, values = _top_rows(sims, k)
        keep = values.ravel() > 0
        parts.append(pl.DataFrame({"s": np.repeat(rows, cols.shape[1]).astype(np.int32)[keep],
                                   "t": cols.ravel().astype(np.int32)[keep]}))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"s": pl.Int32, "t": pl.Int32})


def build_pool(
    catalog: CatalogView, behaviour: BehaviourStats, sources: I32, *, llm_pairs: pl.DataFrame | None = None,
    per_source: int = PER_SOURCE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The candidate pool of `sources` and the content-smoothed co-purchase score of its pairs.
    Returns (pool: s, t, origins; smoothed: s, t, nb_score, nb_count)."""
    sources = np.unique(sources.astype(np.int32))
    source_frame = pl.DataFrame({"s": sources})
    parts: list[pl.DataFrame] = []

    text = text_neighbours(catalog, sources, max(per_source, SMOOTHING_NEIGHBOURS))
    if text.height:
        parts.append(text.group_by("s", maintain_order=True).head(per_source).select("s", "t", origins=pl.lit(BIT["text"], pl.UInt16)))
    lexical = lexical_neighbours(catalog, sources, per_source)
    if lexical.height:
        parts.append(lexical.with_columns(origins=pl.lit(BIT["lexical"], pl.UInt16)))

    pairs = behaviour.pairs.join(source_frame, on="s")
    if pairs.height:
        top = (pairs.sort(["s", "co_count", "co_npmi", "t"], descending=[False, True, True, False])
               .group_by("s", maintain_order=True).head(per_source))
        parts.append(top.select("s", "t", origins=pl.lit(BIT["copurchase"], pl.UInt16)))

    smoothed = pl.DataFrame(schema={"s": pl.Int32, "t": pl.Int32, "nb_score": pl.Float32, "nb_count": pl.Float32})
    if text.height and behaviour.pairs.height:
        near = text.group_by("s", maintain_order=True).head(SMOOTHING_NEIGHBOURS).filter(pl.col("sim") > 0)
        smoothed = (
            near.rename({"t": "n"})
            .join(behaviour.pairs.select(pl.col("s").alias("n"), "t"), on="n")
            .filter(pl.col("t") != pl.col("s"))
            .sort("s", "t", "n")  # a join's row order is not fixed: sum in one order, so reruns agree bit for bit
            .group_by("s", "t", maintain_order=True).agg(nb_score=(pl.col("sim") ** 2).sum().cast(pl.Float32),
                                     nb_count=pl.len().cast(pl.Float32))
        )
        parts.append(smoothed.sort(["s", "nb_score", "t"], descending=[False, True, False])
                     .group_by("s", maintain_order=True).head(per_source)
                     .select("s", "t", origins=pl.lit(BIT["neighbour"], pl.UInt16)))

    bought = np.nonzero(behaviour.popularity > 0)[0]
    if len(bought):
        top_global = bought[np.argsort(-behaviour.popularity[bought], kind="stable")[:per_source]]
        parts.append(source_frame.join(pl.DataFrame({"t": top_global.astype(np.int32)}), how="cross")
                     .with_columns(origins=pl.lit(BIT["popular"], pl.UInt16)))
        ranked = (pl.DataFrame({"t": bought.astype(np.int32), "leaf": catalog.leaf[bought],
                                "pop": behaviour.popularity[bought]})
                  .filter(pl.col("leaf") >= 0).sort(["leaf", "pop", "t"], descending=[False, True, False]))
        leaf_of = pl.DataFrame({"s": sources, "leaf": catalog.leaf[sources]})
        per_leaf = ranked.group_by("leaf", maintain_order=True).head(per_source)
        parts.append(leaf_of.join(per_leaf, on="leaf").select("s", "t", origins=pl.lit(BIT["leaf_popular"], pl.UInt16)))
        if behaviour.leaf_pairs.height:
            fanout = (behaviour.leaf_pairs.filter(pl.col("leaf_s") != pl.col("leaf_t"))
                      .sort(["leaf_s", "leaf_count", "leaf_t"], descending=[False, True, False])
                      .group_by("leaf_s", maintain_order=True).head(CATEGORY_FANOUT))
            per_category = ranked.group_by("leaf", maintain_order=True).head(max(per_source // CATEGORY_FANOUT, 1))
            parts.append(
                leaf_of.join(fanout, left_on="leaf", right_on="leaf_s")
                .join(per_category.rename({"leaf": "leaf_t"}), on="leaf_t")
                .select("s", "t", origins=pl.lit(BIT["category"], pl.UInt16))
            )
    if llm_pairs is not None and llm_pairs.height:
        parts.append(llm_pairs.join(source_frame, on="s").select("s", "t", origins=pl.lit(BIT["llm"], pl.UInt16)))

    if not parts:
        return pl.DataFrame(schema=POOL_SCHEMA), smoothed
    pool = (
        pl.concat([p.select(pl.col("s").cast(pl.Int32), pl.col("t").cast(pl.Int32), pl.col("origins").cast(pl.UInt16))
                   for p in parts])
        .filter(pl.col("s") != pl.col("t"))
        .unique()
        .group_by("s", "t").agg(pl.col("origins").sum().cast(pl.UInt16))
        .sort("s", "t")
    )
    return pool, smoothed
