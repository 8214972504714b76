"""What the ranking stage knows about the catalog and the behaviour, as arrays indexed by catalog row:
`CatalogView` (categories, brands, prices, text vectors) and `BehaviourStats` (popularity, pair and
leaf-category-pair co-purchase of one set of baskets). Built once per fit or scoring pass; pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import sparse  # type: ignore[import-untyped]

from graph_schema.models import Product

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

MAX_CATEGORY_DEPTH: Final = 8
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _codes(values: Sequence[object | None]) -> I32:
    """Integer code per value, -1 for None/empty: equal codes = equal values."""
    table: dict[object, int] = {}
    out = np.full(len(values), -1, dtype=np.int32)
    for i, value in enumerate(values):
        if value is None or value == "" or value == ():
            continue
        out[i] = table.setdefault(value, len(table))
    return out


def _tfidf(texts: Sequence[str]) -> sparse.csr_matrix:
    """L2-normalized TF-IDF rows over lower-cased word tokens (smooth idf): the lexical similarity signal."""
    vocab: dict[str, int] = {}
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for text in texts:
        counts: dict[int, int] = {}
        for word in _WORD.findall(text.casefold()):
            j = vocab.setdefault(word, len(vocab))
            counts[j] = counts.get(j, 0) + 1
        indices.extend(counts)
        data.extend(float(c) for c in counts.values())
        indptr.append(len(indices))
    matrix = sparse.csr_matrix((np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32),
                                np.array(indptr, dtype=np.int64)), shape=(len(texts), max(len(vocab), 1)))
    df = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)
    idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
    matrix = matrix.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix, dtype=np.float32)


@dataclass(frozen=True)
class CatalogView:
    ids: tuple[str, ...]
    row: dict[str, int]
    leaf: I32
    path_codes: I32
    """(n, MAX_CATEGORY_DEPTH): code of the category prefix of each depth (-1 beyond the path)."""
    depth: I32
    brand: I32
    price: F32
    embeddings: F32 | None
    tfidf: sparse.csr_matrix
    enriched: tuple[frozenset[tuple[str, str]], ...]
    keyphrases: tuple[frozenset[str], ...]
    leaf_names: dict[int, str]

    @classmethod
    def build(cls, products: Sequence[Product], embeddings: F32 | None) -> CatalogView:
        ids = tuple(p.id for p in products)
        paths = [p.category[:MAX_CATEGORY_DEPTH] for p in products]
        path_codes = np.stack(
            [_codes([path[: d + 1] if len(path) > d else None for path in paths]) for d in range(MAX_CATEGORY_DEPTH)],
            axis=1,
        )
        texts = [" ".join([p.title, p.brand or "", *p.category, *p.keyphrases]) for p in products]
        leaf = _codes([p.category for p in products])
        return cls(
            ids=ids, row={pid: i for i, pid in enumerate(ids)},
            leaf=leaf,
            path_codes=path_codes, depth=np.array([len(p) for p in paths], dtype=np.int32),
            brand=_codes([(p.brand or "").casefold().strip() or None for p in products]),
            price=np.array([p.price if p.price is not None and p.price > 0 else np.nan for p in products],
                           dtype=np.float32),
            embeddings=embeddings, tfidf=_tfidf(texts),
            enriched=tuple(frozenset((k.casefold(), v.casefold()) for k, v in p.enriched.items()) for p in products),
            keyphrases=tuple(frozenset(k.casefold() for k in p.keyphrases) for p in products),
            leaf_names={int(code): p.category[-1] for code, p in zip(leaf, products, strict=True) if code >= 0},
        )

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, ids: pl.Series) -> pl.Series:
        """Catalog rows of ids (null for unknown ids)."""
        table = pl.DataFrame({"id": list(self.ids), "row": np.arange(len(self.ids), dtype=np.int32)})
        return pl.DataFrame({"id": ids}).join(table, on="id", how="left", maintain_order="left")["row"]


@dataclass(frozen=True)
class BehaviourStats:
    """Co-purchase of one set of baskets, over catalog rows. `scale` multiplies every count feature so that
    statistics of a larger log read on the scale the model was fitted on (see rank.stage)."""

    baskets: int
    popularity: F32
    pairs: pl.DataFrame
    """(s, t, co_count, co_lift, co_npmi), both directions, support >= 1."""
    leaf_pairs: pl.DataFrame
    """(leaf_s, leaf_t, leaf_count, leaf_cond, leaf_lift), same leaf included: baskets holding both leaves,
    P(a basket with leaf_s holds leaf_t) and lift."""
    leaf_popularity: F32
    """Per product: its popularity divided by its leaf's total popularity (NaN without a leaf)."""

    @classmethod
    def empty(cls, catalog: CatalogView) -> BehaviourStats:
        return cls.build(pl.DataFrame(schema={"basket_id": pl.String, "product_id": pl.String}), catalog,
                         max_basket_size=2)

    @classmethod
    def build(cls, baskets: pl.DataFrame, catalog: CatalogView, *, max_basket_size: int) -> BehaviourStats:
        from distill.evidence.behaviour import CoPurchase

        n = len(catalog)
        rows = (baskets.select(pl.col("basket_id").cast(pl.String), pl.col("product_id").cast(pl.String))
                .with_columns(row=catalog.index(baskets["product_id"].cast(pl.String)))
                .drop_nulls("row").unique(["basket_id", "row"]))
        popularity = np.zeros(n, dtype=np.float32)
        if rows.height:
            counts = rows.group_by("row").len("n")
            popularity[counts["row"].to_numpy()] = counts["n"].to_numpy()
        pair_schema = {"s": pl.Int32, "t": pl.Int32, "co_count": pl.Float32, "co_lift": pl.Float32,
                       "co_npmi": pl.Float32}
        pairs = pl.DataFrame(schema=pair_schema)
        baskets_used = int(rows["basket_id"].n_unique()) if rows.height else 0
        if rows.height:
            copurchase = CoPurchase.from_baskets(rows.select("basket_id", "product_id"), min_support=1,
                                                 max_basket_size=max(max_basket_size, 2))
            baskets_used = copurchase.baskets
            if copurchase.pairs.height:
                pairs = copurchase.pairs.select(
                    s=catalog.index(copurchase.pairs["a"]), t=catalog.index(copurchase.pairs["b"]),
                    co_count=pl.col("count").cast(pl.Float32), co_lift=pl.col("lift").cast(pl.Float32),
                    co_npmi=pl.col("npmi").cast(pl.Float32),
                ).drop_nulls(["s", "t"])
        leaf_pairs = _leaf_pairs(rows, catalog)
        leaf_total = np.zeros(int(catalog.leaf.max(initial=-1)) + 1, dtype=np.float64)
        has_leaf = catalog.leaf >= 0
        np.add.at(leaf_total, catalog.leaf[has_leaf], popularity[has_leaf])
        share = np.full(n, np.nan, dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            share[has_leaf] = popularity[has_leaf] / np.maximum(leaf_total[catalog.leaf[has_leaf]], 1.0)
        return cls(baskets=max(baskets_used, 0), popularity=popularity, pairs=pairs, leaf_pairs=leaf_pairs,
                   leaf_popularity=share)


def _leaf_pairs(rows: pl.DataFrame, catalog: CatalogView) -> pl.DataFrame:
    schema = {"leaf_s": pl.Int32, "leaf_t": pl.Int32, "leaf_count": pl.Float32, "leaf_cond": pl.Float32,
              "leaf_lift": pl.Float32}
    if not rows.height:
        return pl.DataFrame(schema=schema)
    leaf = pl.Series("leaf", catalog.leaf)
    per_basket = (rows.with_columns(leaf=leaf.gather(rows["row"])).filter(pl.col("leaf") >= 0)
                  .group_by("basket_id", "leaf").len("items"))
    with_leaf = per_basket.select("basket_id", "leaf")
    n = max(int(with_leaf["basket_id"].n_unique()), 1)
    singles = with_leaf.group_by("leaf").len("n_leaf")
    # Same leaf: baskets holding two different products of it (one product alone says nothing).
    repeat = (per_basket.filter(pl.col("items") >= 2).group_by("leaf").len("leaf_count")
              .select(pl.col("leaf").alias("leaf_s"), pl.col("leaf").alias("leaf_t"), "leaf_count"))
    cross = (with_leaf.join(with_leaf, on="basket_id", suffix="_t").filter(pl.col("leaf") != pl.col("leaf_t"))
             .group_by(pl.col("leaf").alias("leaf_s"), pl.col("leaf_t")).len("leaf_count"))
    both = pl.concat([cross, repeat.cast(cross.schema)])
    return (
        both.join(singles.rename({"leaf": "leaf_s", "n_leaf": "n_s"}), on="leaf_s")
        .join(singles.rename({"leaf": "leaf_t", "n_leaf": "n_t"}), on="leaf_t")
        .select(
            pl.col("leaf_s").cast(pl.Int32), pl.col("leaf_t").cast(pl.Int32),
            pl.col("leaf_count").cast(pl.Float32),
            leaf_cond=(pl.col("leaf_count") / pl.col("n_s")).cast(pl.Float32),
            leaf_lift=(pl.col("leaf_count").cast(pl.Float64) * n / (pl.col("n_s") * pl.col("n_t"))).cast(pl.Float32),
        )
    )
