"""Fit, judge and apply the relation ranker. A LightGBM LambdaRank model (the field's standard
learning-to-rank model; trees take missing evidence natively) is fitted per run on groups of candidates
sharing a source product, cross-fitted over the validation folds of stages.rank.labels: one booster per fold,
trained on the other folds and stopped early on NDCG@10 of its own. Every group is thus scored once by a
booster that never saw it (out of fold); those scores judge the model against every single-evidence ordering
and fit the Platt calibration to [0, 1]. The served ranker is the mean of the fold boosters, which averages
away the variance of early stopping on one small held-back part. When the label part is too small, or a
single evidence ordering clearly beats the model out of fold (beyond two paired standard errors), that ordering is
used instead and the report says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from distill.stages.rank.context import F32
from distill.stages.rank.features import FEATURES, matrix
from distill.stages.rank.gate import Z_CLEAR, paired_difference
from distill.stages.rank.labels import VALID_FOLDS
from distill.stages.rank.training import TrainingSet

K: Final = 10
"""The served list length the model is judged at (the storefront's top 10)."""
MIN_GROUPS: Final = 30
"""Fewer labelled source products than this and a fitted model's validation figures are noise."""
PARAMS: Final[Mapping[str, object]] = {
    # LightGBM's documented lambdarank defaults (31 leaves, 255 bins, truncation 30) with the learning rate
    # halved to 0.05, as its parameter-tuning guide advises for accuracy ("small learning_rate with large
    # num_iterations", "large max_bin"); early stopping on each held-back validation fold decides the number of
    # trees, so no count is fixed by hand.
    "objective": "lambdarank", "metric": "ndcg", "eval_at": [K], "learning_rate": 0.05, "num_leaves": 31,
    "min_data_in_leaf": 20, "max_bin": 255, "feature_fraction": 0.9, "lambdarank_truncation_level": 3 * K,
    "deterministic": True, "force_row_wise": True, "seed": 0, "verbose": -1, "num_threads": 2,
}
MAX_ROUNDS: Final = 300
PATIENCE: Final = 20

ORDERINGS: Final[Mapping[str, str]] = {
    # single-evidence orderings: each is also what one baseline does with that evidence
    "text similarity": "text_sim", "lexical similarity": "tfidf_sim", "co-purchase": "co_count",
    "content-smoothed co-purchase": "nb_score", "popularity": "target_pop", "category pair": "leaf_cond",
    "llm judgement": "llm_score",
}


@dataclass(frozen=True)
class Metrics:
    hit: float
    ndcg: float
    groups: int
    each: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    """NDCG@k of every counted group (groups the pool missed last, as zeros): two orderings of the same rows
    give aligned arrays, for a paired comparison."""


def group_metrics(groups: npt.NDArray[np.int64], scores: F32, labels: F32, positives: Mapping[int, int],
                  k: int = K, missed: int = 0) -> Metrics:
    """Hit@k and NDCG@k over groups (rows sorted by group). `positives[g]`: all relevant items of group g,
    also those the pool missed (they count in the ideal DCG, as in the evaluation protocol). `missed`: groups
    whose pool holds none of their answers, which score zero and count in the mean."""
    if not len(groups):
        return Metrics(0.0, 0.0, missed, np.zeros(missed))
    frame = pl.DataFrame({"g": groups, "score": scores, "label": labels}).with_columns(
        pos=pl.col("score").fill_nan(-np.inf).rank("ordinal", descending=True).over("g"))
    top = frame.filter(pl.col("pos") <= k)
    gains = top.with_columns(dcg=pl.col("label") / (pl.col("pos") + 1).log(2)).group_by("g").agg(
        pl.col("dcg").sum(), hit=(pl.col("label").max() > 0).cast(pl.Float64))
    total_hit = 0.0
    each: list[float] = []
    dcg = dict(zip(gains["g"].to_list(), zip(gains["dcg"].to_list(), gains["hit"].to_list(), strict=True),
                   strict=True))
    for g in np.unique(groups).tolist():
        relevant = positives.get(g, 0)
        if relevant <= 0:
            continue
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(relevant, k)))
        value, hit = dcg.get(g, (0.0, 0.0))
        total_hit += hit
        each.append(value / ideal)
    each.extend([0.0] * missed)
    n = len(each)
    return Metrics(total_hit / n if n else 0.0, sum(each) / n if n else 0.0, n, np.asarray(each))


def clearly_better(a: Metrics, b: Metrics, z: float = Z_CLEAR) -> bool:
    """Whether `a` beats `b` on the same groups by more than `z` standard errors of the paired NDCG
    difference: a tie within noise is no reason to prefer either."""
    mean, spread = paired_difference(a.each.tolist(), b.each.tolist())
    return mean > z * spread


