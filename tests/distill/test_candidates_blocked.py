"""category_candidates and similarity_candidates work in blocks of source rows: the result is the same for
every block size (one block = the former dense group x pool computation), and memory follows the block.
"The same" is the same candidates in the same order with similarities equal up to float32 rounding: BLAS
picks another kernel for another block shape (with one thread, a one-row block is a matrix-vector product),
so the last bits of a dot product may differ."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from distill.candidates.generators import (
    BehaviourView,
    CategoryStat,
    EmbeddingTable,
    category_candidates,
    leaf_members,
    similarity_candidates,
)
from graph_schema.models import Product


def _random_catalog(seed: int, n: int = 1500, leaves: int = 5, dim: int = 16) -> tuple[
    list[Product], EmbeddingTable, BehaviourView
]:
    rng = np.random.default_rng(seed)
    # Skewed leaf sizes, so one pool is much larger than the others.
    sizes = rng.dirichlet(np.ones(leaves) * 0.7)
    leaf_of = rng.choice(leaves, size=n, p=sizes)
    products = [Product(id=f"p{i:04d}", title=f"product {i}", category=("Root", f"L{leaf_of[i]}"))
                for i in range(n)]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # A few products have no embedding (a source row with no similarity, a pool that falls back to priors).
    missing = set(rng.choice(n, size=5, replace=False).tolist())
    kept = [i for i in range(n) if i not in missing]
    table = EmbeddingTable(ids=tuple(products[i].id for i in kept), vectors=vectors[kept])
    categories = {
        f"L{a}": [CategoryStat(f"L{b}", int(rng.integers(1, 30)), float(rng.uniform(0.5, 3.0)),
                               float(rng.uniform(-1, 1))) for b in range(leaves)]
        for a in range(leaves)
    }
    popularity = {p.id: int(rng.integers(0, 50)) for p in products if rng.random() < 0.7}
    view = BehaviourView(partners={}, categories=categories, popularity=popularity, baskets=1000)
    return products, table, view


def _same(got: list, want: list) -> bool:
    """Equal candidate lists, floats to a relative 1e-5 (float32 dot products summed in another order; the scores built on them carry that error)."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        x, y = a.model_dump(), b.model_dump()
        if x.keys() != y.keys():
            return False
        for key, value in x.items():
            other = y[key]
            if isinstance(value, float) and isinstance(other, float):
                if not math.isclose(value, other, rel_tol=1e-5, abs_tol=1e-6):
                    return False
            elif value != other:
                return False
    return True


@pytest.mark.parametrize("seed", [0, 1])
def test_category_candidates_do_not_depend_on_the_block_size(seed: int) -> None:
    products, table, view = _random_catalog(seed)
    members = leaf_members(products)
    leaf = {p.id: p.leaf_category for p in products}

    def run(block: int | None, embeddings: EmbeddingTable | None = table) -> list:
        return category_candidates(products, view, embeddings, members=members, min_support=2, categories=3,
                                   per_category=4, leaf=leaf, block=block)

    dense = run(10**9)  # one block per category pool: the former unblocked computation
    assert len(dense) > 100
    for block in (1, 64, 97, 300, None):
        assert _same(run(block), dense)
    assert _same(run(70, None), run(10**9, None))


@pytest.mark.parametrize("seed", [0, 1])
def test_similarity_candidates_do_not_depend_on_the_block_size(seed: int) -> None:
    products, table, _ = _random_catalog(seed)
    members = leaf_members(products)

    def run(block: int | None) -> list:
        return similarity_candidates(products, table, members=members, per_product=5, min_similarity=-1.0,
                                     block=block)

    dense = run(10**9)
    assert len(dense) > 100
    for block in (1, 64, 97, 300, None):
        assert _same(run(block), dense)


def test_memory_follows_the_block_not_the_square_of_the_category() -> None:
    """One 3,000-product leaf: a dense group x pool matrix is 3000^2 cells (72 MB as float64); blocks of 64
    rows keep every temporary at 50 x 3000."""
    n, dim = 3000, 8
    rng = np.random.default_rng(5)
    products = [Product(id=f"q{i:05d}", title=f"item {i}", category=("Root", "Big" if i < n - 10 else "Small"))
                for i in range(n)]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = EmbeddingTable(ids=tuple(p.id for p in products), vectors=vectors)
    view = BehaviourView(partners={}, categories={"Big": [CategoryStat("Big", 10, 2.0, 0.5)]},
                         popularity={}, baskets=100)
    members = leaf_members(products)
    leaf = {p.id: p.leaf_category for p in products}
    dense_bytes = (n - 10) ** 2 * 8
    for call in (
        lambda: category_candidates(products, view, table, members=members, min_support=1, categories=1,
                                    per_category=2, leaf=leaf, block=64),
        lambda: similarity_candidates(products, table, members=members, per_product=2, min_similarity=0.0,
                                      block=64),
    ):
        tracemalloc.start()
        try:
            found = call()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(found) >= n - 10
        assert peak < dense_bytes / 4, (peak, dense_bytes)
