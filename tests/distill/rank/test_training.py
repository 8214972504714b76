"""The fold-by-fold training set holds exactly the answered groups' rows, in the same order, of the one
concatenated frame of all folds (replayed here as the reference); the cross-fit scores each group with the
booster that never saw it."""

from __future__ import annotations

import numpy as np
import polars as pl

from distill.stages.rank.context import BehaviourStats, CatalogView
from distill.stages.rank.features import FEATURES, matrix, pair_features
from distill.stages.rank.labels import FOLDS, VALID_FOLDS, label_groups, split_baskets
from distill.stages.rank.model import (MAX_ROUNDS, PARAMS, PATIENCE, Metrics, Ranker, clearly_better, cross_fit,
                                       group_metrics, group_sizes)
from distill.stages.rank.pool import build_pool
from distill.stages.rank.stage import training_frame
from distill.stages.rank.training import TrainingSetBuilder
from tests.distill.rank.test_rank import two_feature_catalog


def _fold_parts(catalog: CatalogView, baskets: pl.DataFrame) -> tuple[list[pl.DataFrame], dict[int, int]]:
    """The labelled rows of each fold, (g, s, vfold, t, FEATURES..., label), as training_frame builds them."""
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
        parts.append(groups.select("g", "s", "vfold").join(pairs, on="s")
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
    frame = pl.concat(parts).sort("g", "t")  # every fold's rows in one frame, the reference

    groups = frame["g"].to_numpy()
    per_group = frame.group_by("g").agg(pl.col("label").max(), pl.col("vfold").first())
    answered = per_group.filter(pl.col("label") > 0)
    kept = np.isin(groups, answered["g"].to_numpy())
    assert 0 < kept.sum() < len(kept)  # groups the pool missed are left out of the rows

    x = matrix(frame)
    assert data.x.shape == (kept.sum(), len(FEATURES)) and data.x.flags["C_CONTIGUOUS"]
    assert np.array_equal(data.x, x[kept], equal_nan=True)
    assert np.array_equal(data.groups, groups[kept])
    assert np.array_equal(data.labels, frame["label"].to_numpy()[kept])
    assert np.array_equal(data.vfold, frame["vfold"].to_numpy()[kept])
    assert len(np.unique(data.vfold)) == VALID_FOLDS  # every validation fold holds groups
    missed = per_group.filter(pl.col("label") <= 0)["vfold"].to_numpy()
    assert data.missed.tolist() == np.bincount(missed, minlength=VALID_FOLDS).tolist()
    assert data.answered_groups == answered.height
    assert data.positives == int(frame["label"].sum())
    assert data.frame().equals(pl.DataFrame({name: x[kept][:, i] for i, name in enumerate(FEATURES)}))


def test_each_group_is_scored_out_of_fold_and_the_ranker_is_the_mean_of_the_fold_boosters() -> None:
    import lightgbm as lgb

    products, baskets = two_feature_catalog()
    catalog = CatalogView.build(products, None)
    data, _, _, _ = training_frame(catalog, baskets, max_basket_size=50)
    folds = sorted(np.unique(data.vfold).tolist())
    boosters, rounds, oof = cross_fit(data, folds)
    assert len(boosters) == len(folds) == VALID_FOLDS
    for k, booster, best in zip(folds, boosters, rounds, strict=True):
        held = data.vfold == k
        # the fold's booster is exactly a fit on the other folds alone (binned as one set), stopped on this one
        rows, back = np.flatnonzero(~held), np.flatnonzero(held)
        full = lgb.Dataset(data.x, data.labels, group=group_sizes(data.groups), feature_name=list(FEATURES),
                           params=dict(PARAMS)).construct()
        train, valid = full.subset(rows.tolist()), full.subset(back.tolist())
        assert train.construct().get_group().tolist() == group_sizes(data.groups[rows])
        alone = lgb.train(dict(PARAMS), train, num_boost_round=MAX_ROUNDS, valid_sets=[valid],
                          callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
        assert best == alone.best_iteration
        assert np.allclose(oof[held], alone.predict(data.x[back], num_iteration=best), atol=1e-6)
        assert np.allclose(booster.predict(data.x[:50]), alone.predict(data.x[:50], num_iteration=best), atol=1e-6)
    ranker = Ranker("lambdarank", boosters=tuple(boosters))
    mean = np.mean([b.predict(data.x[:200]) for b in boosters], axis=0)
    assert np.allclose(ranker.raw(data.x[:200]), mean, atol=1e-5)
    assert ranker.model_text().count("# fold booster") == VALID_FOLDS  # type: ignore[union-attr]


def test_training_frame_labels_every_fold() -> None:
    products, baskets = two_feature_catalog()
    catalog = CatalogView.build(products, None)
    data, positives, fit_baskets, label_baskets = training_frame(catalog, baskets, max_basket_size=50)
    _, expected = _fold_parts(catalog, baskets)
    assert positives == expected
    assert set(np.unique(data.groups)) <= set(positives)
    assert data.answered_groups + int(data.missed.sum()) <= len(positives)
    assert data.positives == int(data.labels.sum())
    assert abs(fit_baskets + label_baskets - baskets["basket_id"].n_unique()) <= 2  # each a mean over folds, floored


def test_an_ordering_replaces_the_model_only_when_clearly_better() -> None:
    rng = np.random.default_rng(0)
    model = rng.random(2000)
    tie = Metrics(0.0, float(model.mean()), 2000, model + rng.normal(0.0, 0.05, 2000) + 0.001)
    clear = Metrics(0.0, float(model.mean()), 2000, model + rng.normal(0.0, 0.05, 2000) + 0.02)
    fitted = Metrics(0.0, float(model.mean()), 2000, model)
    assert tie.ndcg >= 0 and float(tie.each.mean()) > float(model.mean())  # higher, but within noise
    assert not clearly_better(tie, fitted)
    assert clearly_better(clear, fitted)
    assert not clearly_better(fitted, clear)


def test_group_metrics_count_the_missed_groups_as_zeros() -> None:
    groups = np.array([0, 0, 1, 1], dtype=np.int64)
    labels = np.array([1, 0, 0, 1], dtype=np.float32)
    scores = np.array([0.9, 0.1, 0.9, 0.1], dtype=np.float32)
    m = group_metrics(groups, scores, labels, {0: 1, 1: 1}, missed=2)
    assert m.groups == 4 and len(m.each) == 4 and m.each[2:].tolist() == [0.0, 0.0]
    assert m.hit == 0.5 and abs(m.ndcg - (1.0 + 1.0 / np.log2(3)) / 4) < 1e-9
