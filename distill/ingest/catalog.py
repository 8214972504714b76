"""Catalog and order-log ingest: files in, validated `Product`s and basket rows out, every bad row reported.

Owns column mapping, text normalization and the rejection threshold (file formats live in distill.ingest.tabular).
It never guesses a product id and never drops a row without writing down which row and why.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.errors import CatalogError
from distill.ingest.tabular import (
    Format,
    RowError,
    RowErrorCode,
    SourceRecord,
    detect_format,
    read_records,
    with_progress,
)
from graph_schema.models import Product, StageReport

__all__ = [
    "Catalog", "ColumnMapping", "Format", "IngestReport", "InteractionReport", "Interactions", "RowError",
    "RowErrorCode", "SourceRecord", "TooManyRejected", "catalog_from_records", "interactions_from_pairs",
    "normalize_text", "parse_category", "parse_price", "read_catalog", "read_interactions",
]

# Candidate source columns per field, matched case-insensitively, first present wins.
_DEFAULT_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "id": ("id", "product_id", "sku", "item_id", "item id", "asin", "productid"),
    "title": ("title", "name", "product_name", "product_title", "titles", "item_name"),
    "description": ("description", "desc", "product_description", "long_description"),
    "brand": ("brand", "manufacturer", "vendor", "make"),
    "category": ("category", "categories", "category_path", "product_type", "breadcrumb"),
    "price": ("price", "list_price", "sale_price", "unit_price"),
}
_BASKET_COLUMNS: Final = ("basket_id", "order_id", "session_id", "transaction_id", "session id", "order id")
_PRODUCT_COLUMNS: Final = ("product_id", "item_id", "sku", "asin", "item id", "id")
_AUTO_SEPARATORS: Final = (" > ", ">", " | ", "|")
_PRICE_NOISE = re.compile(r"[\s$€£¥]|usd|eur|gbp", re.IGNORECASE)
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")


# ---------------------------------------------------------------------------------------------------- models


class TooManyRejected(CatalogError):
    """More rows were rejected than allowed. `.report` holds every row error (a CatalogError, so callers
    that catch CatalogError need not know this type)."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


