"""The candidate generators (model `distill.candidates.model`): what could be a complement or substitute.
Generates the model-free candidates (co-purchase, content-smoothed co-purchase, category
co-purchase, same-shelf similarity); the LLM path adds grounded proposals. No scores are final here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from distill.candidates.model import Candidate, CandidateTable, _construct
from graph_schema.models import Product

F32 = npt.NDArray[np.float32]

COMPATIBILITY_TEMPERATURE = 0.1
"""Softmax temperature over cosine within a category: 0.1 cosine apart = e (2.7x) more likely."""


def _new(**fields: Any) -> Candidate:
    """Build a candidate from values this module computed itself (ids from the catalog, floats from numpy):
    skips validation, which at 100k+ candidates per run costs more than the computation."""
    return _construct(fields)


# ============================================================================================ behaviour view


@dataclass(frozen=True)
class PairStat:
    other: str
    count: int
    lift: float
    pmi: float
    npmi: float


@dataclass(frozen=True)
class CategoryStat:
    other: str
    count: int
    lift: float
    npmi: float


@dataclass(frozen=True)
class BehaviourView:
    """Basket statistics the candidate generators read: every co-purchased partner of a product (support 1
    and up, the minimum support is applied by the generator that needs it), leaf-category co-purchase and
    product popularity. Built once per run from the (training) baskets."""

    partners: Mapping[str, Sequence[PairStat]]
    categories: Mapping[str, Sequence[CategoryStat]]
    popularity: Mapping[str, int]
    baskets: int


def build_behaviour(baskets: pl.DataFrame, products: Sequence[Product], *, max_basket: int = 50) -> BehaviourView:
    """Pair and leaf-category statistics of (basket_id, product_id) rows via distill.evidence.behaviour, at support 1:
    the content-smoothed generator needs every observed pair, the others apply the minimum support."""
    from distill.evidence.behaviour import CoPurchase

    copurchase = CoPurchase.from_baskets(baskets, min_support=1, max_basket_size=max_basket)
    pairs = copurchase.pairs.sort(["a", "count", "npmi", "b"], descending=[False, True, True, False])
    partners: dict[str, list[PairStat]] = defaultdict(list)
    for a, b, count, lift, pmi, npmi in pairs.select("a", "b", "count", "lift", "pmi", "npmi").iter_rows():
        partners[a].append(PairStat(b, int(count), float(lift), float(pmi), float(npmi)))
    by_category = copurchase.category_copurchase(products, min_support=1).sort(
        ["a", "npmi", "b"], descending=[False, True, False])
    categories: dict[str, list[CategoryStat]] = defaultdict(list)
    for a, b, count, lift, npmi in by_category.select("a", "b", "count", "lift", "npmi").iter_rows():
        categories[a].append(CategoryStat(b, int(count), float(lift), float(npmi)))
    return BehaviourView(partners=dict(partners), categories=dict(categories),
                         popularity=copurchase.popularity(), baskets=copurchase.baskets)


# ============================================================================================ generators


@dataclass(frozen=True)
class EmbeddingTable:
    """L2-normalized text embeddings of the catalog, row i = ids[i]."""

    ids: tuple[str, ...]
    vectors: F32

    def __post_init__(self) -> None:
        if self.vectors.shape[0] != len(self.ids):
            raise ValueError("one embedding row per id")

    def rows(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self.ids)}


def copurchase_candidates(
    sources: Iterable[Product], behaviour: BehaviourView, *, min_support: int, per_product: int,
    leaf: Mapping[str, str | None],
) -> list[Candidate]:
    """Products bought together with the source in at least `min_support` baskets."""
    out: list[Candidate] = []
    for product in sources:
        kept = [s for s in behaviour.partners.get(product.id, ()) if s.count >= min_support][:per_product]
        for stat in kept:
            out.append(_new(
                source=product.id, target=stat.other, kind="complement", origins=("copurchase",),
                same_leaf=leaf.get(product.id) is not None and leaf.get(product.id) == leaf.get(stat.other),
                copurchase_count=stat.count, lift=stat.lift, pmi=stat.pmi, npmi=stat.npmi,
            ))
    return out


def _top_k(scores: F32, k: int) -> npt.NDArray[np.intp]:
    if scores.shape[0] <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def neighbour_candidates(
    sources: Sequence[Product], behaviour: BehaviourView, embeddings: EmbeddingTable, *, neighbours: int,
    min_similarity: float, per_product: int, leaf: Mapping[str, str | None], block: int = 1024,
) -> list[Candidate]:
    """Content-smoothed co-purchase: score(q, t) = sum over the `neighbours` bought products n most similar
    to q (cosine >= min_similarity) of cos(q, n)^2 * [t was bought with n]. Reaches products q itself was
    never bought with (new or rare items), which is most of a sparse log."""
    bought = [pid for pid in embeddings.ids if behaviour.partners.get(pid)]
    if not bought or not sources:
        return []
    rows = embeddings.rows()
    bought_matrix = embeddings.vectors[[rows[pid] for pid in bought]]
    present = [p for p in sources if p.id in rows]
    out: list[Candidate] = []
    for start in range(0, len(present), block):
        chunk = present[start:start + block]
        sims = embeddings.vectors[[rows[p.id] for p in chunk]] @ bought_matrix.T
        for i, product in enumerate(chunk):
            scores: dict[str, float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            for j in _top_k(sims[i], neighbours + 1):
                sim = float(sims[i, j])
                nb = bought[j]
                if nb == product.id or sim < min_similarity:
                    continue
                for stat in behaviour.partners[nb]:
                    if stat.other == product.id:
                        continue
                    scores[stat.other] += sim * sim
                    counts[stat.other] += 1
            best = sorted(scores, key=lambda t: (-scores[t], t))[:per_product]
            for target in best:
                out.append(_new(
                    source=product.id, target=target, kind="complement", origins=("neighbour",),
                    same_leaf=leaf.get(product.id) is not None and leaf.get(product.id) == leaf.get(target),
                    neighbour=1.0 - math.exp(-scores[target]), neighbour_count=counts[target],
                ))
    return out


BLOCK_CELLS = 1 << 22
"""Cells (source rows x pool columns) of one block of a similarity/softmax matrix: 4M cells is 32 MB as
float64, so memory stays flat however large a leaf category grows (a dense 40k x 40k matrix was 6-13 GB)."""


MIN_BLOCK_ROWS = 64
"""BLAS multiplies very thin matrices (a few rows) with other kernels whose float32 sums can differ in the last
bit from the same rows inside a larger product; blocks of at least this many rows (a short tail joins the block
before it) give the same similarities, hence the same candidates, as one dense matrix."""


def _row_blocks(rows: int, pool_size: int, block: int | None) -> Iterator[tuple[int, int]]:
    """(start, stop) of source-row blocks: `block` rows if given, otherwise as many as fit BLOCK_CELLS for this
    pool; never fewer than MIN_BLOCK_ROWS (unless the group itself is smaller)."""
    if block is not None and block < 1:
        raise ValueError("block must be >= 1")
    step = max(MIN_BLOCK_ROWS, block if block is not None else BLOCK_CELLS // max(1, pool_size))
    start = 0
    while start < rows:
        stop = start + step
        if rows - stop < MIN_BLOCK_ROWS:
            stop = rows
        yield start, stop
        start = stop


def category_candidates(
    sources: Sequence[Product], behaviour: BehaviourView, embeddings: EmbeddingTable | None, *,
    members: Mapping[str, Sequence[str]], min_support: int, categories: int, per_category: int,
    leaf: Mapping[str, str | None], block: int | None = None,
) -> list[Candidate]:
    """Products of the leaf categories bought with the source's leaf category. Estimates the chance that an
    item bought with the source is c: P(c | A) = P(B | A) * P(c | B), with P(B | A) from leaf-category
    co-purchase (pairs above chance, lift > 1, with `min_support` baskets) and P(c | B, q) a softmax over
    B's products of log(Laplace-smoothed popularity share) + cos(q, c) / COMPATIBILITY_TEMPERATURE (text
    similarity stands for compatibility: brand, model, size). `category_score` is that estimate divided by
    the source's best, so in (0, 1]. Sources are taken `block` rows at a time (default: BLOCK_CELLS per
    block); each softmax needs only its own row, so the result does not depend on the block size."""
    rows = embeddings.rows() if embeddings is not None else {}
    out: list[Candidate] = []
    by_leaf: dict[str, list[Product]] = defaultdict(list)
    for product in sources:
        if product.leaf_category:
            by_leaf[product.leaf_category].append(product)
    for source_leaf, group in by_leaf.items():
        all_stats = behaviour.categories.get(source_leaf, ())
        total = sum(s.count for s in all_stats) or 1
        stats = [s for s in all_stats if s.count >= min_support and s.lift > 1.0 and members.get(s.other)]
        stats = sorted(stats, key=lambda s: (-s.count, s.other))[:categories]
        group_rows: list[int | None] = [rows.get(p.id) for p in group]
        found: dict[str, list[tuple[float, str, CategoryStat, float | None]]] = defaultdict(list)
        for stat in stats:
            pool = list(members[stat.other])
            pops = np.array([behaviour.popularity.get(pid, 0) for pid in pool], dtype=np.float64)
            prior = np.log((pops + 1.0) / (pops.sum() + len(pool)))
            p_category = stat.count / total
            pool_rows = [rows[pid] for pid in pool if pid in rows]
            pool_matrix = (embeddings.vectors[pool_rows] if embeddings is not None and len(pool_rows) == len(pool)
                           else None)
            for start, stop in _row_blocks(len(group), len(pool), block):
                chunk = group[start:stop]
                chunk_rows = group_rows[start:stop]
                sims = np.zeros((len(chunk), len(pool)), dtype=np.float32)
                if pool_matrix is not None and embeddings is not None:
                    known = [i for i, r in enumerate(chunk_rows) if r is not None]
                    if known:
                        query_rows = [r for r in chunk_rows if r is not None]
                        sims[known] = embeddings.vectors[query_rows] @ pool_matrix.T
                # P(c | B, q): a softmax over compatibility with the popularity share as prior, so within a big
                # category (phone cases) the mass goes to the few items that fit this source.
                logits = prior[None, :] + sims.astype(np.float64) / COMPATIBILITY_TEMPERATURE
                logits -= logits.max(axis=1, keepdims=True)
                within = np.exp(logits, out=logits)
                within /= within.sum(axis=1, keepdims=True)
                estimate = within
                estimate *= p_category
                for i, product in enumerate(chunk):
                    for j in _top_k(estimate[i].astype(np.float32), per_category + 1):
                        if pool[j] == product.id:
                            continue
                        sim = float(sims[i, j]) if embeddings is not None else None
                        found[product.id].append((float(estimate[i, j]), pool[j], stat, sim))
        for product in group:
            options = found.get(product.id, [])
            best = max((e for e, _, _, _ in options), default=0.0) or 1.0
            for estimate, target, stat, sim in options:
                out.append(_new(
                    source=product.id, target=target, kind="complement", origins=("category",),
                    same_leaf=stat.other == source_leaf, category_a=source_leaf, category_b=stat.other,
                    category_count=stat.count, category_npmi=stat.npmi, category_lift=stat.lift,
                    category_score=estimate / best, text_similarity=sim,
                ))
    return out


def similarity_candidates(
    sources: Sequence[Product], embeddings: EmbeddingTable, *, members: Mapping[str, Sequence[str]],
    per_product: int, min_similarity: float, block: int | None = None,
) -> list[Candidate]:
    """Substitutes: nearest neighbours by text embedding within the source's leaf category (same shelf).
    Sources are taken `block` rows at a time (default: BLOCK_CELLS per block). As `similarity_table`, listed."""
    return list(similarity_table(sources, embeddings, members=members, per_product=per_product,
                                 min_similarity=min_similarity, block=block))


def similarity_table(
    sources: Sequence[Product], embeddings: EmbeddingTable, *, members: Mapping[str, Sequence[str]],
    per_product: int, min_similarity: float, block: int | None = None,
) -> CandidateTable:
    """`similarity_candidates` as a table, gathered as three columns (a 40k-product leaf gives ~720k
    substitutes: no Candidate object is made for them here)."""
    rows = embeddings.rows()
    source_ids: list[str] = []
    target_ids: list[str] = []
    similarity: list[float] = []
    by_leaf: dict[str, list[Product]] = defaultdict(list)
    for product in sources:
        if product.leaf_category and product.id in rows:
            by_leaf[product.leaf_category].append(product)
    for source_leaf, group in by_leaf.items():
        pool = [pid for pid in members.get(source_leaf, ()) if pid in rows]
        if len(pool) < 2:
            continue
        pool_matrix = embeddings.vectors[[rows[pid] for pid in pool]]
        for start, stop in _row_blocks(len(group), len(pool), block):
            chunk = group[start:stop]
            sims = embeddings.vectors[[rows[p.id] for p in chunk]] @ pool_matrix.T
            for i, product in enumerate(chunk):
                for j in _top_k(sims[i], per_product + 1):
                    target, sim = pool[j], float(sims[i, j])
                    if target == product.id or sim < min_similarity:
                        continue
                    source_ids.append(product.id)
                    target_ids.append(target)
                    similarity.append(sim)
    return CandidateTable.from_columns(source=source_ids, target=target_ids, text_similarity=similarity,
                                       kind="substitute", origins=("similarity",), same_leaf=True)


def affinity_candidates(
    sources: Sequence[Product], embeddings: EmbeddingTable, *, leaf: Mapping[str, str | None], per_product: int,
    min_similarity: float, block: int = 1024,
) -> list[Candidate]:
    """Complements by textual affinity: the nearest products on a DIFFERENT shelf. An accessory names what it
    fits ("EN-EL15 battery charger for Nikon D7100"), so cross-category text neighbours are compatible items.
    This is the only complement evidence a cold product (never ordered) has before any model is asked."""
    rows = embeddings.rows()
    ids = list(rows)
    index = np.array([rows[pid] for pid in ids], dtype=np.intp)
    target_leaf = [leaf.get(pid) for pid in ids]
    present = [p for p in sources if p.id in rows]
    out: list[Candidate] = []
    for start in range(0, len(present), block):
        group = present[start : start + block]
        sims = embeddings.vectors[[rows[p.id] for p in group]] @ embeddings.vectors[index].T
        for i, product in enumerate(group):
            own_leaf = leaf.get(product.id)
            kept = 0
            for j in _top_k(sims[i], 4 * per_product + 1):
                target, sim = ids[j], float(sims[i, j])
                if sim < min_similarity:
                    break
                if target == product.id or (own_leaf is not None and target_leaf[j] == own_leaf):
                    continue
                out.append(_new(
                    source=product.id, target=target, kind="complement", origins=("affinity",),
                    same_leaf=False, text_similarity=sim,
                ))
                kept += 1
                if kept >= per_product:
                    break
    return out


def leaf_members(products: Iterable[Product]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = defaultdict(list)
    for product in products:
        if product.leaf_category:
            members[product.leaf_category].append(product.id)
    return dict(members)


def fill_similarity_table(table: CandidateTable, embeddings: EmbeddingTable | None) -> CandidateTable:
    """`fill_similarity` over the columns: the same values (one einsum over the same rows in the same order)."""
    if embeddings is None or not table.frame.height:
        return table
    index = pl.DataFrame({"id": list(embeddings.ids), "row": np.arange(len(embeddings.ids), dtype=np.int64)})
    todo = (table.frame.select("source", "target", "text_similarity").with_row_index("_i")
            .join(index.rename({"id": "source", "row": "_s"}), on="source", how="left", maintain_order="left")
            .join(index.rename({"id": "target", "row": "_t"}), on="target", how="left", maintain_order="left")
            .filter(pl.col("text_similarity").is_null() & pl.col("_s").is_not_null() & pl.col("_t").is_not_null()))
    if not todo.height:
        return table
    a = embeddings.vectors[todo["_s"].to_numpy()]
    b = embeddings.vectors[todo["_t"].to_numpy()]
    sims = np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0).astype(np.float64)
    filled = table.frame["text_similarity"].clone().scatter(todo["_i"].to_numpy(), sims)
    return CandidateTable(table.frame.with_columns(filled))


def fill_similarity(candidates: Sequence[Candidate], embeddings: EmbeddingTable | None) -> list[Candidate]:
    """Give every candidate its text similarity (the scoring formula reads it for every pair)."""
    if embeddings is None:
        return list(candidates)
    rows = embeddings.rows()
    todo = [i for i, c in enumerate(candidates)
            if c.text_similarity is None and c.source in rows and c.target in rows]
    out = list(candidates)
    if not todo:
        return out
    a = embeddings.vectors[[rows[candidates[i].source] for i in todo]]
    b = embeddings.vectors[[rows[candidates[i].target] for i in todo]]
    sims = np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)
    for i, sim in zip(todo, sims.tolist(), strict=True):
        out[i] = out[i].model_copy(update={"text_similarity": float(sim)})
    return out
