"""The final score of a candidate relation and its template reasons. One formula, documented here and in
docs/pipeline.md; pure functions of a Candidate, so eval ablations and tests can call them directly.

score = kind_factor * sum_t w[kind][t] * term_t / sum_t w[kind][t]     over the terms t AVAILABLE in the run
term_behaviour = 1 - prod_s (1 - signal_s)                              s in copurchase, neighbour, category

Sources available to a run are decided once (no logs -> no behaviour sources; no model -> no `llm`), so within
a run a pair that was never bought together gets copurchase = 0 rather than having the source dropped: a
missing observation is evidence, a missing source is not. The one exception is `llm` when a pair was not sent
to the judge (it was below the verify shortlist): then `llm` is dropped for that pair and the score is
multiplied by UNVERIFIED_DISCOUNT, so judged pairs outrank unjudged ones of equal evidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal, get_args

import numpy as np
import polars as pl

from distill.candidates.model import Candidate, CandidateTable
from distill.compact import share_fields_sets
from distill.llm.prompts import PROMPT_VERSIONS
from graph_schema.kinds import RelationKind
from graph_schema.models import Evidence, Product, Provenance, Relation

Source = Literal["llm", "copurchase", "neighbour", "category", "similarity", "retrieval", "same_leaf"]
SOURCES: Final[tuple[Source, ...]] = get_args(Source)
BEHAVIOUR_SOURCES: Final[frozenset[Source]] = frozenset({"copurchase", "neighbour", "category"})

Term = Literal["llm", "behaviour", "similarity", "retrieval", "same_leaf"]
WEIGHTS: Final[Mapping[RelationKind, Mapping[Term, float]]] = {
    # Complements: the judge first, then being bought together; text similarity only as compatibility
    # ("EN-EL15 battery" <-> "Nikon D7100"), and the retrieval match of the proposed phrase.
    "complement": {"llm": 0.50, "behaviour": 0.35, "similarity": 0.10, "retrieval": 0.05},
    # Substitutes: comparable items look alike and sit on the same shelf.
    "substitute": {"llm": 0.45, "similarity": 0.30, "same_leaf": 0.20, "retrieval": 0.05},
}
"""Weights of the terms of the weighted mean. `behaviour` is one term: the noisy-OR of its available
sources (co-purchase, content-smoothed co-purchase, category co-purchase), because they are alternative
views of one observation (the order log), not independent votes."""

SAME_LEAF_COMPLEMENT_FACTOR: Final[float] = 0.6
"""Complements favour a different leaf category: two cases are rarely bought for one phone."""
UNVERIFIED_DISCOUNT: Final[float] = 0.8
AFFINITY_FACTOR: Final[float] = 0.75
"""A complement found only by textual affinity (no order ever links the pair) is scored without the
behaviour term -- for a cold product, absence of orders is no evidence against -- and then discounted, so a
pair the order log supports ranks above one that merely shares names."""
COPURCHASE_SATURATION: Final[float] = 3.0
"""Orders at which co-purchase support reaches 1 - 1/e of its weight: 3 orders is a pattern, 1 is chance."""


def saturate(value: float, scale: float) -> float:
    """0 at 0, 1 - 1/e at `scale`, -> 1: counts add confidence with diminishing returns."""
    return 1.0 - math.exp(-max(value, 0.0) / scale)


def beyond_chance(lift: float | None) -> float:
    """1 - 1/lift: the share of the co-occurrence that chance does not explain (0 for lift <= 1)."""
    if lift is None or not math.isfinite(lift) or lift <= 1.0:
        return 0.0
    return 1.0 - 1.0 / lift


def copurchase_signal(count: int | None, lift: float | None) -> float:
    """Support times association: repeated pairs that are also more common than chance score high."""
    if not count:
        return 0.0
    return saturate(count, COPURCHASE_SATURATION) * beyond_chance(lift)


def noisy_or(values: Iterable[float | None]) -> float:
    miss = 1.0
    for value in values:
        miss *= 1.0 - clip01(value)
    return 1.0 - miss


def clip01(value: float | None) -> float:
    return 0.0 if value is None else min(max(value, 0.0), 1.0)


def combine(
    kind: RelationKind,
    signals: Mapping[Source, float | None],
    available: frozenset[Source],
    *,
    same_leaf: bool,
    near_duplicate: bool = False,
) -> float:
    """Weighted mean over the available terms (weights renormalized), then the kind factor.

    `signals[s]` is None when source s has no observation for this pair: treated as 0 unless s is `llm`."""
    if kind == "complement" and near_duplicate:
        return 0.0  # the same product twice is never a complement
    behaviour = [signals.get(s) for s in sorted(BEHAVIOUR_SOURCES & available)]
    terms: dict[Term, float | None] = {
        "llm": signals.get("llm") if "llm" in available else None,
        "behaviour": noisy_or(behaviour) if behaviour else None,
        "similarity": signals.get("similarity") if "similarity" in available else None,
        "retrieval": signals.get("retrieval") if "retrieval" in available else None,
        "same_leaf": 1.0 if same_leaf else 0.0,
    }
    present: dict[Term, bool] = {
        "llm": "llm" in available and signals.get("llm") is not None,
        "behaviour": bool(behaviour),
        "similarity": "similarity" in available,
        "retrieval": "retrieval" in available,
        "same_leaf": True,
    }
    total_weight = 0.0
    total = 0.0
    for term, weight in WEIGHTS[kind].items():
        if not present[term]:
            continue
        total_weight += weight
        total += weight * clip01(terms[term])
    if total_weight == 0.0:
        return 0.0
    score = total / total_weight
    if "llm" in available and signals.get("llm") is None:
        score *= UNVERIFIED_DISCOUNT
    if kind == "complement" and same_leaf:
        score *= SAME_LEAF_COMPLEMENT_FACTOR
    return min(max(score, 0.0), 1.0)


def template_reasons(
    kind: RelationKind,
    evidence: Evidence,
    *,
    category_pair: tuple[str, str] | None = None,
    category_count: int | None = None,
    neighbour_count: int | None = None,
    same_leaf_name: str | None = None,
) -> list[str]:
    """Reasons built from the evidence, most telling first (used alone without a model, after the LLM's)."""
    reasons: list[str] = []
    if evidence.copurchase_count:
        lift = f" (lift {evidence.lift:.1f})" if evidence.lift is not None else ""
        plural = "s" if evidence.copurchase_count != 1 else ""
        reasons.append(f"bought together in {evidence.copurchase_count} order{plural}{lift}")
    if evidence.query:
        reasons.append(f"matches '{evidence.query[:200]}'")
    if neighbour_count:
        reasons.append(f"bought with {neighbour_count} similar product{'s' if neighbour_count != 1 else ''}")
    if category_pair is not None and category_count:
        a, b = (name[:100] for name in category_pair)
        reasons.append(f"'{a}' and '{b}' are bought together in {category_count} orders")
    if evidence.text_similarity is not None:
        if kind == "substitute" and same_leaf_name:
            reasons.append(
                f"similar: same category '{same_leaf_name[:100]}', {evidence.text_similarity:.2f} text similarity"
            )
        elif kind == "substitute":
            reasons.append(f"similar: {evidence.text_similarity:.2f} text similarity")
        elif evidence.text_similarity >= 0.5:
            reasons.append(f"related names: {evidence.text_similarity:.2f} text similarity")
    if not reasons:
        reasons.append("related by the catalog's category structure" if kind == "complement" else "comparable item")
    return reasons


# ============================================================================================ candidates -> relations


def signals_of(candidate: Candidate) -> dict[Source, float | None]:
    return {
        "llm": candidate.llm_score,
        "copurchase": copurchase_signal(candidate.copurchase_count, candidate.lift),
        "neighbour": candidate.neighbour,
        "category": candidate.category_score,
        "similarity": candidate.text_similarity,
        "retrieval": candidate.retrieval_score,
        "same_leaf": 1.0 if candidate.same_leaf else 0.0,
    }


def _affinity_only(candidate: Candidate) -> bool:
    return candidate.origins == ("affinity",)


def _score(candidate: Candidate, available: frozenset[Source]) -> float:
    if _affinity_only(candidate):
        available = available - BEHAVIOUR_SOURCES
    score = combine(candidate.kind, signals_of(candidate), available, same_leaf=candidate.same_leaf,
                    near_duplicate=candidate.near_duplicate)
    return score * AFFINITY_FACTOR if _affinity_only(candidate) else score


def prescore(candidate: Candidate, available: frozenset[Source]) -> float:
    """The score without the judge: what decides which pairs the judge sees."""
    return _score(candidate, available - {"llm"})


def final_score(candidate: Candidate, available: frozenset[Source]) -> float:
    return _score(candidate, available)


def evidence_of(candidate: Candidate, available: frozenset[Source]) -> Evidence:
    behaviour = "copurchase" in available
    return Evidence(
        llm_score=candidate.llm_score,
        copurchase_count=candidate.copurchase_count if candidate.copurchase_count else (0 if behaviour else None),
        lift=candidate.lift if candidate.lift is not None and math.isfinite(candidate.lift) else None,
        pmi=candidate.pmi if candidate.pmi is not None and math.isfinite(candidate.pmi) else None,
        text_similarity=None if candidate.text_similarity is None else max(min(candidate.text_similarity, 1.0), -1.0),
        retrieval_score=candidate.retrieval_score,
        query=candidate.query,
    )


def reasons_of(candidate: Candidate, evidence: Evidence, *, source_leaf: str | None = None) -> tuple[str, ...]:
    reasons: list[str] = []
    if candidate.llm_reason:
        reasons.append(candidate.llm_reason[:300])
    category_pair = (
        (candidate.category_a, candidate.category_b)
        if candidate.category_a is not None and candidate.category_b is not None
        else None
    )
    for reason in template_reasons(
        candidate.kind, evidence, category_pair=category_pair, category_count=candidate.category_count,
        neighbour_count=candidate.neighbour_count, same_leaf_name=source_leaf if candidate.same_leaf else None,
    ):
        if reason not in reasons:
            reasons.append(reason)
    return tuple(reasons[:5])


def best_per_source(
    candidates: Sequence[Candidate], available: frozenset[Source], *, max_complements: int, max_substitutes: int
) -> tuple[list[tuple[float, Candidate]], int]:
    """Each source's best 2x-cap candidates per kind. The rest could never survive pruning (the cap keeps
    fewer), so they are counted in the stage report instead of each becoming a Relation and a Rejection."""
    best, scores, cut = best_table(CandidateTable.of(candidates), available, max_complements=max_complements,
                                   max_substitutes=max_substitutes)
    return list(zip(scores, best, strict=True)), cut


def best_table(
    candidates: CandidateTable, available: frozenset[Source], *, max_complements: int, max_substitutes: int
) -> tuple[CandidateTable, list[float], int]:
    """`best_per_source` over a table: (the kept candidates, their scores, how many were cut). Groups of
    (source, kind) in order of first appearance, each best score first (ties: target, then pool order).
    Each candidate is scored as it is read; none is held."""
    scores = np.fromiter((final_score(c, available) for c in candidates), dtype=np.float64, count=len(candidates))
    caps = pl.when(pl.col("kind") == "complement").then(2 * max_complements).otherwise(2 * max_substitutes)
    order = (candidates.frame.select("source", "kind", "target").with_row_index("_i")
             .with_columns(_score=pl.Series(scores), _group=pl.col("_i").min().over("source", "kind"))
             .sort(["_group", "_score", "target", "_i"], descending=[False, True, False, False])
             .filter(pl.int_range(pl.len()).over("_group") < caps))
    kept = order["_i"].to_numpy()
    return CandidateTable(candidates.frame[kept]), scores[kept].tolist(), len(candidates) - len(kept)


def to_relation(
    candidate: Candidate, available: frozenset[Source], run_id: str, model: str | None,
    by_id: Mapping[str, Product], score: float,
) -> Relation:
    evidence = evidence_of(candidate, available)
    judged = candidate.llm_score is not None
    proposed = "llm" in candidate.origins
    prompt_version = PROMPT_VERSIONS["verify"] if judged else PROMPT_VERSIONS["propose"] if proposed else None
    return share_fields_sets(Relation(
        source=candidate.source,
        target=candidate.target,
        kind=candidate.kind,
        score=round(score, 6),
        reasons=reasons_of(candidate, evidence, source_leaf=by_id[candidate.source].leaf_category),
        evidence=evidence,
        provenance=Provenance(run_id=run_id, model=(candidate.llm_model or model) if (judged or proposed) else None,
                              prompt_version=prompt_version, stage="+".join(candidate.origins)),
    ))
