"""The rank stage: fit the complement ranker on the run's own interactions, then score every candidate of
every target product with behaviour rebuilt on all interactions, and keep each product's best. Writes no
files itself (the pipeline stores the model text and summary in the run folder).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl

from distill.stages.rank.context import BehaviourStats, CatalogView, F32
from distill.stages.rank.features import FEATURES, pair_features
from distill.stages.rank.labels import FOLDS, LABEL_SHARE, label_groups, split_baskets
from distill.stages.rank.model import FitResult, Ranker, fit_ranker
from distill.stages.rank.pool import BIT, ORIGINS, build_pool
from distill.stages.rank.training import TrainingSet, TrainingSetBuilder
from distill.stages.scoring import template_reasons
from graph_schema.models import Evidence, Product, Provenance, RankerSummary, Relation
from graph_schema.relation_table import RelationTable

MODEL_FILE: Final = "ranker.txt"
SCORING_BLOCK: Final = 4096
"""Source products scored per pass: memory stays O(block x pool), not O(catalog x pool)."""
TEXT_FEATURES: Final = frozenset({"text_sim", "text_rank", "tfidf_sim", "tfidf_rank", "nb_score", "nb_count",
                                  "keyphrase_overlap", "from_text", "from_lexical", "from_neighbour"})
BEHAVIOUR_FEATURES: Final = frozenset({"co_count", "co_lift", "co_npmi", "nb_score", "nb_count", "leaf_count",
                                       "leaf_cond", "leaf_lift", "target_pop", "target_pop_rank",
                                       "target_leaf_share", "source_pop", "from_copurchase", "from_neighbour",
                                       "from_category", "from_popular", "from_leaf_popular"})


@dataclass(frozen=True)
class LLMEvidence:
    """What the model said about pairs (catalog ids): its judgement score and the grounded proposals."""

    pairs: pl.DataFrame
    """(source, target, llm_score, llm_retrieval, llm_reason, query, llm_model): llm_model is the model that
    answered the judgement (a fallback when the primary failed), None when unknown."""

    @classmethod
    def empty(cls) -> LLMEvidence:
        return cls(pl.DataFrame(schema=LLM_SCHEMA))


LLM_SCHEMA: Final = {"source": pl.String, "target": pl.String, "llm_score": pl.Float32,
                     "llm_retrieval": pl.Float32, "llm_reason": pl.String, "query": pl.String,
                     "llm_model": pl.String}


@dataclass(frozen=True)
class RankResult:
    relations: RelationTable
    summary: RankerSummary
    model_text: str | None


def _rows(catalog: CatalogView, llm: LLMEvidence) -> pl.DataFrame:
    frame = llm.pairs
    return frame.with_columns(s=catalog.index(frame["source"]), t=catalog.index(frame["target"])).drop_nulls(["s", "t"])


def _masked(frame: pl.DataFrame, masked: Collection[str]) -> pl.DataFrame:
    return frame.with_columns([pl.lit(None, pl.Float32).alias(name) for name in FEATURES if name in masked])


def rank_complements(
    products: Sequence[Product],
    baskets: pl.DataFrame | None,
    embeddings: F32 | None,
    targets: Collection[str],
    *,
    llm: LLMEvidence,
    max_complements: int,
    max_basket_size: int,
    near_duplicates: set[frozenset[str]],
    run_id: str,
    model: str | None,
    prompt_version: str | None,
    use_behaviour: bool = True,
    use_text: bool = True,
    learned: bool = True,
) -> RankResult:
    """Complements of every product in `targets`: at most `max_complements` each, best first, scored in [0, 1].
    `embeddings` rows align with `products`. `use_behaviour=False` keeps the log as labels only (no behaviour
    feature); `use_text=False` drops the text features; `learned=False` keeps the best single ordering."""
    catalog = CatalogView.build(products, embeddings if use_text else None)
    masked = (set() if use_text else set(TEXT_FEATURES)) | (set() if use_behaviour else set(BEHAVIOUR_FEATURES))
    llm_rows = _rows(catalog, llm)
    llm_features = llm_rows.select("s", "t", "llm_score", "llm_retrieval").group_by("s", "t").agg(
        pl.col("llm_score").max(), pl.col("llm_retrieval").max())
    has_log = baskets is not None and baskets.height > 0
    fallback = "text similarity" if use_text else "popularity" if has_log else "lexical similarity"

    fit: FitResult | None = None
    summary_extra: dict[str, int | float] = {}
    if has_log:
        assert baskets is not None
        train, positives, fit_baskets, label_baskets = training_frame(
            catalog, baskets, max_basket_size=max_basket_size, use_behaviour=use_behaviour, masked=masked,
            llm_features=llm_features)
        fit = fit_ranker(train, positives, fit_baskets=max(fit_baskets, 1), fallback=fallback) if train.height else None
        del train  # the scoring passes below need the memory
        if fit is not None and not learned:
            singles = {n: m for n, m in fit.validation.items() if n != "learned ranker"}
            best = max(singles, key=lambda n: (singles[n]["ndcg"], singles[n]["hit"]), default=fallback)
            fit = FitResult(Ranker("ordering", ordering=best), f"learned ranker switched off: ordered by {best}",
                            fit.validation, {}, fit.train_groups, fit.valid_groups, fit.positives, 0)
        summary_extra = {"feature_baskets": fit_baskets, "label_baskets": label_baskets,
                         "label_share": LABEL_SHARE}
    ranker = fit.ranker if fit is not None else Ranker("ordering", ordering=fallback)
    reason = fit.reason if fit is not None else (
        f"no interactions: ordered by {fallback} across shelves (same-shelf items are substitutes until "
        "baskets show them bought together)")

    full = BehaviourStats.build(baskets, catalog, max_basket_size=max_basket_size) if has_log else BehaviourStats.empty(catalog)
    scale = ranker.fit_baskets / full.baskets if ranker.kind == "lambdarank" and full.baskets else 1.0
    target_rows = np.array([catalog.row[pid] for pid in targets if pid in catalog.row], dtype=np.int32)
    feature_behaviour = _features_source(full, use_behaviour, catalog)
    tops: list[pl.DataFrame] = []
    added = np.zeros(len(ORIGINS), dtype=np.int64)
    for start in range(0, len(target_rows), SCORING_BLOCK):
        block = target_rows[start:start + SCORING_BLOCK]
        pool, smoothed = build_pool(catalog, feature_behaviour, block, llm_pairs=llm_features.select("s", "t"))
        origins = pool["origins"].to_numpy()
        added += [int(((origins & BIT[name]) > 0).sum()) for name in ORIGINS]
        frame = _masked(pair_features(pool, smoothed, catalog, feature_behaviour, scale=scale, llm=llm_features),
                        masked)
        scores = ranker.score(frame)
        key = scores if ranker.kind == "lambdarank" else ranker.order_key(frame)
        frame = frame.with_columns(score=pl.Series(scores), key=pl.Series(key), origins=pool["origins"])
        frame = _drop_near_duplicates(frame, catalog, near_duplicates)
        if not has_log:
            # Without a log nothing says shoppers buy two items of one shelf together: keep complements across
            # shelves (products without a category have none to share).
            frame = frame.filter((pl.col("same_leaf") == 0) | pl.col("same_leaf").is_null())
        tops.append(frame.sort(["s", "key", "target_pop", "t"], descending=[False, True, True, False])
                    .group_by("s", maintain_order=True).head(max_complements))
    top = pl.concat(tops) if tops else pl.DataFrame()
    relations = RelationTable.from_relations(_relations(top, catalog, feature_behaviour, llm_rows, run_id=run_id,
                                                        model=model, prompt_version=prompt_version))

    kept = top["origins"].to_numpy() if top.height else np.zeros(0, dtype=np.uint16)
    candidates = {name: {"added": int(added[i]), "kept": int(((kept & BIT[name]) > 0).sum())}
                  for i, name in enumerate(ORIGINS)}
    summary = RankerSummary(
        kind=ranker.kind, ordering=ranker.ordering, reason=reason,
        model_file=MODEL_FILE if ranker.kind == "lambdarank" else None,
        train_groups=fit.train_groups if fit else 0, valid_groups=fit.valid_groups if fit else 0,
        positives=fit.positives if fit else 0, rounds=fit.rounds if fit else 0,
        validation=fit.validation if fit else {}, importances=fit.importances if fit else {},
        candidates=candidates, **summary_extra,  # type: ignore[arg-type]
    )
    return RankResult(relations, summary, ranker.model_text())


def training_frame(
    catalog: CatalogView, baskets: pl.DataFrame, *, max_basket_size: int, use_behaviour: bool = True,
    masked: Collection[str] = (), llm_features: pl.DataFrame | None = None,
) -> tuple[TrainingSet, dict[int, int], int, int]:
    """The labelled candidate rows of all folds (see stages.rank.training), the positives per group, and the mean
    feature-part and label-part basket counts of a fold. Each fold's features come from the other folds only;
    a fold's rows are reduced to arrays before the next fold is built."""
    row_of = pl.DataFrame({"id": list(catalog.ids), "row": np.arange(len(catalog), dtype=np.int32)})
    llm_pairs = llm_features.select("s", "t") if llm_features is not None else None
    parts = TrainingSetBuilder()
    positives: dict[int, int] = {}
    fit_baskets = label_baskets = 0
    for fold in range(FOLDS):
        split = split_baskets(baskets, fold)
        fit_behaviour = _features_source(
            BehaviourStats.build(split.features, catalog, max_basket_size=max_basket_size), use_behaviour, catalog)
        groups, answers = label_groups(split.labels, row_of, max_basket_size, offset=len(positives))
        fit_baskets += split.feature_baskets
        label_baskets += split.label_baskets
        if not groups.height:
            continue
        sources = groups["s"].unique().to_numpy().astype(np.int32)
        pool, smoothed = build_pool(catalog, fit_behaviour, sources, llm_pairs=llm_pairs)
        pairs = _masked(pair_features(pool, smoothed, catalog, fit_behaviour, llm=llm_features), masked)
        del pool, smoothed, fit_behaviour
        parts.add(groups.select("g", "s", "vfold").join(pairs, on="s")
                  .join(answers.with_columns(label=pl.lit(1.0, pl.Float32)), on=["g", "t"], how="left")
                  .with_columns(pl.col("label").fill_null(0.0)))
        del pairs
        positives.update(zip(groups["g"].to_list(), groups["positives"].to_list(), strict=True))
    return parts.build(), positives, fit_baskets // FOLDS, label_baskets // FOLDS


