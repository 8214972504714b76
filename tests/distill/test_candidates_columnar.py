"""The columnar candidate pool agrees with the object code it replaced: merging (`merge_table` against
`merge_candidates(restrict_to(...))`), text similarity (`fill_similarity_table` against `fill_similarity`) and
the per-source cut of the rank stage (`best_table` against the object loop it replaced, kept below), over
random pools with repeated keys, unknown ids and self pairs; and the substitutes of `similarity_table`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.candidates.generators import (
    EmbeddingTable,
    fill_similarity,
    fill_similarity_table,
    leaf_members,
    similarity_table,
)
from distill.candidates.model import Candidate, CandidateTable, merge_candidates, merge_table, restrict_to
from distill.stages.scoring import Source, best_table, final_score
from graph_schema.models import Product

IDS = [f"p{i}" for i in range(6)]
KNOWN = set(IDS[:5])
"""p5 is not in the catalog."""
AVAILABLE: frozenset[Source] = frozenset({"same_leaf", "similarity", "copurchase", "neighbour", "category"})


def _maybe(values: list[object]) -> st.SearchStrategy[object]:
    return st.sampled_from([None, *values])


@st.composite
def candidates(draw: st.DrawFn) -> list[Candidate]:
    found = []
    for _ in range(draw(st.integers(0, 30))):
        found.append(Candidate(
            source=draw(st.sampled_from(IDS)), target=draw(st.sampled_from(IDS)),
            kind=draw(st.sampled_from(["complement", "substitute"])),
            origins=tuple(draw(st.lists(st.sampled_from(["similarity", "category", "llm", "copurchase"]),
                                        min_size=1, max_size=2, unique=True))),
            same_leaf=draw(st.booleans()), near_duplicate=draw(st.booleans()),
            copurchase_count=draw(_maybe([1, 3])), lift=draw(_maybe([0.5, 2.0])), neighbour=draw(_maybe([0.2, 0.7])),
            category_a=draw(_maybe(["A"])), category_b=draw(_maybe(["B"])), category_score=draw(_maybe([0.4, 1.0])),
            text_similarity=draw(_maybe([0.1, 0.35, 0.9])), query=draw(_maybe(["case", "strap"])),
            llm_score=draw(_maybe([0.3, 0.8])),
        ))
    return found


@settings(max_examples=200, deadline=None)
@given(candidates(), candidates())
def test_merge_table_agrees_with_merge_candidates(first: list[Candidate], second: list[Candidate]) -> None:
    expected = merge_candidates(restrict_to([*first, *second], KNOWN))
    assert list(merge_table([first, CandidateTable.of(second)], KNOWN)) == expected


@settings(max_examples=100, deadline=None)
@given(candidates(), st.integers(0, 2**32 - 1))
def test_fill_similarity_table_agrees_with_fill_similarity(pool: list[Candidate], seed: int) -> None:
    vectors = np.random.default_rng(seed).normal(size=(5, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = EmbeddingTable(ids=tuple(IDS[:5]), vectors=vectors)
    assert list(fill_similarity_table(CandidateTable.of(pool), table)) == fill_similarity(pool, table)


def _best_per_source_objects(
    pool: list[Candidate], *, max_complements: int, max_substitutes: int
) -> tuple[list[tuple[float, Candidate]], int]:
    """The object loop best_table replaced (distill.stages.scoring at eece92c)."""
    caps = {"complement": 2 * max_complements, "substitute": 2 * max_substitutes}
    grouped: dict[tuple[str, str], list[tuple[float, Candidate]]] = {}
    for candidate in pool:
        grouped.setdefault((candidate.source, candidate.kind), []).append((final_score(candidate, AVAILABLE), candidate))
    kept: list[tuple[float, Candidate]] = []
    for (_, kind), scored in grouped.items():
        scored.sort(key=lambda pair: (-pair[0], pair[1].target))
        kept.extend(scored[: caps[kind]])
    return kept, len(pool) - len(kept)


@settings(max_examples=200, deadline=None)
@given(candidates(), st.integers(0, 3), st.integers(0, 3))
def test_best_table_agrees_with_the_object_loop(pool: list[Candidate], complements: int, substitutes: int) -> None:
    expected, expected_cut = _best_per_source_objects(pool, max_complements=complements, max_substitutes=substitutes)
    best, scores, cut = best_table(CandidateTable.of(pool), AVAILABLE, max_complements=complements,
                                   max_substitutes=substitutes)
    assert list(zip(scores, best, strict=True)) == expected and cut == expected_cut


def _similarity_objects(products: list[Product], embeddings: EmbeddingTable, *, per_product: int,
                        min_similarity: float) -> list[Candidate]:
    """The object loop similarity_table replaced (distill.candidates.generators at eece92c, one block)."""
    rows = embeddings.rows()
    members = leaf_members(products)
    out: list[Candidate] = []
    by_leaf: dict[str, list[Product]] = {}
    for product in products:
        if product.leaf_category and product.id in rows:
            by_leaf.setdefault(product.leaf_category, []).append(product)
    for source_leaf, group in by_leaf.items():
        pool = [pid for pid in members.get(source_leaf, ()) if pid in rows]
        if len(pool) < 2:
            continue
        sims = embeddings.vectors[[rows[p.id] for p in group]] @ embeddings.vectors[[rows[pid] for pid in pool]].T
        for i, product in enumerate(group):
            top = np.argpartition(-sims[i], min(per_product + 1, len(pool)) - 1)[:per_product + 1]
            for j in top[np.argsort(-sims[i][top], kind="stable")]:
                target, sim = pool[j], float(sims[i, j])
                if target != product.id and sim >= min_similarity:
                    out.append(Candidate(source=product.id, target=target, kind="substitute",
                                         origins=("similarity",), same_leaf=True, text_similarity=sim))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_similarity_table_agrees_with_the_object_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    products = [Product(id=f"q{i:03d}", title=f"item {i}", category=("Root", f"L{rng.integers(3)}"))
                for i in range(120)]
    vectors = rng.normal(size=(120, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = EmbeddingTable(ids=tuple(p.id for p in products[:115]), vectors=vectors[:115])  # 5 without a vector
    expected = _similarity_objects(products, table, per_product=6, min_similarity=0.1)
    found = similarity_table(products, table, members=leaf_members(products), per_product=6, min_similarity=0.1)
    assert len(expected) > 300 and list(found) == expected
