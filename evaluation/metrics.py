"""Ranking metrics (Hit@k, Recall@k, NDCG@k with binary relevance), coverage, catalog coverage, relations
outside the catalog, and a cheap lexical check of reason text against annotated bundle intents.

Pure functions over ids and strings: no models, no I/O, so every number can be checked by hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from graph_schema.models import Relation


def top_k(ranked: Sequence[str], k: int, query: str | None = None) -> list[str]:
    """The first k distinct ids of `ranked`, the query itself left out (a system may not score by
    recommending the item the shopper is looking at, nor by repeating one hit twice)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    seen: set[str] = set()
    out: list[str] = []
    for pid in ranked:
        if pid == query or pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        if len(out) == k:
            break
    return out


def _check(relevant: Collection[str]) -> None:
    if not relevant:
        raise ValueError("a query needs at least one relevant answer (queries without one are not scored)")


def hit_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 when any of the top k is relevant, else 0.0."""
    _check(relevant)
    return 1.0 if any(pid in relevant for pid in top_k(ranked, k)) else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant ids in the top k over all relevant ids."""
    _check(relevant)
    return sum(pid in relevant for pid in top_k(ranked, k)) / len(set(relevant))


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """DCG (gain 1 / log2(rank + 1)) of the top k over the ideal DCG of min(k, |relevant|) hits."""
    _check(relevant)
    dcg = sum(1.0 / math.log2(rank + 2) for rank, pid in enumerate(top_k(ranked, k)) if pid in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(set(relevant)))))
    return dcg / ideal


@dataclass(frozen=True)
class QueryScore:
    """One query's outcome; `answered` is False when the system returned nothing for it."""

    query: str
    hit: float
    recall: float
    ndcg: float
    answered: bool


class RankingMetrics(BaseModel):
    """Means over queries. Unanswered queries count as misses in hit/recall/ndcg (not dropped), and
    `unanswered` = 1 - `coverage` is the share of queries that got an empty list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(ge=1)
    queries: int = Field(ge=0)
    hit: float
    recall: float
    ndcg: float
    coverage: float
    unanswered: float
    catalog_coverage: float
    """Share of catalog products that appear in at least one top-k list."""

    def as_dict(self) -> dict[str, float | int]:
        k = self.k
        return {
            f"hit@{k}": round(self.hit, 6),
            f"recall@{k}": round(self.recall, 6),
            f"ndcg@{k}": round(self.ndcg, 6),
            "coverage": round(self.coverage, 6),
            "unanswered": round(self.unanswered, 6),
            "catalog_coverage": round(self.catalog_coverage, 6),
            "queries": self.queries,
        }


def score_query(query: str, ranked: Sequence[str], relevant: Collection[str], k: int) -> QueryScore:
    top = top_k(ranked, k, query)
    return QueryScore(query, hit_at_k(top, relevant, k), recall_at_k(top, relevant, k), ndcg_at_k(top, relevant, k),
                      answered=bool(top))


def score_rankings(
    queries: Sequence[tuple[str, Collection[str]]],
    rankings: Sequence[Sequence[str]],
    k: int,
    catalog_size: int,
) -> tuple[RankingMetrics, list[QueryScore]]:
    """Score one ranked list per (query id, relevant ids). Returns the means and the per-query scores."""
    if len(queries) != len(rankings):
        raise ValueError(f"{len(queries)} queries but {len(rankings)} rankings")
    if catalog_size < 1:
        raise ValueError("catalog_size must be >= 1")
    scores = [score_query(q, ranked, relevant, k) for (q, relevant), ranked in zip(queries, rankings)]
    shown: set[str] = set()
    for (q, _), ranked in zip(queries, rankings):
        shown.update(top_k(ranked, k, q))
    n = len(scores)

    def mean(values: Iterable[float]) -> float:
        return sum(values) / n if n else 0.0

    coverage = mean(1.0 if s.answered else 0.0 for s in scores)
    metrics = RankingMetrics(
        k=k, queries=n, hit=mean(s.hit for s in scores), recall=mean(s.recall for s in scores),
        ndcg=mean(s.ndcg for s in scores), coverage=coverage, unanswered=(1.0 - coverage) if n else 0.0,
        catalog_coverage=min(len(shown) / catalog_size, 1.0),
    )
    return metrics, scores


def outside_catalog_share(relations: Sequence[Relation], catalog_ids: Collection[str]) -> float:
    """Share of relations whose source or target is not a catalog id (a correct graph has 0.0)."""
    if not relations:
        return 0.0
    outside = sum(r.source not in catalog_ids or r.target not in catalog_ids for r in relations)
    return outside / len(relations)


# ------------------------------------------------------------------------------------------- reason quality

STOPWORDS: Final[frozenset[str]] = frozenset(
    """a about above after again all also am an and any are as at be because been being below between both but
    by can could did do does doing down during each few for from further had has have having he her here hers
    him his how i if in into is it its itself just me more most my no nor not now of off on once only or other
    our out over own same she should so some such than that the their them then there these they this those
    through to too under until up very was we were what when where which while who whom why will with would you
    your yours use used using one two get go goes going well new like need needs set""".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    """A few suffix rules, enough to match "batteries" with "battery" and "cables" with "cable"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    return word


def content_words(text: str) -> frozenset[str]:
    """Lower-cased, stemmed tokens of `text` without stopwords, single letters and bare numbers."""
    words = set()
    for token in _TOKEN.findall(text.lower()):
        if len(token) < 2 or token in STOPWORDS or token.isdigit():
            continue
        words.add(stem(token))
    return frozenset(words)


def shares_content_word(reasons: Sequence[str], intent: str) -> bool:
    intent_words = content_words(intent)
    return any(content_words(reason) & intent_words for reason in reasons)


class ReasonQuality(BaseModel):
    """Of the relevant answers the graph hit (with an annotated intent), how many had a reason sharing a
    content word with that intent. Lexical, so a rough floor: "fits the Nikon D7100" vs "camera gear" is 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hits: int = Field(ge=0)
    overlapping: int = Field(ge=0)
    share: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"hits": self.hits, "overlapping": self.overlapping,
                "share": round(self.share, 6) if self.share is not None else None}


def reason_quality(pairs: Iterable[tuple[Sequence[str], str]]) -> ReasonQuality:
    """`pairs`: (reasons of a served relation that hit, intent of the bundle it hit in)."""
    hits = overlapping = 0
    for reasons, intent in pairs:
        hits += 1
        overlapping += shares_content_word(reasons, intent)
    return ReasonQuality(hits=hits, overlapping=overlapping, share=overlapping / hits if hits else None)