class ColumnMapping(BaseModel):
    """Which source column feeds which Product field. None = pick from the usual names present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    title: str | None = None
    description: str | None = None
    brand: str | None = None
    category: str | None = None
    category_separator: str | None = Field(
        default=None, description='split a category string on this (e.g. " > "); None = JSON list or auto'
    )
    price: str | None = None
    attribute_columns: list[str] | None = Field(
        default=None, description="copied into Product.attributes; None = every column not mapped above"
    )

    def resolve(self, columns: Sequence[str]) -> ColumnMapping:
        """A mapping naming real columns of `columns`; raises CatalogError when id/title cannot be found."""
        present = list(columns)
        lowered = {c.strip().lower(): c for c in present}
        chosen: dict[str, str | None] = {}
        for field, candidates in _DEFAULT_COLUMNS.items():
            explicit = getattr(self, field)
            if explicit is not None:
                if explicit not in present:
                    raise CatalogError(f"column {explicit!r} (mapped to {field}) not found; columns: {present}")
                chosen[field] = explicit
            else:
                chosen[field] = next((lowered[c] for c in candidates if c in lowered), None)
        for required in ("id", "title"):
            if chosen[required] is None:
                raise CatalogError(
                    f"no {required} column: tried {list(_DEFAULT_COLUMNS[required])}; columns: {present}. "
                    f"Name yours with --columns {required}=COLUMN, or `{required} = \"COLUMN\"` under [columns] "
                    f"in shelfgraph.toml (Python: ColumnMapping({required}=...))"
                )
        if self.attribute_columns is None:
            mapped = {c for c in chosen.values() if c is not None}
            attributes = [c for c in present if c not in mapped]
        else:
            missing = [c for c in self.attribute_columns if c not in present]
            if missing:
                raise CatalogError(f"attribute columns {missing} not found; columns: {present}")
            attributes = list(self.attribute_columns)
        return self.model_copy(update={**chosen, "attribute_columns": attributes})

    @staticmethod
    def usual_names(field: str) -> tuple[str, ...]:
        """The column names tried (case-insensitively) for `field` when the mapping leaves it None."""
        return _DEFAULT_COLUMNS[field]


class IngestReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    format: str
    rows_read: int = 0
    accepted: int = 0
    rejected: list[RowError] = Field(default_factory=list)
    warnings: list[RowError] = Field(default_factory=list, description="rows kept after dropping a bad field")
    duplicates_folded: int = Field(
        default=0, description="rows repeating an earlier row's id with identical content, folded into it"
    )
    columns: list[str] = Field(default_factory=list, description="the source's columns, in order")
    mapping: ColumnMapping | None = Field(default=None, description="the mapping used, naming real columns")

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for error in self.rejected:
            counts[error.code] = counts.get(error.code, 0) + 1
        return counts

    def as_stage_report(self, stage: str = "ingest", wall_seconds: float = 0.0) -> StageReport:
        return StageReport(
            stage=stage, items_in=self.rows_read, items_out=self.accepted, rejected=len(self.rejected),
            rejection_reasons=self.reason_counts(), wall_seconds=wall_seconds,
        )


@dataclass(frozen=True)
class Catalog:
    products: tuple[Product, ...]
    report: IngestReport

    def __len__(self) -> int:
        return len(self.products)

    def by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}


class InteractionReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    rows_read: int = 0
    kept: int = 0
    duplicates: int = Field(default=0, description="repeated (basket, product) rows folded into one")
    unknown_product_rows: int = 0
    unknown_product_sample: list[str] = Field(default_factory=list)
    rejected: list[RowError] = Field(default_factory=list)


@dataclass(frozen=True)
class Interactions:
    """Baskets (orders or sessions) as one row per (basket_id, product_id), both strings, deduplicated."""

    baskets: pl.DataFrame
    report: InteractionReport

    def __post_init__(self) -> None:
        if self.baskets.schema != pl.Schema({"basket_id": pl.String, "product_id": pl.String}):
            raise ValueError(f"baskets must be (basket_id: str, product_id: str), got {self.baskets.schema}")


# ------------------------------------------------------------------------------------------- normalization


def normalize_text(value: str) -> str:
    """HTML entities unescaped, NFKC, whitespace collapsed, stripped (catalog text arrives in every shape)."""
    # The guards are fast paths (ingest runs this several times per row); the result is the same without them.
    if "&" in value:
        value = html.unescape(value)
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)
    return " ".join(value.split())


def _cell_text(value: Any) -> str | None:
    """Any cell (str, number, list, dict) as normalized text; empty becomes None."""
    if type(value) is str:  # the common case first: this runs several times per row
        return normalize_text(value) or None
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple, dict)):
        value = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else " ".join(
            str(v) for v in value if v is not None
        )
    text = normalize_text(str(value))
    return text or None


def parse_price(value: Any) -> float | None:
    """'$1,299.00' -> 1299.0; empty -> None. Raises ValueError with the offending text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = _PRICE_NOISE.sub("", str(value))
        if _THOUSANDS.match(text):
            text = text.replace(",", "")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    if number < 0:
        raise ValueError(f"must be >= 0, got {number:g}")
    return number


def parse_category(value: Any, separator: str | None = None) -> tuple[str, ...]:
    """A category path from a list, a JSON list string, or a string split on `separator` (auto if None)."""
    if value is None:
        return ()
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and separator is None:
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = [part for part in stripped.strip("[]").split(",")]
        elif separator is not None:
            value = stripped.split(separator)
        else:
            sep = next((s for s in _AUTO_SEPARATORS if s in stripped), None)
            value = stripped.split(sep) if sep else [stripped]
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        value = value[0]  # several paths: the first is the primary one
    if not isinstance(value, (list, tuple)):
        value = [value]
    parts = (_cell_text(part) for part in value)
    return tuple(part for part in parts if part)


# ------------------------------------------------------------------------------------------------ reading


# ------------------------------------------------------------------------------------------------ products


def _short_validation(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()[:3])


