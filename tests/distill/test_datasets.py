"""The dataset readers against the real files in ../shared/data (skipped when absent). The expected counts
are those in each folder's PROVENANCE.txt / README, checked against the files themselves."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from distill.ingest.catalog import Interactions
from distill.ingest.datasets import (
    AmazonData,
    BundleRecData,
    GroceriesData,
    InstacartData,
    load_dataset,
    parse_bundlerec_categories,
)
from distill.errors import CatalogError


@pytest.mark.slow
def test_bundlerec(shared_data: Path) -> None:
    data = load_dataset("bundlerec", shared_data / "bundlerec-electronics")
    assert isinstance(data, BundleRecData)
    report = data.catalog.report
    assert (report.rows_read, report.accepted, report.rejected) == (3499, 3499, [])
    products = data.catalog.by_id()
    assert all(p.category and p.category[0] in {"Electronics", "Cell Phones & Accessories"} for p in products.values())
    assert not any("&amp;" in p.title or "&quot;" in p.title for p in products.values())
    # a level name holding ", " stays one level
    assert any("Batteries, Chargers & Accessories" in p.category for p in products.values())
    assert data.bundles.height == 6165 and data.bundles["bundle_id"].n_unique() == 1750
    assert set(data.bundles["product_id"]) <= set(products)
    assert data.intents.height == 1750 and data.intents["intent"].n_unique() == 1422
    assert data.session_bundles.height == 1750 and data.session_bundles["session_id"].n_unique() == 893
    assert data.sessions.height == 6539 and data.sessions["session_id"].n_unique() == 1145
    assert data.sessions.schema == pl.Schema({"session_id": pl.String, "product_id": pl.String})
    # Sessions also name 1,444 items missing from the 3,499-item catalog: dropped from interactions, counted.
    assert isinstance(data.interactions, Interactions)
    interactions = data.interactions
    assert interactions.report.unknown_product_rows == 1497
    assert interactions.baskets.height == 6539 - 1497
    assert set(interactions.baskets["product_id"]) <= set(products)


def test_bundlerec_category_parsing() -> None:
    assert parse_bundlerec_categories("[[Electronics,Batteries, Chargers & Accessories,AC Adapters],[Cell,Cases]]") == (
        ("Electronics", "Batteries, Chargers & Accessories", "AC Adapters"), ("Cell", "Cases"))
    assert parse_bundlerec_categories("") == ()


@pytest.mark.slow
def test_amazon2018(shared_data: Path) -> None:
    data = load_dataset("amazon2018", shared_data / "amazon2018-giftcards")
    assert isinstance(data, AmazonData)
    report = data.catalog.report
    assert (report.rows_read, report.accepted, report.rejected) == (1547, 1547, [])
    products = list(data.catalog.products)
    assert sum(p.description is not None for p in products) == 805
    assert sum(p.brand is not None for p in products) == 527
    # 362 rows carry a price; 4 of them hold page markup instead: dropped from the product and reported
    assert sum(p.price is not None for p in products) == 358
    assert len(report.warnings) == 4 and all("price" in w.reason for w in report.warnings)
    assert all(not p.description or "<div" not in p.description for p in products)
    assert all(p.category[:1] in {("Gift Cards",), ()} for p in products)
    assert all(len(level) <= 60 for p in products for level in p.category)
    first = data.catalog.by_id()["B001BKEWF2"]
    assert first.price is None and first.attributes["Shipping Weight"] == "3 ounces"
    kinds = dict(data.edges.group_by("kind").len().iter_rows())
    assert kinds == {"also_buy": 5993, "also_view": 6675}
    assert pl.concat([data.edges["source"], data.edges["target"]]).n_unique() <= 1547
    assert data.edges["source"].n_unique() == 699
    assert data.interactions is None


@pytest.mark.slow
def test_instacart(shared_data: Path) -> None:
    data = load_dataset("instacart", shared_data / "instacart-partial")
    assert isinstance(data, InstacartData)
    report = data.catalog.report
    assert (report.rows_read, report.accepted, report.rejected) == (49688, 49688, [])
    first = data.catalog.by_id()["1"]
    assert (first.title, first.category) == ("Chocolate Sandwich Cookies", ("snacks", "cookies cakes"))
    assert data.interactions is not None
    baskets, orders = data.interactions.baskets, data.interactions.report
    assert orders.rows_read == 107205
    (cut,) = orders.rejected  # the cut-off last line "263927,32655,,"
    assert (cut.row, cut.line, cut.product_id, cut.code) == (107205, 107206, "32655", "truncated_line")
    assert baskets.height == 107204
    assert baskets["basket_id"].n_unique() == 10167
    assert baskets["product_id"].n_unique() == 17267
    assert orders.unknown_product_rows == 0


@pytest.mark.slow
def test_groceries(shared_data: Path) -> None:
    data = load_dataset("groceries", shared_data / "groceries")
    assert isinstance(data, GroceriesData)
    assert data.catalog.report.accepted == 169
    assert {p.id for p in data.catalog.products} == {p.title for p in data.catalog.products}
    assert data.interactions is not None
    baskets = data.interactions.baskets
    assert baskets.height == 43367 and baskets["basket_id"].n_unique() == 9835
    first_basket = baskets.filter(pl.col("basket_id") == "1")["product_id"].to_list()
    assert first_basket == ["citrus fruit", "semi-finished bread", "margarine", "ready soups"]


def test_unknown_dataset_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="unknown dataset"):
        load_dataset("movielens", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match="item_titles.csv"):
        load_dataset("bundlerec", tmp_path)
    with pytest.raises(CatalogError, match="no meta_"):
        load_dataset("amazon2018", tmp_path)
