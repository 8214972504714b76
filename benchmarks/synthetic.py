"""Synthetic graphs for benchmarks, generated directly as numpy arrays (a 20M-edge graph as Relation
objects would take longer to create than to index). Same columns `serve.build` derives from a
PublishedGraph, so the index is built through the same vectorized path."""

from __future__ import annotations

import numpy as np

from serve.build import EdgeColumns, IndexMeta, NodeColumns


def synthetic_columns(
    n_products: int, n_relations: int, *, n_categories: int = 2000, seed: int = 7
) -> tuple[IndexMeta, NodeColumns, EdgeColumns]:
    rng = np.random.default_rng(seed)
    ids = [f"P{i:07d}" for i in range(n_products)]
    categories = tuple(("Dept", f"Group {c // 50}", f"Leaf {c}") for c in range(n_categories))
    price = rng.uniform(1, 500, n_products)
    price[rng.random(n_products) < 0.1] = np.nan
    nodes = NodeColumns(
        ids=ids,
        titles=[f"Product {i}" for i in range(n_products)],
        category_id=rng.integers(0, n_categories, n_products, dtype=np.int32),
        categories=categories,
        price=price,
    )
    src = rng.integers(0, n_products, n_relations, dtype=np.int32)
    dst = ((src.astype(np.int64) + rng.integers(1, n_products, n_relations)) % n_products).astype(np.int32)
    n_reasons = 10_000
    edges = EdgeColumns(
        src=src,
        dst=dst,
        kind=(rng.random(n_relations) < 0.2).astype(np.int8),  # 80% complements, 20% substitutes
        score=rng.random(n_relations, dtype=np.float32),
        reason_id=rng.integers(0, n_reasons, n_relations, dtype=np.int32),
        reasons=tuple((f"reason {r}", f"detail {r % 97}") for r in range(n_reasons)),
    )
    meta = IndexMeta(
        version="synthetic",
        created_at=None,
        manifest_product_count=n_products,
        manifest_relation_counts={"complement": int((edges.kind == 0).sum()), "substitute": int((edges.kind == 1).sum())},
        dropped_edges=0,
    )
    return meta, nodes, edges
