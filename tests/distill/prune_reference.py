"""The object-by-object prune the columnar `distill.stages.prune.prune` replaced (as it was at eece92c), kept
as the reference the columnar one must agree with (tests/distill/test_prune_columnar.py). Not used by the
pipeline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from distill.compact import share_fields_sets
from graph_schema.models import Product, Rejection, Relation

PRUNE_STAGE: Final = "prune"
MAX_MERGED_REASONS: Final = 3


@dataclass(frozen=True)
class PruneResult:
    relations: list[Relation]
    rejections: list[Rejection]


def _reject(relation: Relation, reason: str, detail: str | None = None) -> Rejection:
    # The whole relation travels in `raw`, so a rejected edge can be inspected or restored as it was.
    item = f"{relation.source}->{relation.target} ({relation.kind})"
    return share_fields_sets(Rejection(stage=PRUNE_STAGE, item=item if detail is None else f"{item}: {detail}",
                                       reason=reason, raw=relation.model_dump_json()))


def _merge(copies: list[Relation]) -> tuple[Relation, list[Relation]]:
    """(best-scored copy with the reasons of all copies, best first, at most 3 unless the best alone has
    more; the other copies). The kept copy's evidence and provenance are the best one's."""
    ranked = sorted(copies, key=lambda r: -r.score)
    limit = max(MAX_MERGED_REASONS, len(ranked[0].reasons))
    reasons: list[str] = []
    for copy in ranked:
        for reason in copy.reasons:
            if reason not in reasons and len(reasons) < limit:
                reasons.append(reason)
    best = ranked[0]
    if tuple(reasons) == best.reasons:
        return best, ranked[1:]
    return share_fields_sets(best.model_copy(update={"reasons": tuple(reasons)})), ranked[1:]


def _mirror(relation: Relation) -> Relation:
    return relation.model_copy(update={"source": relation.target, "target": relation.source})


def prune(
    relations: Sequence[Relation],
    products: Mapping[str, Product],
    *,
    max_complements: int,
    max_substitutes: int,
    min_score: float,
    min_complement_score: float | None = None,
    near_duplicates: set[frozenset[str]] | None = None,
) -> PruneResult:
    """Steps, in order: (1) self loops and ids not in `products`; (2) copies of one (source, target, kind)
    merged; (3) score < min_score (`min_complement_score` for complements when given); (4) complements between near-duplicate listings; (5) every substitute
    a->b gets its mirror b->a (same score, reasons, evidence) unless b->a survived on its own; (6) degree caps:
    each source keeps its `max_complements` best complements; substitute PAIRS are taken best first and a
    pair is kept only while BOTH ends are under `max_substitutes`, so the result stays symmetric."""
    if max_complements < 0 or max_substitutes < 0:
        raise ValueError("degree caps must be >= 0")
    near = near_duplicates or set()
    rejections: list[Rejection] = []

    groups: dict[tuple[str, str, str], list[Relation]] = defaultdict(list)
    for relation in relations:
        if relation.source == relation.target:
            rejections.append(_reject(relation, "self_loop"))
        elif relation.source not in products:
            rejections.append(_reject(relation, "unknown_source"))
        elif relation.target not in products:
            rejections.append(_reject(relation, "unknown_target"))
        else:
            groups[relation.key].append(relation)

    kept: dict[tuple[str, str, str], Relation] = {}
    for key, copies in groups.items():
        merged, extra = _merge(copies)
        rejections.extend(_reject(c, "duplicate", f"merged into the copy scored {merged.score:.3f}") for c in extra)
        floor = min_score if merged.kind == "substitute" or min_complement_score is None else min_complement_score
        if merged.score < floor:
            rejections.append(_reject(merged, "below_threshold", f"{merged.score:.3f} < {floor:.3f}"))
        elif merged.kind == "complement" and frozenset((merged.source, merged.target)) in near:
            rejections.append(_reject(merged, "near_duplicate_complement"))
        else:
            kept[key] = merged

    for (source, target, kind), relation in list(kept.items()):
        if kind == "substitute" and (target, source, kind) not in kept:
            kept[(target, source, kind)] = _mirror(relation)

    out: list[Relation] = []
    out.extend(_cap_complements([r for r in kept.values() if r.kind == "complement"], max_complements, rejections))
    out.extend(_cap_substitutes([r for r in kept.values() if r.kind == "substitute"], max_substitutes, rejections))
    out.sort(key=lambda r: (r.source, r.kind, -r.score, r.target))
    return PruneResult(relations=out, rejections=rejections)


def _cap_complements(relations: list[Relation], cap: int, rejections: list[Rejection]) -> list[Relation]:
    by_source: dict[str, list[Relation]] = defaultdict(list)
    for relation in relations:
        by_source[relation.source].append(relation)
    out: list[Relation] = []
    for edges in by_source.values():
        edges.sort(key=lambda r: (-r.score, r.target))
        out.extend(edges[:cap])
        rejections.extend(_reject(r, "over_degree_cap", f"source already has {cap} complements") for r in edges[cap:])
    return out


def _cap_substitutes(relations: list[Relation], cap: int, rejections: list[Rejection]) -> list[Relation]:
    """Greedy over pairs, best pair score (max of the two directions) first: a pair needs room at both ends.
    Input is already symmetric, so every pair has both directions."""
    by_pair: dict[frozenset[str], list[Relation]] = defaultdict(list)
    for relation in relations:
        by_pair[frozenset((relation.source, relation.target))].append(relation)
    order = sorted(by_pair.items(), key=lambda item: (-max(r.score for r in item[1]), sorted(item[0])))
    degree: dict[str, int] = defaultdict(int)
    out: list[Relation] = []
    for pair, edges in order:
        a, b = sorted(pair)
        if degree[a] < cap and degree[b] < cap:
            degree[a] += 1
            degree[b] += 1
            out.extend(edges)
        else:
            full = a if degree[a] >= cap else b
            rejections.extend(_reject(r, "over_degree_cap", f"{full} already has {cap} substitutes") for r in edges)
    return out


