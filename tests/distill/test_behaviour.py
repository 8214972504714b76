"""Co-purchase statistics against hand-computed values on a 5-basket example, and a run on real Instacart baskets."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from distill.evidence.behaviour import CoPurchase, PairStats, baskets_frame
from graph_schema.models import Product

# B1 {P, C, H}  B2 {P, C}  B3 {P, H}  B4 {C, C2, K}  B5 {P, C, K}  + one 60-item basket (ignored for pairs)
# N = 5 used baskets; n_P = 4, n_C = 4, n_H = 2, n_K = 2, n_C2 = 1
# pairs: P-C 3, P-H 2, C-K 2 (kept at support 2); C-H 1, P-K 1, C-C2 1, C2-K 1 (below support)
ROWS = [
    ("B1", "P"), ("B1", "C"), ("B1", "H"),
    ("B2", "P"), ("B2", "C"),
    ("B3", "P"), ("B3", "H"),
    ("B4", "C"), ("B4", "C2"), ("B4", "K"),
    ("B5", "P"), ("B5", "C"), ("B5", "K"),
    ("B5", "P"),  # a repeated row (quantity 2) counts once
    *[("BIG", f"X{i}") for i in range(58)], ("BIG", "P"), ("BIG", "C"),
]
PRODUCTS = [
    Product(id="P", title="Phone", category=("Electronics", "Smartphones")),
    Product(id="C", title="Case", category=("Electronics", "Accessories", "Cases")),
    Product(id="C2", title="Other case", category=("Electronics", "Accessories", "Cases")),
    Product(id="H", title="Charger", category=("Electronics", "Accessories", "Chargers")),
    Product(id="K", title="Cable", category=("Electronics", "Accessories", "Cables")),
]


def _expected(count: int, n_a: int, n_b: int, n: int = 5) -> tuple[float, float, float]:
    lift = count * n / (n_a * n_b)
    pmi = math.log(lift)
    return lift, pmi, pmi / -math.log(count / n)


@pytest.fixture
def co() -> CoPurchase:
    return CoPurchase.from_baskets(baskets_frame(ROWS))


def test_counts_lift_pmi_npmi_match_hand_computation(co: CoPurchase) -> None:
    assert co.baskets == 5 and co.skipped_large_baskets == 1
    pc = co.pair("P", "C")
    assert pc is not None and pc.count == 3
    assert (pc.lift, pc.pmi, pc.npmi) == pytest.approx(_expected(3, 4, 4))
    assert pc.lift == pytest.approx(15 / 16)
    ph = co.pair("P", "H")
    assert ph is not None and ph.count == 2 and ph.lift == pytest.approx(1.25)
    assert (ph.pmi, ph.npmi) == pytest.approx(_expected(2, 4, 2)[1:])
    ck = co.pair("C", "K")
    assert ck is not None and ck.count == 2 and ck.lift == pytest.approx(1.25)


def test_both_directions_and_min_support(co: CoPurchase) -> None:
    assert co.pair("C", "P") == PairStats("C", "P", *[getattr(co.pair("P", "C"), f) for f in ("count", "lift", "pmi", "npmi")])
    assert co.pair("C", "H") is None  # bought together once: below support 2
    assert co.pair("P", "K") is None
    assert co.pair("unknown", "P") is None
    assert co.pairs.height == 6  # 3 pairs x 2 directions
    loose = CoPurchase.from_baskets(baskets_frame(ROWS), min_support=1)
    assert loose.pair("C", "H") is not None and loose.pair("C", "H").count == 1  # type: ignore[union-attr]


def test_large_baskets_are_ignored_for_pairs_but_count_for_popularity(co: CoPurchase) -> None:
    assert co.pair("X1", "X2") is None
    pop = co.popularity()
    assert pop["P"] == 5 and pop["C"] == 5 and pop["X0"] == 1
    # Used-basket counts exclude the big basket.
    assert dict(co.item_baskets.iter_rows())["P"] == 4
    bigger = CoPurchase.from_baskets(baskets_frame(ROWS), max_basket_size=100)
    assert bigger.baskets == 6 and bigger.pair("P", "C").count == 4  # type: ignore[union-attr]


def test_top_for_orders_by_npmi_then_by_count(co: CoPurchase) -> None:
    assert [s.b for s in co.top_for("P", 5)] == ["H", "C"]  # npmi 0.24 beats -0.13
    assert [s.b for s in co.top_for("P", 5, by="count")] == ["C", "H"]
    assert [s.b for s in co.top_for("P", 1)] == ["H"]
    assert co.top_for("nobody", 3) == []
    assert co.partners("P") == 2 and co.partners("H") == 1


def test_category_copurchase_leaf_to_leaf(co: CoPurchase) -> None:
    cats = co.category_copurchase(PRODUCTS)
    by_pair = {(a, b): (count, lift) for a, b, count, lift, _, _ in cats.iter_rows()}
    # Cases leaf in B1, B2, B4, B5 (4 baskets); Smartphones in 4; Chargers in 2; Cables in 2.
    assert by_pair[("Smartphones", "Cases")] == (3, pytest.approx(15 / 16))
    assert by_pair[("Cases", "Smartphones")] == (3, pytest.approx(15 / 16))
    assert by_pair[("Cases", "Cables")] == (2, pytest.approx(1.25))
    assert ("Cases", "Cases") not in by_pair  # C and C2 share a leaf: not complement evidence
    assert set(cats.columns) == {"a", "b", "count", "lift", "pmi", "npmi"}


def test_bad_input_is_a_clear_error_and_null_rows_are_counted() -> None:
    with pytest.raises(ValueError, match="basket_id"):
        CoPurchase.from_baskets(pl.DataFrame({"order": ["1"], "product_id": ["P"]}))
    with pytest.raises(ValueError, match="min_support"):
        CoPurchase.from_baskets(baskets_frame(ROWS), min_support=0)
    frame = pl.DataFrame({"basket_id": [1, 1, None, 2, 2], "product_id": [10, 11, 10, 10, 11]})
    co = CoPurchase.from_baskets(frame)  # integer ids are read as strings
    assert co.dropped_rows == 1
    assert co.pair("10", "11") is not None and co.pair("10", "11").npmi == pytest.approx(1.0)  # type: ignore[union-attr]


def test_empty_input() -> None:
    co = CoPurchase.from_baskets(baskets_frame([]))
    assert co.baskets == 0 and co.pairs.height == 0 and co.top_for("P", 3) == [] and co.popularity() == {}


@pytest.mark.slow
def test_instacart_baskets(shared_data: Path) -> None:
    path = shared_data / "instacart-partial" / "order_products__train.csv"
    lines = path.read_text(encoding="utf-8").splitlines()[:-1]  # the last line is cut off (see README)
    frame = pl.read_csv("\n".join(lines).encode(), infer_schema_length=0).select(
        pl.col("order_id").alias("basket_id"), "product_id"
    )
    co = CoPurchase.from_baskets(frame)
    assert co.baskets > 9000
    assert co.pairs.height > 1000 and co.pairs.height % 2 == 0
    assert (co.pairs["count"] >= 2).all()
    top = co.top_for(co.pairs["a"][0], 3)
    assert top and all(s.count >= 2 for s in top)
