"""The self-supervised split of a run's interactions: a stable hash of the basket id decides whether a basket
builds behaviour features or supplies labels, so a pair seen only in the label part never feeds a feature.
Pure polars; no model, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import polars as pl

FOLDS: Final = 5
"""The log is cut into this many folds by basket hash; each fold in turn supplies labels while the other
four build the behaviour features. One fold = 20%, mirroring the 80/20 protocol the graph is judged by (the
ranker learns to predict a held-back fifth of the log from the rest), and every basket labels once."""
LABEL_SHARE: Final = 1.0 / FOLDS
SPLIT_SALT: Final = "shelfgraph-rank-labels"


@dataclass(frozen=True)
class LabelSplit:
    """`features`: baskets behaviour features are built from while fitting; `labels`: the held-back baskets
    whose co-occurring pairs are the positives."""

    features: pl.DataFrame
    labels: pl.DataFrame

    @property
    def feature_baskets(self) -> int:
        return int(self.features["basket_id"].n_unique()) if self.features.height else 0

    @property
    def label_baskets(self) -> int:
        return int(self.labels["basket_id"].n_unique()) if self.labels.height else 0


def fold_of(basket_id: str, folds: int = FOLDS, salt: str = SPLIT_SALT) -> int:
    digest = hashlib.sha256(f"{salt}:{basket_id}".encode()).digest()
    return int(int.from_bytes(digest[:8], "big") / 2**64 * folds)


def split_baskets(baskets: pl.DataFrame, fold: int = 0, folds: int = FOLDS, salt: str = SPLIT_SALT) -> LabelSplit:
    """Split (basket_id, product_id) rows by basket: fold `fold` supplies labels, the others features. The same
    basket always lands in the same fold."""
    rows = baskets.select(pl.col("basket_id").cast(pl.String), pl.col("product_id").cast(pl.String)).unique()
    ids = rows["basket_id"].unique().to_list()
    side = pl.DataFrame({"basket_id": ids, "is_label": [fold_of(b, folds, salt) == fold for b in ids]},
                        schema={"basket_id": pl.String, "is_label": pl.Boolean})
    tagged = rows.join(side, on="basket_id")
    return LabelSplit(features=tagged.filter(~pl.col("is_label")).drop("is_label"),
                      labels=tagged.filter(pl.col("is_label")).drop("is_label"))


MAX_GROUPS: Final = 20_000
"""Label groups kept for fitting (a seeded hash sample beyond this): bounds the fit's time and memory on a
large log; LambdaRank gains little from more groups than this."""
VALID_FOLDS: Final = 5
"""The label baskets are cut again, by another hash, into this many validation folds: the ranker is fitted once
per fold on the other folds' groups, stopped early on that fold, and judged on it (cross-fitting, as
LightGBM's own `cv` does). Every label group is held back exactly once, so the model-vs-ordering decision and
the calibration see all of them, and the served model is the mean of the fold models (see stages.rank.model).
Five mirrors the 80/20 split of the label folds above."""


def label_groups(labels: pl.DataFrame, row_of: pl.DataFrame, max_basket_size: int,
                 max_groups: int = MAX_GROUPS // FOLDS, offset: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The evaluation protocol, replayed on the label part: every item s of a label basket is a query whose
    relevant answers are the other items of that basket. Returns (groups: g, s, vfold, positives;
    answers: g, t) over catalog rows; `row_of` maps id -> row; group ids start at `offset`; `vfold` is the
    validation fold of the group's basket."""
    rows = labels.join(row_of, left_on="product_id", right_on="id").select("basket_id", "row").unique()
    sizes = rows.group_by("basket_id").len("size").filter((pl.col("size") >= 2) & (pl.col("size") <= max_basket_size))
    rows = rows.join(sizes, on="basket_id")
    groups = rows.select("basket_id", pl.col("row").alias("s"), positives=pl.col("size") - 1)
    if groups.height > max_groups:
        keyed = groups.with_columns(h=pl.concat_str("basket_id", pl.col("s").cast(pl.String), separator="|").hash(7))
        groups = keyed.sort("h").head(max_groups).drop("h")
    groups = groups.sort("basket_id", "s").with_row_index("g").with_columns(
        pl.col("g").cast(pl.Int64) + offset,
        vfold=pl.col("basket_id").map_elements(lambda b: fold_of(b, VALID_FOLDS, SPLIT_SALT + "-valid"),
                                               return_dtype=pl.Int8),
    )
    answers = (groups.select("g", "basket_id", "s").join(rows.select("basket_id", pl.col("row").alias("t")), on="basket_id")
               .filter(pl.col("s") != pl.col("t")).select("g", "t"))
    return groups.select("g", "s", "vfold", "positives"), answers