def ordering_scores(frame: pl.DataFrame, column: str) -> F32:
    """A single-evidence ordering as a score: the evidence value, popularity breaking ties (NaN = last)."""
    value = frame[column].fill_null(float("nan")).to_numpy().astype(np.float64)
    pop = frame["target_pop"].fill_null(0.0).fill_nan(0.0).to_numpy().astype(np.float64)
    tie = np.log1p(pop) / (np.log1p(pop.max(initial=0.0)) + 1.0) * 1e-3
    out = np.where(np.isnan(value), -1e9, value + tie)
    return out.astype(np.float32)


def ordering_probability(frame: pl.DataFrame, column: str) -> F32:
    """The [0, 1] relation score of a model-free ordering: similarities as they are, counts saturated."""
    value = frame[column].fill_null(0.0).fill_nan(0.0).to_numpy().astype(np.float64)
    if column in ("text_sim", "tfidf_sim", "nb_score", "leaf_cond", "llm_score"):
        return np.clip(value, 0.0, 1.0).astype(np.float32)
    return (value / (value + 1.0)).astype(np.float32)


@dataclass
class Platt:
    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, raw: F32, labels: F32, iterations: int = 50) -> Platt:
        """Logistic fit of labels on the raw score (Newton steps with a small ridge: stable on few positives)."""
        x = raw.astype(np.float64)
        y = labels.astype(np.float64)
        a, b = 1.0, 0.0
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-(a * x + b)))
            w = p * (1.0 - p) + 1e-9
            g = np.array([np.sum((p - y) * x) + 1e-3 * a, np.sum(p - y)])
            h = np.array([[np.sum(w * x * x) + 1e-3, np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
            try:
                step = np.linalg.solve(h, g)
            except np.linalg.LinAlgError:
                break
            a, b = a - step[0], b - step[1]
            if np.abs(step).max() < 1e-8:
                break
        return cls(float(a), float(b))

    def __call__(self, raw: F32) -> F32:
        return (1.0 / (1.0 + np.exp(-(self.a * raw.astype(np.float64) + self.b)))).astype(np.float32)


@dataclass
class Ranker:
    """What scores pairs: a LightGBM booster + calibration, or a named single-evidence ordering."""

    kind: str
    """'lambdarank' or 'ordering'."""
    ordering: str | None = None
    boosters: tuple[object, ...] = ()
    """The fold boosters; the raw score is their mean."""
    platt: Platt = field(default_factory=Platt)
    fit_baskets: int = 0

    def raw(self, x: F32) -> F32:
        total = np.zeros(len(x), dtype=np.float64)
        for booster in self.boosters:
            total += booster.predict(x, num_threads=PARAMS["num_threads"])  # type: ignore[attr-defined]
        return (total / max(len(self.boosters), 1)).astype(np.float32)

    def score(self, frame: pl.DataFrame) -> F32:
        if self.kind == "lambdarank":
            return self.platt(self.raw(matrix(frame)))
        assert self.ordering is not None
        column = ORDERINGS[self.ordering]
        return ordering_probability(frame, column)

    def order_key(self, frame: pl.DataFrame) -> F32:
        """What the served order follows (the calibrated score may tie where the ordering does not)."""
        if self.kind == "lambdarank":
            return self.score(frame)
        return ordering_scores(frame, ORDERINGS[self.ordering or "text similarity"])

    def model_text(self) -> str | None:
        """The fold boosters in LightGBM's text format, each after a `# fold booster i of n` line."""
        if not self.boosters:
            return None
        n = len(self.boosters)
        return "".join(f"# fold booster {i + 1} of {n}\n{b.model_to_string()}"  # type: ignore[attr-defined]
                       for i, b in enumerate(self.boosters))


@dataclass(frozen=True)
class FitResult:
    ranker: Ranker
    reason: str
    validation: dict[str, dict[str, float]]
    """name -> {hit, ndcg}: the model (when fitted) and every single-evidence ordering, held-back groups."""
    importances: dict[str, float]
    train_groups: int
    """Answered label groups (each trains the boosters of the folds it is not in)."""
    valid_groups: int
    """Label groups judged out of fold (answered or not): all of them."""
    positives: int
    rounds: int
    """Mean boosting rounds of the fold boosters."""


def fit_ranker(data: TrainingSet, positives: Mapping[int, int], *, fit_baskets: int,
               fallback: str = "text similarity") -> FitResult:
    """`data`: candidate rows of the answered label groups (one group = one item of one label basket), see
    stages.rank.training; `positives[g]`: the other items of that basket, pool or not."""
    frame = data.frame()
    missed = int(data.missed.sum())
    validation: dict[str, dict[str, float]] = {}
    orderings: dict[str, Metrics] = {}
    for name, column in ORDERINGS.items():
        if frame.height and not frame[column].is_nan().all():
            m = group_metrics(data.groups, ordering_scores(frame, column), data.labels, positives, missed=missed)
            validation[name] = {"hit": round(m.hit, 4), "ndcg": round(m.ndcg, 4)}
            orderings[name] = m
    del frame
    best_single = max(validation, key=lambda n: (validation[n]["ndcg"], validation[n]["hit"]), default=fallback)
    folds = [k for k in range(VALID_FOLDS) if (data.vfold == k).any()]
    common = dict(train_groups=data.answered_groups, valid_groups=data.answered_groups + missed,
                  positives=data.positives)
    if data.answered_groups < MIN_GROUPS or len(folds) < 2:
        name = best_single if validation else fallback
        return FitResult(Ranker("ordering", ordering=name, fit_baskets=fit_baskets),
                         f"{data.answered_groups} label groups with an answer in the pool (< {MIN_GROUPS} "
                         f"to fit a model): ordered by {name}", validation, {}, rounds=0, **common)

    boosters, rounds, oof = cross_fit(data, folds)
    model_metrics = group_metrics(data.groups, oof, data.labels, positives, missed=missed)
    validation = {"learned ranker": {"hit": round(model_metrics.hit, 4), "ndcg": round(model_metrics.ndcg, 4)},
                  **validation}
    gains = sum(b.feature_importance("gain", iteration=r) for b, r in zip(boosters, rounds, strict=True))
    total = float(gains.sum()) or 1.0
    importances = {name: round(float(g) / total, 4) for name, g in sorted(zip(FEATURES, gains, strict=True),
                                                                          key=lambda kv: -kv[1]) if g > 0}
    mean_rounds = round(sum(rounds) / len(rounds))
    single = validation.get(best_single, {"ndcg": -1.0, "hit": -1.0})
    held = f"{data.answered_groups + missed} label groups, each held back once ({len(folds)} folds)"
    # The model holds every ordering's evidence as a feature; only an ordering clearly better out of fold
    # (beyond Z_CLEAR paired standard errors) replaces it. Within noise, the model's other features are what
    # serve products the label part says little about.
    if best_single in orderings and clearly_better(orderings[best_single], model_metrics):
        return FitResult(Ranker("ordering", ordering=best_single, fit_baskets=fit_baskets),
                         f"the learned ranker (NDCG@{K} {model_metrics.ndcg:.3f}) lost clearly to {best_single} "
                         f"({single['ndcg']:.3f}) on {held}: ordered by {best_single}",
                         validation, importances, rounds=mean_rounds, **common)
    platt = Platt.fit(oof, data.labels)
    return FitResult(Ranker("lambdarank", boosters=tuple(boosters), platt=platt, fit_baskets=fit_baskets),
                     f"learned ranker ({len(boosters)} fold boosters): NDCG@{K} {model_metrics.ndcg:.3f} vs "
                     f"{single['ndcg']:.3f} for the best single ordering ({best_single}) on {held}",
                     validation, importances, rounds=mean_rounds, **common)


def cross_fit(data: TrainingSet, folds: Sequence[int]) -> tuple[list[object], list[int], F32]:
    """One booster per validation fold, trained on the other folds and early-stopped on its own; returns the
    boosters (cut at their best round), those rounds, and every row's out-of-fold raw score. The rows are
    binned once and each fold takes a subset of the binned rows, as LightGBM's own `cv` does: no fold copies
    the feature matrix (the bin edges see every row's features, never a label)."""
    import lightgbm as lgb  # type: ignore[import-untyped]

    full = lgb.Dataset(data.x, data.labels, group=group_sizes(data.groups), feature_name=list(FEATURES),
                       params=dict(PARAMS)).construct()
    oof = np.zeros(data.height, dtype=np.float32)
    boosters: list[object] = []
    rounds: list[int] = []
    for k in folds:
        held = data.vfold == k
        rows, back = np.flatnonzero(~held).tolist(), np.flatnonzero(held)
        train, valid = full.subset(rows), full.subset(back.tolist())
        booster = lgb.train(dict(PARAMS), train, num_boost_round=MAX_ROUNDS, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
        best = int(booster.best_iteration or booster.current_iteration())
        oof[back] = booster.predict(data.x[back], num_iteration=best, num_threads=PARAMS["num_threads"])
        boosters.append(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)))
        rounds.append(best)
        del train, valid, booster, rows
    return boosters, rounds, oof


def group_sizes(groups: npt.NDArray[np.int64]) -> list[int]:
    if not len(groups):
        return []
    change = np.flatnonzero(np.diff(groups)) + 1
    bounds = np.concatenate([[0], change, [len(groups)]])
    return np.diff(bounds).tolist()


