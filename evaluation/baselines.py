"""The four reference rankers every graph is compared with, computed from the same training behaviour.

popularity: most bought training items; category_popularity: most bought items of the query's leaf category,
then of its parent category; cooccurrence: items most often in a training basket with the query;
text_similarity: nearest catalog items by text embedding alone. No ranker ever sees held-out data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, Protocol

import polars as pl

from distill.evidence.behaviour import CoPurchase
from graph_schema.models import Product

if TYPE_CHECKING:
    from distill.evidence.retrieval import CatalogRetriever

BaselineName = Literal["popularity", "category_popularity", "cooccurrence", "text_similarity"]
BASELINE_NAMES: Final[tuple[BaselineName, ...]] = (
    "popularity", "category_popularity", "cooccurrence", "text_similarity",
)


_NO_BASKET_CAP: Final = 2**31 - 1


class Ranker(Protocol):
    def rank(self, query_ids: Sequence[str], k: int) -> list[list[str]]:
        """The top-k ids per query, best first, the query itself excluded."""
        ...


def _by_popularity(ids: Sequence[str], counts: Mapping[str, int]) -> list[str]:
    # Ties broken by id so every run ranks the same way.
    return sorted(ids, key=lambda pid: (-counts.get(pid, 0), pid))


def _head(ranked: Sequence[str], query: str, k: int) -> list[str]:
    return [pid for pid in ranked if pid != query][:k]


class PopularityBaseline:
    def __init__(self, counts: Mapping[str, int], catalog_ids: Sequence[str]) -> None:
        self._ranked = _by_popularity([pid for pid in catalog_ids if counts.get(pid, 0) > 0], counts)

    def rank(self, query_ids: Sequence[str], k: int) -> list[list[str]]:
        head = self._ranked[: k + 1]
        return [_head(head, q, k) for q in query_ids]


class CategoryPopularityBaseline:
    """Leaf category first; when it holds fewer than k bought items, the rest of the parent category fills."""

    def __init__(self, counts: Mapping[str, int], products: Sequence[Product]) -> None:
        self._category = {p.id: p.category for p in products}
        by_path: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for p in products:
            if counts.get(p.id, 0) > 0 and p.category:
                # Indexed under its own path and its parent path, so both lookups are one dict access.
                by_path[p.category].append(p.id)
                if len(p.category) > 1:
                    by_path[("__parent__", *p.category[:-1])].append(p.id)
        self._ranked = {path: _by_popularity(ids, counts) for path, ids in by_path.items()}

    def rank(self, query_ids: Sequence[str], k: int) -> list[list[str]]:
        out = []
        for q in query_ids:
            path = self._category.get(q, ())
            ranked = list(self._ranked.get(path, ()))[: k + 1] if path else []
            if len(_head(ranked, q, k)) < k and len(path) > 1:
                parent = self._ranked.get(("__parent__", *path[:-1]), [])
                ranked = list(dict.fromkeys([*ranked, *parent[: 2 * k + 1]]))
            out.append(_head(ranked, q, k))
        return out


class CooccurrenceBaseline:
    """Partners by number of shared training baskets (ties: more popular first, then id)."""

    def __init__(self, copurchase: CoPurchase) -> None:
        popularity = copurchase.popularity_counts.rename({"product_id": "b", "n": "pop"})
        ranked = (
            copurchase.pairs.select("a", "b", "count")
            .join(popularity, on="b", how="left")
            .sort(["a", "count", "pop", "b"], descending=[False, True, True, False])
        )
        grouped = ranked.group_by("a", maintain_order=True).agg(pl.col("b"))
        self._partners: dict[str, list[str]] = dict(zip(grouped["a"].to_list(), grouped["b"].to_list(), strict=True))

    def rank(self, query_ids: Sequence[str], k: int) -> list[list[str]]:
        return [self._partners.get(q, [])[:k] for q in query_ids]


class TextSimilarityBaseline:
    """Nearest neighbours by the retriever's text embedding (BM25 of the product text without an encoder)."""

    def __init__(self, retriever: CatalogRetriever) -> None:
        self._retriever = retriever

    def rank(self, query_ids: Sequence[str], k: int) -> list[list[str]]:
        known = [q for q in query_ids if q in self._retriever]
        unique = list(dict.fromkeys(known))
        hits = dict(zip(unique, self._retriever.similar(unique, k), strict=True))
        return [[h.product_id for h in hits[q]][:k] if q in hits else [] for q in query_ids]


def build_baselines(
    train_baskets: pl.DataFrame, products: Sequence[Product], retriever: CatalogRetriever | None
) -> dict[BaselineName, Ranker]:
    """Every baseline over the same training baskets; text_similarity only when a retriever is given."""
    # The pipeline's own counting, without its basket-size cap or minimum support: the baselines are the raw
    # training behaviour.
    copurchase = CoPurchase.from_baskets(train_baskets, min_support=1, max_basket_size=_NO_BASKET_CAP)
    counts = copurchase.popularity()
    rankers: dict[BaselineName, Ranker] = {
        "popularity": PopularityBaseline(counts, [p.id for p in products]),
        "category_popularity": CategoryPopularityBaseline(counts, products),
        "cooccurrence": CooccurrenceBaseline(copurchase),
    }
    if retriever is not None:
        rankers["text_similarity"] = TextSimilarityBaseline(retriever)
    return rankers
