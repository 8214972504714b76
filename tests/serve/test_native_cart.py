"""The cart in one C call (serve/_fastcart.c, `Nodes.cart`) against the Python reference of
`GraphIndex.cart_addons` (serve/index.py, serve/rows.py): the same answers, field by field and type by type,
over many random carts with duplicates, unknown ids, filters, ties in scores and k values 0..odd, and
refusing bad arguments and corrupt candidate lists instead of reading outside them."""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from pathlib import Path

import pytest

from graph_schema.store import PublishedGraph
from serve import native
from serve.index import CartContribution, CartSuggestion, GraphIndex
from tests.serve.conftest import make_graph, product, rel

needs_native = pytest.mark.skipif(not native.available(), reason="serve._fastindex is not built")

_SCORES = [0.125, 0.25, 0.375, 0.5, 0.75, 1.0]
"""Few distinct scores, exactly representable: sums of different targets tie often."""


def _tied_graph(seed: int) -> PublishedGraph:
    """Few categories (the per-category cap bites), tied scores, products with no complements (fallbacks
    through substitutes or the category), uncategorized and unpriced products, unicode ids."""
    rng = random.Random(seed)
    n = rng.randint(12, 60)
    ids = [rng.choice(["p{}", "é{}", "東-{}"]).format(i) for i in range(n)]
    cats = [(), ("A",), ("A", "x"), ("B",), ("C", "y")]
    products = [product(pid, f"T {pid}", rng.choice(cats), rng.choice([None, 2.5, 7.0, 12.0])) for pid in ids]
    relations = []
    seen = set()
    for _ in range(rng.randint(n, 4 * n)):
        a, b = rng.sample(ids[: max(2, n - 5)], 2)  # the last five have no edges at all
        kind = "complement" if rng.random() < 0.8 else "substitute"
        if (a, b, kind) in seen:
            continue
        seen.add((a, b, kind))
        score = rng.choice(_SCORES) if rng.random() < 0.8 else rng.uniform(0.01, 1)
        relations.append(rel(a, b, kind, score, *rng.sample(["r1", "r2", "r3"], rng.randint(0, 2))))
    return make_graph(products, relations)


def _types(result: object) -> list[object]:
    return [(type(s), type(s.score), [(type(c), type(c.score)) for c in s.goes_with])
            for s in result.items]  # type: ignore[attr-defined]


@needs_native
@pytest.mark.parametrize("seed", range(12))
def test_native_cart_equals_the_python_reference(seed: int, tmp_path: Path) -> None:
    folder = GraphIndex.write(_tied_graph(seed), tmp_path / "v")
    fast_ix, pure_ix = GraphIndex.open(folder), GraphIndex.open(folder, native=False)
    assert fast_ix.native and not pure_ix.native
    rng = random.Random(seed)
    ids = list(pure_ix.nodes.ids)
    filters = [{}, {}, {"min_score": 0.5}, {"min_score": 1.0}, {"min_score": 0.3, "category": "A"},
               {"category": "B"}, {"price_min": 3.0}, {"price_max": 10.0}, {"exclude": rng.sample(ids, 3)},
               {"category": "nothing"}]
    nonempty = sources = 0
    for _ in range(150):
        cart = [rng.choice(ids) for _ in range(rng.randint(0, 7))]
        cart += rng.sample(["nope", "", "é", cart[0] if cart else "x"], rng.randint(0, 2))  # unknown, duplicates
        rng.shuffle(cart)
        k = rng.choice([0, 1, 2, 3, 5, 7, 10, 25])
        f = rng.choice(filters)
        want = pure_ix.cart_addons(cart, k, **f)
        got = fast_ix.cart_addons(cart, k, **f)
        assert got == want, (cart, k, f)
        assert _types(got) == _types(want)
        assert all(type(s) is CartSuggestion and all(type(c) is CartContribution for c in s.goes_with)
                   for s in got.items)
        nonempty += bool(want.items)
        sources += sum(c.source != "direct" for s in want.items for c in s.goes_with)
    assert nonempty > 50 and sources > 0  # the comparison saw answers, and fallback lists among them


