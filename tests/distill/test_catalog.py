"""Catalog and order-log ingest: every format, every broken-row case, the rejection threshold."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from distill.ingest.catalog import (
    ColumnMapping,
    Format,
    IngestReport,
    TooManyRejected,
    normalize_text,
    parse_category,
    parse_price,
    read_catalog,
    read_interactions,
)
from distill.ingest.datasets import load_amazon2018, load_dataset
from distill.errors import CatalogError

ROWS = [
    {"sku": "A-1", "name": "Novaphone N12 Case &amp; Stand", "price": "24.99", "category": "Phones > Cases",
     "brand": "Shellwise", "color": "Sage"},
    {"sku": "A-2", "name": "  Novaphone   N12\u00a0Phone ", "price": "$699.00", "category": "Phones > Smartphones",
     "brand": "Novaphone", "color": "Graphite"},
    {"sku": "A-3", "name": "ＵＳＢ-C Cable", "price": "", "category": "Phones > Cables", "brand": "", "color": ""},
]


def write(path: Path, fmt: Format, rows: list[dict[str, str]]) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
    else:
        pl.DataFrame(rows).write_csv(path, separator="," if fmt == "csv" else "\t")
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_each_format_reads_and_normalizes(tmp_path: Path, fmt: Format) -> None:
    path = write(tmp_path / f"catalog.{fmt}", fmt, ROWS)
    catalog = read_catalog(path)
    assert catalog.report.format == fmt
    assert (catalog.report.rows_read, catalog.report.accepted, catalog.report.rejected) == (3, 3, [])
    first, second, third = catalog.products
    assert first.id == "A-1"
    assert first.title == "Novaphone N12 Case & Stand"  # entity unescaped
    assert second.title == "Novaphone N12 Phone"  # whitespace and NBSP collapsed
    assert third.title == "USB-C Cable"  # NFKC folds full-width letters
    assert first.category == ("Phones", "Cases")
    assert first.price == 24.99 and second.price == 699.0 and third.price is None
    assert first.brand == "Shellwise" and third.brand is None
    assert first.attributes == {"color": "Sage"} and third.attributes == {}


def test_jsonl_with_native_types_and_list_category(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"id": 7, "title": "Tent", "price": 99.5, "category": ["Outdoor", "Tents"], "weight": 1.6}) + "\n",
        encoding="utf-8",
    )
    (product,) = read_catalog(path).products
    assert (product.id, product.price, product.category) == ("7", 99.5, ("Outdoor", "Tents"))
    assert product.attributes == {"weight": "1.6"}


def test_explicit_mapping_and_separator(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "code,label,path,cost,colour,notes\nX1,Grinder,Kitchen|Coffee|Grinders,229,black,n\n", encoding="utf-8"
    )
    mapping = ColumnMapping(id="code", title="label", category="path", category_separator="|", price="cost",
                            attribute_columns=["colour"])
    (product,) = read_catalog(path, mapping=mapping).products
    assert product.category == ("Kitchen", "Coffee", "Grinders")
    assert product.price == 229.0
    assert product.attributes == {"colour": "black"}


def test_mapping_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("code,label\nX1,Grinder\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="no id column"):
        read_catalog(path)
    with pytest.raises(CatalogError, match="'nope'"):
        read_catalog(path, mapping=ColumnMapping(id="code", title="nope"))
    with pytest.raises(CatalogError, match="format"):
        read_catalog(tmp_path / "c.xlsx")
    with pytest.raises(CatalogError, match="not found"):
        read_catalog(tmp_path / "missing.csv")


BROKEN_CSV = (
    "id,title,price\n"        # line 1
    "A1,Phone,10\n"           # line 2, row 1
    ",No id,5\n"              # line 3, row 2: missing id
    "A2,Case,abc\n"           # line 4, row 3: wrong type
    "A1,Phone again,11\n"     # line 5, row 4: duplicate of row 1
    "A3,\"Multi\nline\",3\n"  # lines 6-7, row 5: fine
    "A4,,3\n"                 # line 8, row 6: missing title
    "A5,Neg,-2\n"             # line 9, row 7: negative price
    "A6,Cut"                  # line 10, row 8: truncated (too few fields, no newline)
)


def errors_by_row(report: IngestReport) -> dict[int, tuple[int | None, str | None, str, str]]:
    return {e.row: (e.line, e.product_id, e.code, e.reason) for e in report.rejected}


def test_broken_csv_rows_are_reported_with_rows_lines_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(BROKEN_CSV, encoding="utf-8")
    catalog = read_catalog(path, max_rejected=10)
    assert [p.id for p in catalog.products] == ["A1", "A3"]
    assert catalog.products[0].title == "Phone"  # the first of a duplicate id wins
    assert catalog.products[1].title == "Multi line"
    report = catalog.report
    assert (report.rows_read, report.accepted, len(report.rejected)) == (8, 2, 6)
    errors = errors_by_row(report)
    assert set(errors) == {2, 3, 4, 6, 7, 8}
    assert errors[2][:3] == (3, None, "missing_id")
    assert errors[3][:3] == (4, "A2", "invalid_value") and "abc" in errors[3][3]
    assert errors[4][:3] == (5, "A1", "duplicate_id") and "row 1" in errors[4][3]
    assert errors[6][:3] == (8, "A4", "missing_title")
    assert errors[7][:3] == (9, "A5", "invalid_value") and ">= 0" in errors[7][3]
    assert errors[8][:3] == (10, "A6", "truncated_line") and "expected 3 fields, got 2" in errors[8][3]
    assert report.reason_counts() == {
        "missing_id": 1, "invalid_value": 2, "duplicate_id": 1, "missing_title": 1, "truncated_line": 1}
    stage = report.as_stage_report()
    assert (stage.items_in, stage.items_out, stage.rejected) == (8, 2, 6)


def test_unterminated_quote_on_last_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_text('id,title\nA1,Phone\nA2,"Case for the\n', encoding="utf-8")
    catalog = read_catalog(path, max_rejected=1)
    assert [p.id for p in catalog.products] == ["A1"]
    (error,) = catalog.report.rejected
    assert (error.row, error.line, error.code) == (2, 3, "truncated_line")


def test_malformed_and_truncated_jsonl_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "A1", "title": "Phone"}\n'
        "\n"
        '{"id": "A2", "title": Case}\n'
        '["not", "an", "object"]\n'
        '{"id": "A3", "title": "Tent"}\n'
        '{"id": "A4", "tit',
        encoding="utf-8",
    )
    catalog = read_catalog(path, max_rejected=5)
    assert [p.id for p in catalog.products] == ["A1", "A3"]
    errors = errors_by_row(catalog.report)
    assert {row: (line, code) for row, (line, _, code, _) in errors.items()} == {
        2: (3, "malformed_line"), 3: (4, "malformed_line"), 5: (6, "truncated_line")}


def test_too_many_rejected_rows_raise_with_the_report(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(BROKEN_CSV, encoding="utf-8")
    with pytest.raises(CatalogError, match=r"6 of 8 rows rejected") as caught:
        read_catalog(path)  # default: 5 %
    assert isinstance(caught.value, TooManyRejected)
    assert len(caught.value.report.rejected) == 6
    assert "row 2 (line 3)" in str(caught.value)  # the first row errors are shown
    with pytest.raises(CatalogError, match="allowed: 5 rows"):
        read_catalog(path, max_rejected=5)  # a count
    assert read_catalog(path, max_rejected=6).report.accepted == 2
    assert read_catalog(path, max_rejected=0.75).report.accepted == 2  # a share: 6/8 allowed


def test_no_accepted_rows_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,title\n,x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="1 of 1 rows rejected"):
        read_catalog(path, max_rejected=100)
    path.write_text("id,title\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="no data rows"):
        read_catalog(path)


def test_sample_catalog_reads_cleanly() -> None:
    sample = Path(__file__).resolve().parents[2] / "shelfgraph" / "sample"
    catalog = read_catalog(sample / "catalog.csv")
    assert catalog.report.rejected == []
    assert 150 <= len(catalog) <= 250
    titles = {p.title for p in catalog.products}
    assert "Pour-Over Dripper & Filter Starter Set" in titles
    assert not any("&amp;" in t or "&quot;" in t for t in titles)
    departments = {p.category[0] for p in catalog.products}
    assert {"Electronics", "Home & Kitchen", "Sports & Outdoors"} <= departments
    assert all(p.price is not None and p.brand for p in catalog.products)
    orders = read_interactions(sample / "orders.csv", known_ids=catalog.by_id().keys())
    assert orders.report.unknown_product_rows == 0 and orders.report.rejected == []
    assert orders.baskets.height >= 600


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12.99", 12.99), ("$1,299.00", 1299.0), (" 5 USD", 5.0), ("", None), (None, None), (3, 3.0)],
)
def test_parse_price(raw: object, expected: float | None) -> None:
    assert parse_price(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", True, "1,2,3"])
def test_parse_price_refuses(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_price(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A > B > C", ("A", "B", "C")),
        ("A|B", ("A", "B")),
        ('["A", "B &amp; C"]', ("A", "B & C")),
        ([["A", "B"], ["X"]], ("A", "B")),
        ("Single", ("Single",)),
        ("", ()),
        (None, ()),
    ],
)
def test_parse_category(raw: object, expected: tuple[str, ...]) -> None:
    assert parse_category(raw) == expected


def test_normalize_text() -> None:
    assert normalize_text("  Caf&eacute;\u00a0 &quot;Crema&quot;\n\t") == 'Café "Crema"'
    assert normalize_text("ｆｕｌｌ width") == "full width"


def test_read_interactions_dedupes_and_reports_unknown_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id,product_id,qty\n"
        "o1,A1,1\n"
        "o1,A2,1\n"
        "o1,A2,2\n"  # same (basket, product): folded
        "o2,ZZ,1\n"  # unknown product: dropped and counted
        "o2,A1,1\n"
        ",A1,1\n"    # no basket: rejected
        "o3,A3,",    # cut off last row
        encoding="utf-8",
    )
    interactions = read_interactions(path, required_columns=("qty",), known_ids={"A1", "A2", "A3"})
    assert interactions.baskets.to_dict(as_series=False) == {
        "basket_id": ["o1", "o1", "o2"], "product_id": ["A1", "A2", "A1"]}
    report = interactions.report
    assert (report.rows_read, report.kept, report.duplicates, report.unknown_product_rows) == (7, 3, 1, 1)
    assert report.unknown_product_sample == ["ZZ"]
    assert [(e.row, e.line, e.code) for e in report.rejected] == [(6, 7, "malformed_line"), (7, 8, "truncated_line")]


def test_read_interactions_column_detection(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    path.write_text('{"session_id": 1, "item_id": 5}\n{"session_id": 1, "item_id": 6}\n', encoding="utf-8")
    interactions = read_interactions(path)
    assert interactions.baskets["basket_id"].to_list() == ["1", "1"]
    assert interactions.baskets.schema == pl.Schema({"basket_id": pl.String, "product_id": pl.String})
    with pytest.raises(CatalogError, match="no basket column"):
        read_interactions(write(tmp_path / "x.csv", "csv", [{"a": "1", "product_id": "2"}]))


def _amazon_line(asin: str, title: str, also_buy: list[str]) -> str:
    return json.dumps({"asin": asin, "title": title, "brand": "B", "category": ["Gift Cards", "Cards"],
                       "price": "$25.00", "also_buy": also_buy}) + "\n"


def test_identical_duplicate_lines_are_folded_and_counted(tmp_path: Path) -> None:
    lines = [_amazon_line(f"A{i}", f"Card {i}", [f"A{(i + 1) % 20}"]) for i in range(20)]
    # Scraped dumps repeat whole lines: 10 of the 20 products appear 2 or 3 times, far past a 5% threshold.
    repeated = [*lines, *lines[:10], *lines[:5]]
    path = tmp_path / "meta_Gift_Cards.json"
    path.write_text("".join(repeated), encoding="utf-8")
    data = load_amazon2018(path, max_rejected=0.05)
    report = data.catalog.report
    assert (report.rows_read, report.accepted, report.duplicates_folded, len(report.rejected)) == (35, 20, 15, 0)
    assert sorted(p.id for p in data.catalog.products) == sorted(f"A{i}" for i in range(20))
    assert data.edges.height == 20  # a repeated line adds no second copy of its edges


def test_conflicting_duplicates_are_rejected_naming_both_rows(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        '{"id": "A1", "title": "Phone"}\n'
        '{"id": "A2", "title": "Case"}\n'
        '{"id": "A1", "title": "Phone"}\n'          # row 3: identical to row 1, folded
        '{"id": "A1", "title": "Tablet"}\n',        # row 4: same id, other content: a conflict
        encoding="utf-8",
    )
    catalog = read_catalog(path, max_rejected=1)
    assert [p.title for p in catalog.products] == ["Phone", "Case"]
    assert catalog.report.duplicates_folded == 1
    [conflict] = catalog.report.rejected
    assert (conflict.row, conflict.product_id, conflict.code) == (4, "A1", "duplicate_id")
    assert "rows 1 and 4" in conflict.reason


def test_max_rejected_rows_setting_reaches_the_readers(tmp_path: Path) -> None:
    from evaluation.run import load_eval_data

    path = tmp_path / "meta.json"
    good = [_amazon_line(f"A{i}", f"Card {i}", []) for i in range(8)]
    path.write_text("".join([*good, "{not json\n", "[1]\n"]), encoding="utf-8")  # 2 of 10 rows bad
    with pytest.raises(TooManyRejected):
        load_eval_data("amazon2018", path, max_rejected=0.1)
    assert load_dataset("amazon2018", path, max_rejected=0.25).catalog.report.accepted == 8
