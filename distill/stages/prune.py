"""The last gate before publishing: drop invalid, weak, duplicate and excess relations, make substitutes
symmetric, and find near-duplicate listings (never each other's complements). Every dropped relation is
returned as a Rejection with its reason; nothing is removed silently. No scoring happens here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from graph_schema.models import Product, Relation
from graph_schema.relation_table import RejectedRelations, RelationTable
from graph_schema.tables import EDGE_SCHEMA, edges_frame, relation_from_row

if TYPE_CHECKING:
    from distill.evidence.retrieval import CatalogRetriever

PRUNE_STAGE: Final = "prune"
MAX_MERGED_REASONS: Final = 3

PruneReason = Literal[
    "below_threshold", "self_loop", "unknown_source", "unknown_target", "near_duplicate_complement",
    "over_degree_cap", "duplicate",
]


@dataclass(frozen=True)
class PruneResult:
    relations: RelationTable
    rejections: RejectedRelations


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
    return best.model_copy(update={"reasons": tuple(reasons)}), ranked[1:]


_EDGE_COLUMNS: Final = list(EDGE_SCHEMA)
_KEY: Final = ["source", "target", "kind"]


def _refused(frame: pl.DataFrame, reason: PruneReason, detail: str | list[str] | None = None) -> pl.DataFrame:
    """Rows of `frame` as REJECTED_SCHEMA rows with one reason (and a detail per row, or one for all)."""
    details = detail if isinstance(detail, list) else [detail] * frame.height
    return frame.select(_EDGE_COLUMNS).with_columns(reason=pl.lit(reason, pl.String),
                                                    detail=pl.Series("detail", details, dtype=pl.String))


def prune(
    relations: Sequence[Relation] | RelationTable,
    products: Mapping[str, Product],
    *,
    max_complements: int,
    max_substitutes: int,
    min_score: float,
    min_complement_score: float | None = None,
    near_duplicates: set[frozenset[str]] | None = None,
) -> PruneResult:
    """Steps, in order: (1) self loops and ids not in `products`; (2) copies of one (source, target, kind)
    merged; (3) score < min_score (`min_complement_score` for complements when given); (4) complements between
    near-duplicate listings; (5) every substitute a->b gets its mirror b->a (same score, reasons, evidence)
    unless b->a survived on its own; (6) degree caps: each source keeps its `max_complements` best complements;
    substitute PAIRS are taken best first and a pair is kept only while BOTH ends are under `max_substitutes`,
    so the result stays symmetric. Output sorted by (source, kind, score descending, target).

    Works on the columns (a run's million relations are never a million objects here); only copies of one key,
    which are rare, are merged as `Relation`s."""
    if max_complements < 0 or max_substitutes < 0:
        raise ValueError("degree caps must be >= 0")
    frame = edges_frame(relations).with_row_index("_i")
    refused: list[pl.DataFrame] = []

    known = pl.Series("known", list(products), dtype=pl.String).implode()
    loop = pl.col("source") == pl.col("target")
    no_source = ~loop & ~pl.col("source").is_in(known)
    no_target = ~loop & pl.col("source").is_in(known) & ~pl.col("target").is_in(known)
    for condition, why in ((loop, "self_loop"), (no_source, "unknown_source"), (no_target, "unknown_target")):
        refused.append(_refused(frame.filter(condition), why))  # type: ignore[arg-type]
    frame = frame.filter(~loop & pl.col("source").is_in(known) & pl.col("target").is_in(known))

    merged, duplicates = _merge_copies(frame)
    offset = frame.height  # mirrors are numbered after every relation
    del frame  # each step below holds one copy of the relations at a time (a run's are about a million)
    refused.append(duplicates)
    floor = pl.when((pl.col("kind") == "substitute") | pl.lit(min_complement_score is None)).then(
        pl.lit(min_score)).otherwise(pl.lit(min_complement_score if min_complement_score is not None else min_score))
    merged = merged.with_columns(_floor=floor)
    below = merged.filter(pl.col("score") < pl.col("_floor"))
    refused.append(_refused(below, "below_threshold", [
        f"{score:.3f} < {limit:.3f}" for score, limit in zip(below["score"], below["_floor"], strict=True)]))
    kept = merged.filter(pl.col("score") >= pl.col("_floor")).drop("_floor")
    del merged, below
    near = _near_pairs(near_duplicates or set())
    near_complement = kept.join(near, on=["source", "target"], how="semi").filter(pl.col("kind") == "complement")
    refused.append(_refused(near_complement, "near_duplicate_complement"))
    kept = kept.join(near_complement.select(_KEY), on=_KEY, how="anti")

    substitutes = kept.filter(pl.col("kind") == "substitute")
    reverse = substitutes.select(source=pl.col("target"), target=pl.col("source"))
    mirrors = (substitutes.join(reverse, on=["source", "target"], how="anti")
               .with_columns(source=pl.col("target"), target=pl.col("source"), _i=pl.col("_i") + offset))
    substitutes = pl.concat([substitutes, mirrors]).sort("_i")

    complements, over = _cap_complements(kept.filter(pl.col("kind") == "complement"), max_complements)
    del kept, reverse, mirrors
    refused.append(over)
    substitutes, over = _cap_substitutes(substitutes, max_substitutes)
    refused.append(over)
    out = pl.concat([complements, substitutes])
    del complements, substitutes
    out = out.sort(["source", "kind", "score", "target"], descending=[False, False, True, False]).select(_EDGE_COLUMNS)
    return PruneResult(relations=RelationTable(out), rejections=RejectedRelations.concat(PRUNE_STAGE, refused))


def _merge_copies(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one row per key: a key's copies merged by `_merge`, at the row of its first copy; the other copies as
    `duplicate` rows)."""
    copies = pl.len().over(_KEY) > 1
    many = frame.filter(copies)
    if not many.height:
        return frame, _refused(many, "duplicate")
    groups: dict[tuple[str, str, str], list[Relation]] = {}
    first: dict[tuple[str, str, str], int] = {}
    for row in many.iter_rows(named=True):
        relation = relation_from_row(row)
        groups.setdefault(relation.key, []).append(relation)
        first.setdefault(relation.key, row["_i"])
    best: list[Relation] = []
    extra: list[Relation] = []
    details: list[str] = []
    for copies_of_key in groups.values():
        kept, others = _merge(copies_of_key)
        best.append(kept)
        extra.extend(others)
        details.extend(f"merged into the copy scored {kept.score:.3f}" for _ in others)
    merged = edges_frame(best).with_columns(_i=pl.Series([first[r.key] for r in best], dtype=pl.UInt32))
    together = pl.concat([frame.filter(~copies), merged.select(frame.columns)]).sort("_i")
    return together, _refused(edges_frame(extra), "duplicate", details)


def _near_pairs(near: set[frozenset[str]]) -> pl.DataFrame:
    pairs = [tuple(sorted(pair)) for pair in near if len(pair) == 2]
    return pl.DataFrame([*pairs, *[(b, a) for a, b in pairs]], schema={"source": pl.String, "target": pl.String},
                        orient="row")


def _cap_complements(relations: pl.DataFrame, cap: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each source's `cap` best complements (score descending, then target); the rest refused."""
    ranked = relations.sort(["source", "score", "target"], descending=[False, True, False]).with_columns(
        _rank=pl.int_range(pl.len()).over("source"))
    over = ranked.filter(pl.col("_rank") >= cap)
    return (ranked.filter(pl.col("_rank") < cap).drop("_rank"),
            _refused(over, "over_degree_cap", f"source already has {cap} complements"))


def _cap_substitutes(relations: pl.DataFrame, cap: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Greedy over pairs, best pair score (max of the two directions) first, then the pair's ids: a pair needs
    room at both ends. Input is already symmetric, so every pair has both directions."""
    ends = relations.with_columns(a=pl.min_horizontal("source", "target"), b=pl.max_horizontal("source", "target"))
    pairs = (ends.group_by("a", "b").agg(best=pl.col("score").max())
             .sort(["best", "a", "b"], descending=[True, False, False]))
    degree: dict[str, int] = defaultdict(int)
    full: list[str | None] = []
    for a, b in zip(pairs["a"].to_list(), pairs["b"].to_list(), strict=True):
        if degree[a] < cap and degree[b] < cap:
            degree[a] += 1
            degree[b] += 1
            full.append(None)
        else:
            full.append(a if degree[a] >= cap else b)
    decided = ends.join(pairs.select("a", "b", full=pl.Series("full", full, dtype=pl.String)), on=["a", "b"])
    over = decided.filter(pl.col("full").is_not_null()).sort("_i")
    details = [f"{end} already has {cap} substitutes" for end in over["full"]]
    return decided.filter(pl.col("full").is_null()).select(relations.columns), _refused(over, "over_degree_cap", details)


# ============================================================================================ near duplicates

_PUNCT = re.compile(r"[^\w]+", re.UNICODE)
DEFAULT_NEAR_DUPLICATE_THRESHOLD: Final = 0.97


def normalized_title(title: str) -> str:
    """Case, punctuation and spacing folded: 'Apple iPhone 15 - 128GB' == 'apple iphone 15 128gb'."""
    return " ".join(_PUNCT.sub(" ", title.casefold()).split())


def _same_listing_facts(a: Product, b: Product) -> bool:
    """Same leaf category, and the same brand when both name one."""
    if a.leaf_category != b.leaf_category:
        return False
    if a.brand and b.brand:
        return normalized_title(a.brand) == normalized_title(b.brand)
    return True


def find_near_duplicates(
    products: Sequence[Product],
    retriever_or_embeddings: CatalogRetriever | npt.NDArray[np.float32] | None,
    *,
    threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    chunk: int = 1024,
) -> set[frozenset[str]]:
    """Pairs of products that are one item listed twice: equal normalized titles, or embedding cosine >=
    `threshold` with the same leaf category and brand. Accepts a CatalogRetriever (its embeddings, matched by
    id) or an (n, d) L2-normalized array aligned with `products`; None or a BM25-only retriever means titles only."""
    pairs: set[frozenset[str]] = set()
    by_title: dict[str, list[str]] = defaultdict(list)
    for product in products:
        by_title[normalized_title(product.title)].append(product.id)
    for ids in by_title.values():
        unique = sorted(set(ids))
        pairs.update(frozenset((x, y)) for i, x in enumerate(unique) for y in unique[i + 1 :])

    vectors = _aligned_embeddings(products, retriever_or_embeddings)
    if vectors is None:
        return pairs
    for start in range(0, len(products), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        for i, j in zip((rows + start).tolist(), cols.tolist(), strict=True):
            if i < j and _same_listing_facts(products[i], products[j]) and products[i].id != products[j].id:
                pairs.add(frozenset((products[i].id, products[j].id)))
    return pairs


def _aligned_embeddings(
    products: Sequence[Product], source: CatalogRetriever | npt.NDArray[np.float32] | None
) -> npt.NDArray[np.float32] | None:
    if source is None:
        return None
    if isinstance(source, np.ndarray):
        if source.ndim != 2 or source.shape[0] != len(products):
            raise ValueError(f"embeddings must be (n_products={len(products)}, d), got {source.shape}")
        return source.astype(np.float32, copy=False)
    if source.embeddings is None:
        return None
    row = {pid: i for i, pid in enumerate(source.ids)}
    missing = [p.id for p in products if p.id not in row]
    if missing:
        raise ValueError(f"{len(missing)} products are not in the retriever's catalog, e.g. {missing[:3]}")
    return source.embeddings[[row[p.id] for p in products]]


def near_duplicate_groups(pairs: Iterable[frozenset[str]]) -> list[set[str]]:
    """Connected groups of near-duplicate pairs (A~B and B~C make one listing group), for reports."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pair in pairs:
        a, *rest = sorted(pair)
        for b in rest:
            parent[find(a)] = find(b)
    groups: dict[str, set[str]] = defaultdict(set)
    for x in parent:
        groups[find(x)].add(x)
    return sorted(groups.values(), key=lambda g: sorted(g))