def _features_source(behaviour: BehaviourStats, use_behaviour: bool, catalog: CatalogView) -> BehaviourStats:
    return behaviour if use_behaviour else BehaviourStats.empty(catalog)


def _drop_near_duplicates(frame: pl.DataFrame, catalog: CatalogView, near: set[frozenset[str]]) -> pl.DataFrame:
    """The same item listed twice is never its own complement."""
    if not near:
        return frame
    rows = [(catalog.row[a], catalog.row[b]) for pair in near if len(pair) == 2
            for a, b in [tuple(sorted(pair))] if a in catalog.row and b in catalog.row]
    if not rows:
        return frame
    both = pl.DataFrame([*rows, *[(b, a) for a, b in rows]], schema={"s": pl.Int32, "t": pl.Int32}, orient="row")
    return frame.join(both, on=["s", "t"], how="anti")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _relations(top: pl.DataFrame, catalog: CatalogView, full: BehaviourStats, llm_rows: pl.DataFrame, *,
               run_id: str, model: str | None, prompt_version: str | None) -> Iterator[Relation]:
    """One validated Relation per row of `top`, made as it is read (the caller keeps them as a table)."""
    if not top.height:
        return
    observed = full.pairs.select("s", "t", raw_count="co_count", raw_lift="co_lift")
    detail = top.join(observed, on=["s", "t"], how="left")
    text = llm_rows.group_by("s", "t").agg(pl.col("llm_reason").drop_nulls().first(),
                                           pl.col("query").drop_nulls().first(),
                                           pl.col("llm_model").drop_nulls().first())
    detail = detail.join(text, on=["s", "t"], how="left")
    leaf_name = catalog.leaf_names
    for row in detail.iter_rows(named=True):
        count = int(row["raw_count"]) if row["raw_count"] is not None else (0 if full.baskets else None)
        llm_score = _finite(row["llm_score"])
        evidence = Evidence(
            llm_score=min(max(llm_score, 0.0), 1.0) if llm_score is not None else None,
            copurchase_count=count, lift=_finite(row["raw_lift"]),
            text_similarity=None if _finite(row["text_sim"]) is None else max(min(row["text_sim"], 1.0), -1.0),
            retrieval_score=_finite(row["llm_retrieval"]), query=row["query"],
        )
        s, t = int(row["s"]), int(row["t"])
        reasons: list[str] = [row["llm_reason"][:300]] if row["llm_reason"] else []
        pair = (leaf_name.get(int(catalog.leaf[s])), leaf_name.get(int(catalog.leaf[t])))
        leaf_count = _finite(row["leaf_count"])
        for reason in template_reasons("complement", evidence,
                                       category_pair=pair if None not in pair and pair[0] != pair[1] else None,  # type: ignore[arg-type]
                                       category_count=int(leaf_count) if leaf_count else None,
                                       neighbour_count=int(row["nb_count"]) if _finite(row["nb_count"]) else None):
            if reason not in reasons:
                reasons.append(reason)
        popularity = int(full.popularity[t])
        if popularity and row["origins"] & (BIT["popular"] | BIT["leaf_popular"]) and len(reasons) < 5:
            reasons.append(f"popular: in {popularity} order{'s' if popularity != 1 else ''}")
        judged = llm_score is not None or row["origins"] & BIT["llm"]
        yield Relation(
            source=catalog.ids[s], target=catalog.ids[t], kind="complement", score=round(float(row["score"]), 6),
            reasons=tuple(r for r in reasons[:5] if r.strip()) or ("related by the catalog's category structure",),
            evidence=evidence,
            provenance=Provenance(
                run_id=run_id, model=(row["llm_model"] or model) if judged else None,
                prompt_version=prompt_version if judged else None,
                stage="rank:" + "+".join(n for n in ORIGINS if row["origins"] & BIT[n])),
        )