def _product_from_values(values: Mapping[str, Any], mapping: ColumnMapping) -> Product:
    """Raises ValueError / ValidationError with a message fit for a RowError."""
    def get(column: str | None) -> Any:
        return None if column is None else values.get(column)

    try:
        price = parse_price(get(mapping.price))
    except ValueError as exc:
        raise ValueError(f"price: {exc}") from None
    attributes: dict[str, str] = {}
    for column in mapping.attribute_columns or ():
        text = _cell_text(values.get(column))
        if text is not None:
            attributes[normalize_text(column)] = text
    return Product(
        id=str(get(mapping.id)).strip(),
        title=_cell_text(get(mapping.title)) or "",
        description=_cell_text(get(mapping.description)),
        brand=_cell_text(get(mapping.brand)),
        category=parse_category(get(mapping.category), mapping.category_separator),
        price=price,
        attributes=attributes,
    )


def catalog_from_records(
    records: Iterable[SourceRecord],
    *,
    columns: Sequence[str],
    source: str,
    format: str,
    mapping: ColumnMapping | None = None,
    max_rejected: float = 0.05,
    progress: bool = False,
) -> Catalog:
    """Validate records into a Catalog. Shared by read_catalog and the dataset readers so both report alike."""
    resolved = (mapping or ColumnMapping()).resolve(columns)
    report = IngestReport(source=source, format=format, columns=list(columns), mapping=resolved)
    products: list[Product] = []
    first_row: dict[str, tuple[int, int]] = {}  # id -> (row, position in products) of the kept row
    folded = 0
    rows_read = 0  # plain counters: assigning to a pydantic field per row costs more than the row
    for record in with_progress(records, progress, f"reading {Path(source).name}"):
        rows_read += 1
        raw_id = (record.values or {}).get(resolved.id or "")
        product_id = None if raw_id is None else str(raw_id).strip() or None
        if record.error is not None or record.values is None:
            assert record.error is not None
            error = record.error
            if error.product_id is None and product_id is not None:
                error = error.model_copy(update={"product_id": product_id})
            report.rejected.append(error)
            continue

        def reject(code: RowErrorCode, reason: str, pid: str | None = product_id, rec: SourceRecord = record) -> None:
            report.rejected.append(RowError(row=rec.row, line=rec.line, product_id=pid, code=code, reason=reason))

        if product_id is None:
            reject("missing_id", f"empty id column {resolved.id!r}")
            continue
        if not _cell_text(record.values.get(resolved.title or "")):
            reject("missing_title", f"empty title column {resolved.title!r}")
            continue
        try:
            product = _product_from_values(record.values, resolved)
        except ValidationError as exc:
            reject("invalid_value", _short_validation(exc))
            continue
        except ValueError as exc:
            reject("invalid_value", str(exc))
            continue
        if product_id in first_row:
            # Scraped dumps repeat whole lines (Amazon 2018 metadata: a third of some files). A repeat that
            # yields the same product is folded and counted; one that differs is a conflict: both rows named.
            first, position = first_row[product_id]
            if products[position] == product:
                folded += 1
            else:
                reject("duplicate_id", f"id {product_id!r} at rows {first} and {record.row} with different "
                                       f"content (row {first} is kept)")
            continue
        first_row[product_id] = (record.row, len(products))
        products.append(product)
        report.warnings.extend(record.warnings)
    report.rows_read = rows_read
    report.accepted = len(products)
    report.duplicates_folded = folded
    _check_threshold(report, max_rejected)
    return Catalog(products=tuple(products), report=report)


def _check_threshold(report: IngestReport, max_rejected: float) -> None:
    if report.rows_read == 0:
        raise CatalogError(f"{report.source}: no data rows")
    rejected = len(report.rejected)
    limit = max_rejected * report.rows_read if max_rejected < 1 else max_rejected
    if rejected > limit or report.accepted == 0:
        shown = "\n  ".join(str(e) for e in report.rejected[:5])
        allowed = f"{max_rejected:.1%} of rows" if max_rejected < 1 else f"{int(max_rejected)} rows"
        raise TooManyRejected(
            f"{report.source}: {rejected} of {report.rows_read} rows rejected (allowed: {allowed}; raise it with "
            f"--max-rejected or SHELFGRAPH_MAX_REJECTED_ROWS); first errors:\n  {shown}",
            report,
        )