@needs_native
def test_ties_order_by_row_and_contributions_by_item(tmp_path: Path) -> None:
    """Three targets tie on their sums: row (= id) order; a target's contributions tie on score: cart order."""
    products = [product(p, p.upper(), (c,)) for p, c in
                [("a", "X"), ("b", "X"), ("t1", "Y"), ("t2", "Z"), ("t3", "W")]]
    relations = [rel(s, t, "complement", 0.5) for s in ("a", "b") for t in ("t3", "t1", "t2")]
    folder = GraphIndex.write(make_graph(products, relations), tmp_path / "v")
    for native_path in (True, False):
        got = GraphIndex.open(folder, native=native_path).cart_addons(["b", "a", "b"], 3)
        assert got.cart == ("b", "a")
        assert [s.product_id for s in got.items] == ["t1", "t2", "t3"]
        assert all([c.cart_item for c in s.goes_with] == ["b", "a"] and s.score == 1.0 for s in got.items)


def _native(tmp_path: Path) -> GraphIndex:
    index = GraphIndex.open(GraphIndex.write(_tied_graph(3), tmp_path / "v"))
    assert index.native
    return index


@needs_native
def test_bad_arguments_and_corrupt_lists_are_refused(tmp_path: Path) -> None:
    from serve._fastindex import CorruptIndex

    index = _native(tmp_path)
    fast, comp, subs = index._fast, index._comp, index._subs  # type: ignore[attr-defined]
    ids = list(index.nodes.ids)[:3]
    args = (CartSuggestion, CartContribution, comp, subs, ids, 5, 0.0, False)

    def more(answer: object):  # type: ignore[no-untyped-def]
        return lambda row: answer

    with pytest.raises(TypeError):
        fast.cart(*args)
    with pytest.raises(TypeError):
        fast.cart(dict, *args[1:], more(None))
    with pytest.raises(TypeError):
        fast.cart(CartSuggestion, CartContribution, comp, subs, (ids,), 5, 0.0, False, more(None))
    with pytest.raises(TypeError):
        fast.cart(*args, more(("direct", [1, 2], [0.5], [0, 0], None)))  # lengths disagree
    with pytest.raises(TypeError):
        fast.cart(*args[:4], [1], *args[5:], more(None))  # ids must be str
    for bad in (("direct", [10**6], [0.5], [0], None), ("direct", [-1], [0.5], [0], None),
                ("direct", [1], [0.5], [10**6], None), ("via_category", [1], [0.5], [0], [10**6]),
                ("via_category", [1], [0.5], [0], [-2])):
        with pytest.raises(CorruptIndex):
            fast.cart(*args, more(bad))
    with pytest.raises(ZeroDivisionError):
        fast.cart(*args, lambda row: 1 / 0)
    # a NaN total: None, and cart_addons then answers in Python
    last = len(index.nodes.ids) - 1  # has no edges: neither in the cart nor anyone's substitute
    assert fast.cart(*args, more(("direct", [last], [float("nan")], [0], None))) is None
    assert fast.cart(*args, more(("direct", [last], [0.5], [0], None)))[2][0].product_id == index.nodes.ids[last]


@needs_native
def test_the_cart_keeps_refcounts_and_memory_flat(tmp_path: Path) -> None:
    """A missed Py_DECREF in the C cart leaks every record it builds: after a warm-up, thousands more carts
    must neither grow the traced memory nor change the references held on the shared tuples."""
    index = _native(tmp_path)
    ids = list(index.nodes.ids)
    shared = [*index._a.reasons, *index._a.nodes.categories, *ids]  # type: ignore[attr-defined]

    def calls(n: int) -> None:
        for i in range(n):
            cart = ids[i % 9: i % 9 + 5] + ["nope"]
            index.cart_addons(cart, 1 + i % 8)
            index.cart_addons(cart, 4, category="A", min_score=0.2)

    calls(500)
    gc.collect()
    counts = [sys.getrefcount(t) for t in shared]
    tracemalloc.start()
    try:
        calls(500)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        calls(3000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024, f"traced memory grew by {after - before} bytes over 6000 carts"
    assert [sys.getrefcount(t) for t in shared] == counts
