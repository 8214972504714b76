"""Behavioural evidence from purchase baskets: product co-purchase counts with lift / PMI / NPMI, leaf-category
co-purchase and per-product popularity (the baselines' signal). Pure polars over (basket_id, product_id) rows;
it reads no files and knows nothing about the LLM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import polars as pl

from graph_schema.models import Product

PairOrder = Literal["npmi", "lift", "count", "pmi"]

DEFAULT_MIN_SUPPORT: Final = 2
DEFAULT_MAX_BASKET_SIZE: Final = 50
"""Baskets with more distinct items than this are left out of pair statistics. A 300-item order (a stock-up,
a reseller, an office supply run) pairs every item with every other: it adds n^2/2 pairs of almost no
meaning, dominates the counts and costs quadratic time. Real 'bought together for one use' baskets are small."""

PAIR_SCHEMA: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "a": pl.String, "b": pl.String, "count": pl.UInt32, "lift": pl.Float64, "pmi": pl.Float64, "npmi": pl.Float64,
}


@dataclass(frozen=True)
class PairStats:
    """Co-purchase of a with b over the baskets used. count = baskets holding both; lift = P(a,b)/(P(a)P(b));
    pmi = ln(lift); npmi = pmi / -ln P(a,b), in [-1, 1] (1 = never apart)."""

    a: str
    b: str
    count: int
    lift: float
    pmi: float
    npmi: float


def _validate(baskets: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """(basket_id, product_id) as strings, one row per distinct pair; rows with a null id are dropped and counted."""
    missing = {"basket_id", "product_id"} - set(baskets.columns)
    if missing:
        raise ValueError(f"basket rows need columns basket_id and product_id; missing {sorted(missing)}")
    rows = baskets.select(pl.col("basket_id").cast(pl.String), pl.col("product_id").cast(pl.String))
    clean = rows.drop_nulls().filter((pl.col("basket_id").str.len_chars() > 0) & (pl.col("product_id").str.len_chars() > 0))
    return clean.unique(), rows.height - clean.height


def _with_association(pairs: pl.DataFrame, singles: pl.DataFrame, n: int) -> pl.DataFrame:
    """Add lift, pmi, npmi to (a, b, count) given `singles` (item, n_item) basket counts over n baskets."""
    p_ab = pl.col("count").cast(pl.Float64) / n
    return (
        pairs.join(singles.rename({"item": "a", "n_item": "n_a"}), on="a")
        .join(singles.rename({"item": "b", "n_item": "n_b"}), on="b")
        .with_columns(lift=(pl.col("count").cast(pl.Float64) * n) / (pl.col("n_a").cast(pl.Float64) * pl.col("n_b")))
        .with_columns(pmi=pl.col("lift").log())
        # A pair present in every basket has -ln P(a,b) = 0: NPMI's limit there is 1 (perfect co-occurrence).
        .with_columns(npmi=pl.when(p_ab < 1.0).then(pl.col("pmi") / -p_ab.log()).otherwise(1.0))
        .select("a", "b", pl.col("count").cast(pl.UInt32), "lift", "pmi", "npmi")
    )


def _both_directions(pairs: pl.DataFrame) -> pl.DataFrame:
    swapped = pairs.select(pl.col("b").alias("a"), pl.col("a").alias("b"), "count", "lift", "pmi", "npmi")
    return pl.concat([pairs, swapped]).sort(["a", "b"])


def _pairs_within_baskets(rows: pl.DataFrame, key: str, min_support: int) -> pl.DataFrame:
    """(a, b, count) for a < b over `key` values that share a basket, count >= min_support."""
    return (
        rows.join(rows, on="basket_id", suffix="_b")
        .filter(pl.col(key) < pl.col(f"{key}_b"))
        .group_by(pl.col(key).alias("a"), pl.col(f"{key}_b").alias("b"))
        .len("count")
        .filter(pl.col("count") >= min_support)
    )


@dataclass(frozen=True)
class CoPurchase:
    """Pair statistics of one set of baskets. `pairs` holds both directions (a->b and b->a) of every pair with
    count >= min_support, sorted by a, so lookups by source read one contiguous slice."""

    pairs: pl.DataFrame
    item_baskets: pl.DataFrame
    """(product_id, n): baskets (of those used for pairs) holding each product."""
    popularity_counts: pl.DataFrame
    """(product_id, n): baskets holding each product over ALL baskets, large ones included."""
    baskets: int
    """Baskets used for pair statistics (non-empty, at most max_basket_size items)."""
    skipped_large_baskets: int
    dropped_rows: int
    min_support: int
    max_basket_size: int
    _rows: pl.DataFrame = field(repr=False)
    _offsets: Mapping[str, tuple[int, int]] = field(repr=False)

    @classmethod
    def from_baskets(
        cls,
        baskets: pl.DataFrame,
        *,
        min_support: int = DEFAULT_MIN_SUPPORT,
        max_basket_size: int = DEFAULT_MAX_BASKET_SIZE,
    ) -> CoPurchase:
        """From rows of (basket_id, product_id); other columns are ignored, repeated rows count once."""
        if min_support < 1:
            raise ValueError(f"min_support must be >= 1, got {min_support}")
        if max_basket_size < 2:
            raise ValueError(f"max_basket_size must be >= 2, got {max_basket_size}")
        all_rows, dropped = _validate(baskets)
        popularity = all_rows.group_by("product_id").len("n").sort(["n", "product_id"], descending=[True, False])
        sizes = all_rows.group_by("basket_id").len("size")
        kept_baskets = sizes.filter(pl.col("size") <= max_basket_size)
        rows = all_rows.join(kept_baskets.select("basket_id"), on="basket_id")
        n = kept_baskets.height
        singles = rows.group_by("product_id").len("n_item").rename({"product_id": "item"})
        counted = _pairs_within_baskets(rows, "product_id", min_support)
        pairs = (
            _both_directions(_with_association(counted, singles, n)) if counted.height else pl.DataFrame(schema=PAIR_SCHEMA)
        )
        offsets = _offsets_by_source(pairs)
        return cls(
            pairs=pairs,
            item_baskets=singles.rename({"item": "product_id", "n_item": "n"}),
            popularity_counts=popularity,
            baskets=n,
            skipped_large_baskets=sizes.height - n,
            dropped_rows=dropped,
            min_support=min_support,
            max_basket_size=max_basket_size,
            _rows=rows,
            _offsets=offsets,
        )

    # ------------------------------------------------------------------------------------------- lookups
    def top_for(self, product_id: str, k: int, *, by: PairOrder = "npmi") -> list[PairStats]:
        """The k strongest co-purchase partners of a product (ties: higher count, then id)."""
        span = self._offsets.get(product_id)
        if span is None or k < 1:
            return []
        block = self.pairs.slice(span[0], span[1] - span[0])
        secondary = "count" if by != "count" else "npmi"
        block = block.sort([by, secondary, "b"], descending=[True, True, False]).head(k)
        return [PairStats(*row) for row in block.iter_rows()]

    def pair(self, a: str, b: str) -> PairStats | None:
        """Statistics of a with b, or None when they were bought together fewer than min_support times."""
        span = self._offsets.get(a)
        if span is None:
            return None
        block = self.pairs.slice(span[0], span[1] - span[0]).filter(pl.col("b") == b)
        return PairStats(*block.row(0)) if block.height else None

    def partners(self, product_id: str) -> int:
        """How many products pass min_support with this one."""
        span = self._offsets.get(product_id)
        return span[1] - span[0] if span else 0

    def popularity(self) -> dict[str, int]:
        """Baskets holding each product, over all baskets (large ones too: a purchase is a purchase).
        The signal of the global and same-category popularity baselines."""
        return dict(self.popularity_counts.iter_rows())

    def category_copurchase(
        self, products: Iterable[Product] | Mapping[str, Product], *, min_support: int | None = None
    ) -> pl.DataFrame:
        """Leaf category to leaf category statistics, both directions: (a, b, count, lift, pmi, npmi) where a and
        b are leaf category names and count = baskets holding a product of each. Same-leaf pairs are left
        out (two phone cases in one basket say 'alternatives considered', not 'used together'). Products
        without a category, and basket rows of ids not in `products`, do not count."""
        items = products.values() if isinstance(products, Mapping) else products
        leaf = [(p.id, p.leaf_category) for p in items if p.leaf_category]
        leaves = pl.DataFrame(leaf, schema={"product_id": pl.String, "leaf": pl.String}, orient="row")
        support = self.min_support if min_support is None else min_support
        rows = self._rows.join(leaves, on="product_id").select("basket_id", "leaf").unique()
        singles = rows.group_by("leaf").len("n_item").rename({"leaf": "item"})
        counted = _pairs_within_baskets(rows, "leaf", support)
        if not counted.height:
            return pl.DataFrame(schema=PAIR_SCHEMA)
        return _both_directions(_with_association(counted, singles, self.baskets))


def _offsets_by_source(pairs: pl.DataFrame) -> dict[str, tuple[int, int]]:
    if not pairs.height:
        return {}
    spans = (
        pairs.with_row_index("i")
        .group_by("a", maintain_order=True)
        .agg(pl.col("i").min().alias("start"), pl.col("i").max().alias("end"))
    )
    return {a: (int(s), int(e) + 1) for a, s, e in spans.iter_rows()}


def baskets_frame(pairs: Sequence[tuple[str, str]]) -> pl.DataFrame:
    """(basket_id, product_id) rows as the frame `CoPurchase.from_baskets` reads (handy for small inputs)."""
    return pl.DataFrame(list(pairs), schema={"basket_id": pl.String, "product_id": pl.String}, orient="row")
