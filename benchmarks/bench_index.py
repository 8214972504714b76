"""GraphIndex micro benchmarks on a synthetic graph (default 1M products, 20M relations; smaller with
SHELFGRAPH_BENCH_PRODUCTS / SHELFGRAPH_BENCH_RELATIONS). Run:

    pytest benchmarks/bench_index.py --benchmark-only

Prints build time, memory per relation and lookup latencies (complements of one product, filtered
lookup, cart of 5), with p50/p99 from a timed loop of single calls beside pytest-benchmark's table. The
index is built through the same vectorized path as from a PublishedGraph, written as the packed files the
server maps, and mapped read-only (what every worker shares). The p50/p99 loops time both read paths over
the same mapped files, calls alternating one by one: the C extension (`serve.native`, what
pytest-benchmark's table times) and pure Python. A smaller run first:

    SHELFGRAPH_BENCH_PRODUCTS=100000 SHELFGRAPH_BENCH_RELATIONS=2000000 pytest benchmarks/bench_index.py --benchmark-only -s
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shelfgraph-bench-index-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _write_and_map(columns, folder: Path) -> GraphIndex:  # type: ignore[no-untyped-def]
    target = folder / f"v{len(list(folder.iterdir()))}"
    index = GraphIndex.open(GraphIndex.write_columns(*columns, target))
    _BUILT["pure"] = GraphIndex.open(target, native=False)  # the same files, read in pure Python
    return index


@pytest.fixture(scope="module")
def index(columns, folder: Path) -> GraphIndex:  # type: ignore[no-untyped-def]
    if "index" not in _BUILT:
        _BUILT["index"] = _write_and_map(columns, folder)
    return _BUILT["index"]


def _percentiles(name: str, calls: dict[str, Callable[[], Any]], n: int = 20_000) -> None:
    """Single calls timed one by one (pytest-benchmark's table has no p99): wall clock, then the calling
    thread's CPU time in a second loop; the paths in `calls` alternate call by call, so background load
    hits them alike. On a shared machine the wall p99 is mostly the scheduler (a call preempted for a time
    slice); the CPU-time percentiles are the lookup's own cost."""
    for call in calls.values():
        call()
    for label, clock in (("wall", time.perf_counter_ns), ("thread CPU", time.thread_time_ns)):
        times: dict[str, list[int]] = {path: [] for path in calls}
        for _ in range(n):
            for path, call in calls.items():
                started = clock()
                call()
                times[path].append(clock() - started)
        p50s = {}
        for path, took in times.items():
            took.sort()
            p50, p99, p999 = (took[int(q * (n - 1))] / 1000 for q in (0.5, 0.99, 0.999))
            p50s[path] = (p50, p99)
            print(f"\n{name} [{path}] ({label}): p50 {p50:.1f} us, p99 {p99:.1f} us, p99.9 {p999:.1f} us over "
                  f"{n:,} calls (load average {os.getloadavg()[0]:.1f})")
        if len(p50s) == 2:
            (a, b) = p50s.values()
            print(f"\n{name} ({label}): pure / native = {b[0] / a[0]:.2f}x at p50, {b[1] / a[1]:.2f}x at p99")


def _paths(index: GraphIndex, lookup: Callable[[GraphIndex, Iterator[str]], Any], columns) -> dict[str, Callable[[], Any]]:  # type: ignore[no-untyped-def]
    """Both read paths of the same files, each on its own cycle of random ids (neither warms the other's)."""
    pure = _BUILT["pure"]
    ids_native, ids_pure = _ids(columns, 11), _ids(columns, 12)
    if not index.native:
        print("\nserve._fastindex is not built: timing the pure-Python path only")
        return {"pure": lambda: lookup(pure, ids_pure)}
    return {"native": lambda: lookup(index, ids_native), "pure": lambda: lookup(pure, ids_pure)}


def _ids(columns, seed: int = 1) -> Iterator[str]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    ids = columns[1].ids
    return itertools.cycle([ids[rng.randrange(len(ids))] for _ in range(100_000)])


def test_build_index(benchmark, columns, folder: Path) -> None:  # type: ignore[no-untyped-def]
    index = benchmark.pedantic(_write_and_map, args=(columns, folder), rounds=1, iterations=1)
    _BUILT["index"] = index
    relations = sum(index.relation_counts().values())
    memory, shared = index.memory_bytes(), index.shared_bytes()
    benchmark.extra_info.update(
        products=index.product_count, relations=relations, memory_bytes=memory,
        bytes_per_relation=round(memory / relations, 2),
    )
    print(f"\nindex: {index.product_count:,} products, {relations:,} directed relations "
          f"(substitutes mirrored), {memory / 1e6:,.0f} MB = {memory / relations:.1f} bytes/relation "
          f"({shared / 1e6:,.0f} MB mapped once for every worker, {(memory - shared) / 1e6:,.1f} MB per worker)")
    assert index.product_count == N_PRODUCTS


def test_complements_of_one_product(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns)
    result = benchmark(lambda: index.complements(next(ids), 10))
    _percentiles("complements k=10", _paths(index, lambda ix, ids: ix.complements(next(ids), 10), columns))
    assert result.kind == "complement"


def test_complements_with_filters(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 2)
    result = benchmark(lambda: index.complements(next(ids), 10, min_score=0.2, price_max=300.0, category="Group 3"))
    assert result.kind == "complement"


def test_substitutes_of_one_product(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 3)
    result = benchmark(lambda: index.substitutes(next(ids), 10))
    _percentiles("substitutes k=10", _paths(index, lambda ix, ids: ix.substitutes(next(ids), 10), columns))
    assert result.kind == "substitute"


def test_cart_of_5(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 4)
    result = benchmark(lambda: index.cart_addons([next(ids) for _ in range(5)], 10))
    _percentiles("cart of 5, k=10", _paths(index, lambda ix, ids: ix.cart_addons([next(ids) for _ in range(5)], 10), columns))
    assert len(result.cart) == 5


def test_product_view(benchmark, index, columns) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(columns, 5)
    result = benchmark(lambda: index.product(next(ids)))
    assert result.title
