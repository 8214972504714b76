"""GraphIndex micro benchmarks on a synthetic graph (default 1M products, 20M relations; smaller with
SHELFGRAPH_BENCH_PRODUCTS / SHELFGRAPH_BENCH_RELATIONS). Run:

    pytest benchmarks/bench_index.py --benchmark-only

Prints build time, memory per relation and lookup latencies (complements of one product, filtered
lookup, cart of 5). The index is built through the same vectorized path as from a PublishedGraph.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Iterator

import pytest

from benchmarks.synthetic import synthetic_columns
from serve.index import GraphIndex

N_PRODUCTS = int(os.environ.get("SHELFGRAPH_BENCH_PRODUCTS", "1000000"))
N_RELATIONS = int(os.environ.get("SHELFGRAPH_BENCH_RELATIONS", "20000000"))
_BUILT: dict[str, GraphIndex] = {}


@pytest.fixture(scope="module")
def columns():  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    cols = synthetic_columns(N_PRODUCTS, N_RELATIONS)
    print(f"\ngenerated {N_PRODUCTS:,} products / {N_RELATIONS:,} relations in {time.perf_counter() - started:.1f}s")
    return cols


@pytest.fixture(scope="module")
def index(columns) -> GraphIndex:  # type: ignore[no-untyped-def]
    if "index" not in _BUILT:
        _BUILT["index"] = GraphIndex.from_columns(*columns)
    return _BUILT["index"]


def _ids(columns, seed: int = 1) -> Iterator[str]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    ids = columns[1].ids
    return itertools.cycle([ids[rng.randrange(len(ids))] for _ in range(100_000)])


def test_build_index(benchmark, columns) -> None:  # type: ignore[no-untyped-def]
    index = benchmark.pedantic(GraphIndex.from_columns, args=columns, rounds=1, iterations=1)
    _BUILT["index"] = index
    relations = sum(index.relation_counts().values())
    memory = index.memory_bytes()
    benchmark.extra_info.update(
        products=index.product_count, relations=relations, memory_bytes=memory,
        bytes_per_relation=round(memory / relations, 2),
    )
    print(f"\nindex: {index.product_count:,} products, {relations:,} directed relations "
          f"(substitutes mirrored), {memory / 1e6:,.0f} MB = {memory / relations:.1f} bytes/relation")
    assert index.product_count == N_PRODUCTS


def test_complements_of_one_product(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns)
    result = benchmark(lambda: index.complements(next(ids), 10))
    assert result.kind == "complement"


def test_complements_with_filters(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 2)
    result = benchmark(lambda: index.complements(next(ids), 10, min_score=0.2, price_max=300.0, category="Group 3"))
    assert result.kind == "complement"


def test_substitutes_of_one_product(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 3)
    result = benchmark(lambda: index.substitutes(next(ids), 10))
    assert result.kind == "substitute"


def test_cart_of_5(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 4)
    result = benchmark(lambda: index.cart_addons([next(ids) for _ in range(5)], 10))
    assert len(result.cart) == 5


def test_product_view(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 5)
    result = benchmark(lambda: index.product(next(ids)))
    assert result.title
