"""GraphIndex lookups on the fixture catalog: ranking, filters, fallbacks, cart logic, build details; each
read through the C extension and in pure Python (`serve.native`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graph_schema.store import PublishedGraph
from serve.index import GraphIndex, UnknownProduct
from tests.serve.conftest import READERS, catalog, make_graph, product, rel, relations, use_native


@pytest.fixture(params=READERS)
def native(request: pytest.FixtureRequest) -> bool:
    return use_native(request.param)


@pytest.fixture
def index(graph: PublishedGraph, native: bool) -> GraphIndex:
    return GraphIndex.from_published(graph, native=native)


def ids(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [n.product_id for n in result.items]


def test_direct_complements_are_sorted_by_score_with_reasons(index: GraphIndex) -> None:
    result = index.complements("cam1", 10)
    assert result.source == "direct"
    assert ids(result) == ["tri1", "sd1", "bag1", "lens1", "sd2"]
    scores = [n.score for n in result.items]
    assert scores == sorted(scores, reverse=True)
    assert result.items[0].reasons == ("keeps the camera steady", "long exposures")
    assert all(n.via is None for n in result.items)


def test_k_limits_the_result(index: GraphIndex) -> None:
    assert ids(index.complements("cam1", 2)) == ["tri1", "sd1"]


def test_filters(index: GraphIndex) -> None:
    assert ids(index.complements("cam1", 10, min_score=0.65)) == ["tri1", "sd1", "bag1"]
    assert ids(index.complements("cam1", 10, category="Storage")) == ["sd1", "sd2"]
    # a category name matches any level of the path
    assert ids(index.complements("cam1", 10, category="Electronics")) == ["tri1", "sd1", "lens1", "sd2"]
    assert ids(index.complements("cam1", 10, category="No such")) == []
    # unpriced lens1 is dropped by any price bound
    assert ids(index.complements("cam1", 10, price_min=30)) == ["tri1", "bag1", "sd2"]
    assert ids(index.complements("cam1", 10, price_min=20, price_max=40)) == ["sd1", "bag1", "sd2"]
    assert ids(index.complements("cam1", 10, exclude={"tri1", "bag1", "unknown-id"})) == ["sd1", "lens1", "sd2"]


def test_substitutes_are_symmetric(index: GraphIndex) -> None:
    assert ids(index.substitutes("cam2", 5)) == ["cam1"]
    assert ids(index.substitutes("cam1", 5)) == ["cam2"]
    assert ids(index.substitutes("sd2", 5)) == ["sd1"]
    assert index.substitutes("tri1", 5).items == ()


def test_fallback_via_substitutes_discounts_by_substitute_score(index: GraphIndex) -> None:
    result = index.complements("cam2", 3)
    assert result.source == "via_substitutes"
    assert ids(result) == ["tri1", "sd1", "bag1"]
    assert result.items[0].via == "cam1"
    assert result.items[0].score == pytest.approx(0.9 * 0.85, rel=1e-5)
    assert result.items[0].reasons == ("keeps the camera steady", "long exposures")
    # the substitute itself is never offered as a complement
    assert "cam1" not in ids(index.complements("cam2", 20))


def test_fallback_via_category(index: GraphIndex) -> None:
    result = index.complements("cam3", 10)
    assert result.source == "via_category"
    # Cameras has one product with complement edges (cam1): its list, at mean score over that one product
    assert ids(result) == ["tri1", "sd1", "bag1", "lens1", "sd2"]
    assert result.items[0].via == "cam1"
    assert result.items[0].score == pytest.approx(0.9, rel=1e-5)


def test_category_fallback_averages_over_the_category(native: bool) -> None:
    products = [
        product("a1", "A1", ("A",)), product("a2", "A2", ("A",)), product("a3", "A3", ("A",)),
        product("x", "X", ("B",)), product("y", "Y", ("B",)),
    ]
    graph = make_graph(products, [rel("a1", "x", "complement", 0.8), rel("a2", "x", "complement", 0.4),
                                  rel("a2", "y", "complement", 0.9)])
    result = GraphIndex.from_published(graph, native=native).complements("a3", 5)
    assert result.source == "via_category"
    assert ids(result) == ["x", "y"]
    assert result.items[0].score == pytest.approx((0.8 + 0.4) / 2, rel=1e-5)
    assert result.items[0].via == "a1"
    assert result.items[1].score == pytest.approx(0.9 / 2, rel=1e-5)


def test_no_edges_and_no_category_gives_none(index: GraphIndex) -> None:
    result = index.complements("lonely", 5)
    assert (result.source, result.items) == ("none", ())


def test_unknown_product_raises(index: GraphIndex) -> None:
    with pytest.raises(UnknownProduct):
        index.complements("nope", 5)
    with pytest.raises(UnknownProduct):
        index.product("nope")


def test_product_view(index: GraphIndex) -> None:
    p = index.product("cam1")
    assert (p.title, p.brand, p.price, p.category) == ("Camera A", "Acme", 500.0, ("Electronics", "Cameras"))
    assert p.enriched == {"sensor": "full frame"}
    assert p.attributes == {"color": "black"}
    assert p.keyphrases == ("mirrorless camera",)
    assert (p.complement_count, p.substitute_count) == (5, 1)
    assert index.product("lens1").price is None
    assert index.product("lonely").category == ()


def test_cart_sums_scores_and_names_the_cart_items(index: GraphIndex) -> None:
    result = index.cart_addons(["cam1", "phone1", "nope", "cam1"], 10)
    assert result.cart == ("cam1", "phone1")
    assert result.unknown == ("nope",)
    top = result.items[0]
    assert top.product_id == "sd1"
    assert top.score == pytest.approx(0.8 + 0.3, rel=1e-5)
    assert [(c.cart_item, c.reasons) for c in top.goes_with] == [
        ("cam1", ("stores photos",)), ("phone1", ("extra storage",))]
    got = [s.product_id for s in result.items]
    # cart items and substitutes of cart items (cam2 is a substitute of cam1) are never suggested
    assert not {"cam1", "phone1", "cam2"} & set(got)
    assert set(got) == {"sd1", "case1", "tri1", "bag1", "lens1", "sd2"}


def test_cart_diversifies_across_categories(native: bool) -> None:
    products = [product("hub", "Hub", ("H",))] + [product(f"a{i}", f"A{i}", ("A",)) for i in range(1, 4)] + [
        product("b1", "B1", ("B",))]
    graph = make_graph(products, [rel("hub", "a1", "complement", 0.9), rel("hub", "a2", "complement", 0.8),
                                  rel("hub", "a3", "complement", 0.7), rel("hub", "b1", "complement", 0.5)])
    ix = GraphIndex.from_published(graph, native=native)
    # k=2: at most one per category, so b1 beats the better-scored a2
    assert [s.product_id for s in ix.cart_addons(["hub"], 2).items] == ["a1", "b1"]
    # k=4: cap of 2 per category leaves 3 picks; the best skipped one fills the 4th slot, in score order
    assert [s.product_id for s in ix.cart_addons(["hub"], 4).items] == ["a1", "a2", "a3", "b1"]
    # the plain lookup is not diversified
    assert ids(ix.complements("hub", 2)) == ["a1", "a2"]


def test_cart_uses_fallbacks_and_min_score_on_the_sum(index: GraphIndex) -> None:
    result = index.cart_addons(["cam3"], 3)
    assert [c.source for s in result.items for c in s.goes_with] == ["via_category"] * 3
    assert index.cart_addons(["cam1", "phone1"], 10, min_score=1.0).items[0].product_id == "sd1"
    assert len(index.cart_addons(["cam1", "phone1"], 10, min_score=1.0).items) == 1


def test_cart_with_only_unknown_ids(index: GraphIndex) -> None:
    result = index.cart_addons(["x", "y"], 5)
    assert (result.cart, result.unknown, result.items) == ((), ("x", "y"), ())


def test_build_keeps_best_duplicate_and_counts_dropped_edges(native: bool) -> None:
    products = [product("a", "A"), product("b", "B")]
    graph = make_graph(products, [rel("a", "b", "complement", 0.3, "weak"), rel("a", "b", "complement", 0.7, "strong"),
                                  rel("a", "ghost", "complement", 0.9)])
    ix = GraphIndex.from_published(graph, native=native)
    result = ix.complements("a", 5)
    assert [(n.product_id, n.reasons) for n in result.items] == [("b", ("strong",))]
    assert ix.meta.dropped_edges == 1
    assert ix.relation_counts() == {"complement": 1, "substitute": 0}


def test_index_arrays_are_read_only(index: GraphIndex) -> None:
    dst = index._a.complements.dst  # noqa: SLF001 - checking the immutability promise
    with pytest.raises(ValueError):
        dst[0] = 1


def test_memory_bytes_counts_arrays(index: GraphIndex) -> None:
    assert index.memory_bytes() > index._a.complements.nbytes()  # noqa: SLF001


def test_empty_graph_builds(native: bool) -> None:
    ix = GraphIndex.from_published(make_graph([product("a", "A")], []), native=native)
    assert ix.complements("a", 5).source == "none"
    assert ix.cart_addons(["a"], 5).items == ()


def test_reasons_are_interned(index: GraphIndex) -> None:
    # "stores photos" is used by two edges; the table holds it once
    assert sum(1 for r in index._a.reasons if r == ("stores photos",)) == 1  # noqa: SLF001
    assert len(index._a.reasons) == len({r.reasons for r in relations()})  # noqa: SLF001


def test_category_filter_and_fallback_never_return_the_product_itself(native: bool) -> None:
    products = [product("p", "P", ("A",)), product("q", "Q", ("A",))]
    ix = GraphIndex.from_published(make_graph(products, [rel("q", "p", "complement", 0.9)]), native=native)
    result = ix.complements("p", 5)
    assert result.source == "none"  # the category list only holds p itself
    assert math.isclose(ix.complements("q", 5).items[0].score, 0.9, rel_tol=1e-6)
    assert np.all(ix._a.nodes.category_id >= 0)  # noqa: SLF001
    assert len(catalog()) == 11