def read_catalog(
    path: Path,
    *,
    format: Format | None = None,
    mapping: ColumnMapping | None = None,
    max_rejected: float = 0.05,
    progress: bool = False,
) -> Catalog:
    """Read a product catalog file. Raises CatalogError (with `.report`) when too many rows are rejected.

    `max_rejected` is a share of rows when < 1, else a count.
    """
    path = Path(path)
    fmt = detect_format(path, format)
    columns, records = read_records(path, fmt)
    return catalog_from_records(
        records, columns=columns, source=str(path), format=fmt, mapping=mapping,
        max_rejected=max_rejected, progress=progress,
    )


# -------------------------------------------------------------------------------------------- interactions


def _pick(columns: Sequence[str], explicit: str | None, candidates: Sequence[str], what: str) -> str:
    if explicit is not None:
        if explicit not in columns:
            raise CatalogError(f"{what} column {explicit!r} not found; columns: {list(columns)}")
        return explicit
    lowered = {c.strip().lower(): c for c in columns}
    found = next((lowered[c] for c in candidates if c in lowered), None)
    if found is None:
        raise CatalogError(f"no {what} column (tried {list(candidates)}); columns: {list(columns)}")
    return found


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def interactions_from_pairs(
    pairs: pl.DataFrame, report: InteractionReport, known_ids: Collection[str] | None = None, sample: int = 10
) -> Interactions:
    """Deduplicate (basket_id, product_id) pairs and drop (and count) products outside `known_ids`."""
    pairs = pairs.select(pl.col("basket_id").cast(pl.String), pl.col("product_id").cast(pl.String))
    if known_ids is not None:
        known = pl.DataFrame({"product_id": list(known_ids)}, schema={"product_id": pl.String})
        unknown = pairs.join(known, on="product_id", how="anti", maintain_order="left")
        report.unknown_product_rows += unknown.height
        report.unknown_product_sample = unknown["product_id"].unique(maintain_order=True).head(sample).to_list()
        pairs = pairs.join(known, on="product_id", how="semi", maintain_order="left")
    deduplicated = pairs.unique(maintain_order=True)
    report.duplicates += pairs.height - deduplicated.height
    report.kept = deduplicated.height
    return Interactions(baskets=deduplicated, report=report)


def read_interactions(
    path: Path,
    *,
    basket_column: str | None = None,
    product_column: str | None = None,
    required_columns: Sequence[str] = (),
    known_ids: Collection[str] | None = None,
    format: Format | None = None,
    progress: bool = False,
) -> Interactions:
    """Read an order/session log (one line per basket item). Rows with an empty basket, product or
    `required_columns` value are rejected; rows naming products outside `known_ids` are dropped and counted."""
    path = Path(path)
    fmt = detect_format(path, format)
    columns, records = read_records(path, fmt)
    basket_col = _pick(columns, basket_column, _BASKET_COLUMNS, "basket")
    product_col = _pick(columns, product_column, _PRODUCT_COLUMNS, "product")
    for column in required_columns:
        _pick(columns, column, (), "required")
    report = InteractionReport(source=str(path))
    baskets: list[str] = []
    products: list[str] = []
    checked = (basket_col, product_col, *required_columns)
    rows_read = 0
    for record in with_progress(records, progress, f"reading {path.name}"):
        rows_read += 1
        if record.error is not None or record.values is None:
            assert record.error is not None
            report.rejected.append(record.error)
            continue
        values = record.values
        empty = [c for c in checked if _is_blank(values.get(c))]
        if empty:
            report.rejected.append(RowError(
                row=record.row, line=record.line, product_id=_cell_text(values.get(product_col)),
                code="malformed_line", reason=f"empty {', '.join(repr(c) for c in empty)}"))
            continue
        baskets.append(str(values[basket_col]).strip())
        products.append(str(values[product_col]).strip())
    report.rows_read = rows_read
    last = report.rejected[-1] if report.rejected else None
    if last is not None and last.row == report.rows_read and last.code == "malformed_line":
        # An incomplete final row is the signature of a file cut off mid-write (e.g. instacart-partial).
        report.rejected[-1] = last.model_copy(update={"code": "truncated_line", "reason": last.reason + " (last row)"})
    pairs = pl.DataFrame({"basket_id": baskets, "product_id": products}, schema={
        "basket_id": pl.String, "product_id": pl.String})
    return interactions_from_pairs(pairs, report, known_ids)
