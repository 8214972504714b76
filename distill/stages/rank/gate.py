"""The nightly quality gate: before a new version replaces the current one, both are scored on the same
label fold of the interactions (the evaluation protocol replayed on the shop's own baskets). A version
clearly worse than the current one is not published. Pure; the caller decides what to do with the verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from distill.stages.rank.labels import split_baskets
from graph_schema.models import Relation

K = 10
Z_CLEAR = 2.0
"""Standard errors a drop must exceed to count (about 97.5% one-sided under a normal approximation)."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    new_ndcg: float
    current_ndcg: float
    new_hit: float
    current_hit: float
    groups: int
    reason: str


def _top(relations: Iterable[Relation], k: int) -> dict[str, list[str]]:
    lists: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for r in relations:
        if r.kind == "complement":
            lists[r.source].append((-r.score, r.target))
    return {s: [t for _, t in sorted(v)[:k]] for s, v in lists.items()}


def _score(top: dict[str, list[str]], groups: list[tuple[str, frozenset[str]]], k: int) -> tuple[float, list[float]]:
    """Hit@k and the per-query NDCG@k."""
    hits = 0.0
    ndcgs: list[float] = []
    for source, relevant in groups:
        ranked = top.get(source, [])
        dcg = sum(1.0 / math.log2(i + 2) for i, t in enumerate(ranked[:k]) if t in relevant)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        hits += 1.0 if dcg > 0 else 0.0
        ndcgs.append(dcg / ideal)
    return hits / max(len(groups), 1), ndcgs


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of the per-query differences a - b and its standard error (0 with fewer than two queries)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1) / max(len(diffs), 1))
    return mean, spread


def label_queries(baskets: pl.DataFrame, max_basket_size: int = 50) -> list[tuple[str, frozenset[str]]]:
    """Every item of a fold-0 label basket with the rest of its basket as its answers."""
    labels = split_baskets(baskets, 0).labels
    out: list[tuple[str, frozenset[str]]] = []
    for items in labels.group_by("basket_id").agg(pl.col("product_id")).sort("basket_id")["product_id"].to_list():
        unique = sorted(set(items))
        if 2 <= len(unique) <= max_basket_size:
            out.extend((s, frozenset(unique) - {s}) for s in unique)
    return out


def quality_gate(new: Iterable[Relation], current: Iterable[Relation], baskets: pl.DataFrame | None, *,
                 max_drop: float, k: int = K) -> GateResult:
    """Passed unless the new version's NDCG@k on the label fold falls more than `max_drop` (a share) below
    the current version's. Without interactions there is nothing to judge by, and the gate passes."""
    groups = label_queries(baskets) if baskets is not None and baskets.height else []
    if not groups:
        return GateResult(True, 0.0, 0.0, 0.0, 0.0, 0, "no interactions to judge the new version by")
    new_hit, new_each = _score(_top(new, k), groups, k)
    cur_hit, cur_each = _score(_top(current, k), groups, k)
    new_ndcg, cur_ndcg = sum(new_each) / len(groups), sum(cur_each) / len(groups)
    floor = cur_ndcg * (1.0 - max_drop)
    # "Clearly worse": below the floor AND a paired drop beyond noise (Z_CLEAR standard errors), so a small
    # log's few label queries do not refuse a version by chance.
    mean, spread = paired_difference(cur_each, new_each)
    significant = mean > Z_CLEAR * spread
    passed = new_ndcg >= floor or not significant
    verdict = "passed" if passed else "refused"
    return GateResult(
        passed, new_ndcg, cur_ndcg, new_hit, cur_hit, len(groups),
        f"quality gate {verdict}: NDCG@{k} {new_ndcg:.4f} (hit {new_hit:.3f}) vs current {cur_ndcg:.4f} "
        f"(hit {cur_hit:.3f}) on {len(groups)} label queries; the floor is {floor:.4f} "
        f"(at most {max_drop:.0%} below the current version); paired drop {mean:.4f} +- {spread:.4f}",
    )
