"""The fold-by-fold training set holds exactly the rows, in the same order, that the one concatenated frame of
all folds gave the fit before (replayed here as the reference), so the fitted model cannot change. The folds'
rows are built once and given to both: the candidate pool breaks ties between equal scores in no fixed order,
so two builds of it may differ."""

from __future__ import annotations

import numpy as np
import polars as pl

from distill.stages.rank.context import BehaviourStats, CatalogView
from distill.stages.rank.features import FEATURES, matrix, pair_features
from distill.stages.rank.labels import FOLDS, label_groups, split_baskets
from distill.stages.rank.pool import build_pool
from distill.stages.rank.stage import training_frame
from distill.stages.rank.training import TrainingSetBuilder
from tests.distill.rank.test_rank import two_feature_catalog


def _fold_parts(catalog: CatalogView, baskets: pl.DataFrame) -> tuple[list[pl.DataFrame], dict[int, int]]:
    """The labelled rows of each fold, (g, s, valid, t, FEATURES..., label), as training_frame builds them."""
    row_of = pl.DataFrame({"id": list(catalog.ids), "row": np.arange(len(catalog), dtype=np.int32)})
    parts: list[pl.DataFrame] = []
    positives: dict[int, int] = {}
    for fold in range(FOLDS):
        split = split_baskets(baskets, fold)
        behaviour = BehaviourStats.build(split.features, catalog, max_basket_size=50)
        groups, answers = label_groups(split.labels, row_of, 50, offset=len(positives))
        if not groups.height:
            continue
        pool, smoothed = build_pool(catalog, behaviour, groups["s"].unique().to_numpy().astype(np.int32))
        pairs = pair_features(pool, smoothed, catalog, behaviour)
        parts.append(groups.select("g", "s", "valid").join(pairs, on="s")
                     .join(answers.with_columns(label=pl.lit(1.0, pl.Float32)), on=["g", "t"], how="left")
                     .with_columns(pl.col("label").fill_null(0.0)))
        positives.update(zip(groups["g"].to_list(), groups["positives"].to_list(), strict=True))
    return parts, positives


def test_streamed_folds_give_the_rows_of_the_concatenated_frame() -> None:
    products, baskets = two_feature_catalog()
    catalog = CatalogView.build(products, None)
    parts, _ = _fold_parts(catalog, baskets)
    builder = TrainingSetBuilder()
    for part in parts:
        builder.add(part)
    data = builder.build()
    frame = pl.concat(parts).sort("g", "t")  # the frame fit_ranker sorted and cut into train and valid rows

    groups = frame["g"].to_numpy()
    is_valid = frame["valid"].to_numpy()
    answered = frame.group_by("g").agg(pl.col("label").max(), pl.col("valid").first()).filter(pl.col("label") > 0)
    is_train = ~is_valid & np.isin(groups, answered.filter(~pl.col("valid"))["g"].to_numpy())
    assert is_train.sum() > 100 and is_valid.sum() > 100  # both parts are exercised
    assert 0 < is_train.sum() < (~is_valid).sum()  # and groups the pool missed are left out of the fit

    x = matrix(frame)
    assert data.x.shape == (is_train.sum(), len(FEATURES)) and data.x.flags["C_CONTIGUOUS"]
    assert np.array_equal(data.x, x[is_train], equal_nan=True)
    assert np.array_equal(data.groups, groups[is_train])
    assert np.array_equal(data.labels, frame["label"].to_numpy()[is_train])
    assert data.valid.equals(frame.filter(pl.Series(is_valid)))
    assert data.valid_groups == int(answered["valid"].sum())
    assert data.train_groups == answered.height - data.valid_groups
    assert data.positives == int(frame["label"].sum())
    assert data.height == is_train.sum() + is_valid.sum()


def test_training_frame_labels_every_fold() -> None:
    products, baskets = two_feature_catalog()
    catalog = CatalogView.build(products, None)
    data, positives, fit_baskets, label_baskets = training_frame(catalog, baskets, max_basket_size=50)
    _, expected = _fold_parts(catalog, baskets)
    assert positives == expected
    assert set(np.unique(data.groups)) | set(data.valid["g"].unique().to_list()) <= set(positives)
    assert data.train_groups > 0 and data.valid_groups > 0
    assert data.positives == int(data.labels.sum() + data.valid["label"].sum())
    assert abs(fit_baskets + label_baskets - baskets["basket_id"].n_unique()) <= 2  # each a mean over folds, floored
