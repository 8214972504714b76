"""Readers for the public dataset layouts in ../shared/data (BundleRec, Amazon 2018, Instacart, Groceries).

Each reader turns one layout into the same Catalog (+ Interactions) that `distill.ingest.catalog` produces, with
the same row-level reporting. Ids stay the datasets' own ids, as strings; nothing here is copied anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

from distill.ingest.catalog import (
    Catalog,
    ColumnMapping,
    InteractionReport,
    Interactions,
    catalog_from_records,
    interactions_from_pairs,
    normalize_text,
    parse_price,
    read_interactions,
)
from distill.errors import CatalogError
from distill.ingest.tabular import RowError, SourceRecord

DatasetName = Literal["bundlerec", "amazon2018", "instacart", "groceries"]
DATASET_NAMES: Final[tuple[DatasetName, ...]] = ("bundlerec", "amazon2018", "instacart", "groceries")

# BundleRec paths look like "[[Electronics,Batteries, Chargers & Accessories,AC Adapters],[...]]": a comma
# followed by a space is part of a name, a bare comma separates levels.
_LEVEL_SPLIT = re.compile(r",(?! )")
_HTML_TAG = re.compile(r"<[^>]+>")
_DEFAULT_MAPPING = ColumnMapping(
    id="id", title="title", description="description", brand="brand", category="category", price="price",
)


@dataclass(frozen=True)
class LoadedDataset:
    """What every dataset reader returns: a catalog and, where the dataset has baskets, interactions."""

    catalog: Catalog
    interactions: Interactions | None


@dataclass(frozen=True)
class BundleRecData(LoadedDataset):
    sessions: pl.DataFrame  # session_id, product_id (all rows, including items outside the catalog)
    bundles: pl.DataFrame  # bundle_id, product_id
    session_bundles: pl.DataFrame  # session_id, bundle_id
    intents: pl.DataFrame  # bundle_id, intent


@dataclass(frozen=True)
class AmazonData(LoadedDataset):
    edges: pl.DataFrame  # source, target, kind ("also_buy" | "also_view"); targets inside the file only
    edges_outside: int  # also_buy/also_view entries whose target is not in the file (dropped, counted)


@dataclass(frozen=True)
class InstacartData(LoadedDataset):
    pass


@dataclass(frozen=True)
class GroceriesData(LoadedDataset):
    pass


def _need(folder: Path, *names: str) -> list[Path]:
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CatalogError(f"{folder}: missing {missing} (expected files: {list(names)})")
    return paths


def _read_strings(path: Path, **options: Any) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema=False, **options)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc


def _frame_records(frame: pl.DataFrame) -> Iterator[SourceRecord]:
    # The data row of a header CSV starts on physical line row + 1.
    for number, values in enumerate(frame.iter_rows(named=True), start=1):
        yield SourceRecord(number, number + 1, values)


# -------------------------------------------------------------------------------------------------- BundleRec


def parse_bundlerec_categories(value: str | None) -> tuple[tuple[str, ...], ...]:
    """'[[A,B, C & D,E],[F,G]]' -> (('A', 'B, C & D', 'E'), ('F', 'G'))."""
    if not value or not value.strip():
        return ()
    inner = value.strip().removeprefix("[[").removesuffix("]]")
    paths = []
    for path in inner.split("],["):
        levels = tuple(normalize_text(level) for level in _LEVEL_SPLIT.split(path))
        paths.append(tuple(level for level in levels if level))
    return tuple(path for path in paths if path)


def load_bundlerec(path: Path, *, max_rejected: float = 0.05, progress: bool = False) -> BundleRecData:
    """A BundleRec domain folder (comma-separated files with headers, whatever its README says)."""
    folder = Path(path)
    titles_csv, categories_csv, session_csv, bundle_csv, session_bundle_csv, intent_csv = _need(
        folder, "item_titles.csv", "item_categories.csv", "session_item.csv", "bundle_item.csv",
        "session_bundle.csv", "bundle_intent.csv",
    )
    titles = _read_strings(titles_csv).rename({"item ID": "id", "titles": "title"})
    categories = _read_strings(categories_csv).rename({"item ID": "id", "categories": "raw_categories"})
    items = titles.join(categories, on="id", how="full", coalesce=True, maintain_order="left")

    def records() -> Iterator[SourceRecord]:
        for record in _frame_records(items):
            assert record.values is not None
            paths = parse_bundlerec_categories(record.values.pop("raw_categories"))
            record.values["category"] = list(paths[0]) if paths else None
            if len(paths) > 1:
                # Items listed under several paths keep the others as an attribute, not lost.
                record.values["other_categories"] = " ; ".join(" > ".join(p) for p in paths[1:])
            yield record

    mapping = ColumnMapping(id="id", title="title", category="category", attribute_columns=["other_categories"])
    catalog = catalog_from_records(
        records(), columns=[*items.columns, "category", "other_categories"], source=str(folder),
        format="bundlerec", mapping=mapping, max_rejected=max_rejected, progress=progress,
    )
    sessions = _read_strings(session_csv).rename({"session ID": "session_id", "item ID": "product_id"})
    bundles = _read_strings(bundle_csv).rename({"bundle ID": "bundle_id", "item ID": "product_id"})
    session_bundles = _read_strings(session_bundle_csv).rename({"session ID": "session_id", "bundle ID": "bundle_id"})
    intents = _read_strings(intent_csv).rename({"bundle ID": "bundle_id"})
    interactions = interactions_from_pairs(
        sessions.rename({"session_id": "basket_id"}),
        InteractionReport(source=str(session_csv), rows_read=sessions.height),
        known_ids={p.id for p in catalog.products},
    )
    return BundleRecData(
        catalog=catalog, interactions=interactions, sessions=sessions, bundles=bundles,
        session_bundles=session_bundles, intents=intents,
    )


# ----------------------------------------------------------------------------------------------- Amazon 2018


def _amazon_category(raw: Any) -> list[str]:
    """Amazon 2018 category lists often carry feature bullets and HTML after the real path; stop there,
    and fold the repeated top level ("Gift Cards", "Gift Cards")."""
    path: list[str] = []
    for level in raw if isinstance(raw, list) else []:
        text = normalize_text(str(level))
        if not text or "<" in text or len(text) > 60 or text.endswith((".", "!")) or "$" in text:
            break
        if not path or path[-1] != text:
            path.append(text)
    return path


def _amazon_record(number: int, obj: dict[str, Any]) -> SourceRecord:
    """One metadata line as catalog values. A bad price is dropped from the product (kept as a warning)
    rather than rejecting the row: the title and relations are still good."""
    warnings: list[RowError] = []
    asin = str(obj["asin"]) if obj.get("asin") is not None else None
    price: float | None = None
    raw_price = obj.get("price")
    try:
        if isinstance(raw_price, str) and len(raw_price) > 40:
            raise ValueError("page markup instead of a price")  # a scraped HTML/CSS fragment
        price = parse_price(raw_price)
    except ValueError as exc:
        warnings.append(RowError(
            row=number, line=number, product_id=asin, code="invalid_value", reason=f"price dropped: {exc}"))
    description = obj.get("description")
    if isinstance(description, list):
        description = " ".join(str(part) for part in description)
    if isinstance(description, str):
        description = _HTML_TAG.sub(" ", description)
    values: dict[str, Any] = {
        "id": asin, "title": obj.get("title"), "brand": obj.get("brand"), "description": description,
        "category": _amazon_category(obj.get("category")), "price": price,
    }
    details = obj.get("details")
    for key, value in (details if isinstance(details, dict) else {}).items():
        name = normalize_text(str(key)).rstrip(":").strip()
        if name and name.upper() != "ASIN" and value not in (None, ""):
            values[name if name not in values else f"detail {name}"] = value
    return SourceRecord(number, number, values, warnings=tuple(warnings))


def load_amazon2018(path: Path, *, max_rejected: float = 0.05, progress: bool = False) -> AmazonData:
    """Amazon 2018 metadata JSON Lines (a file, or a folder holding one meta_*.json[l])."""
    file = Path(path)
    if file.is_dir():
        found = sorted([*file.glob("meta_*.json"), *file.glob("*.jsonl")])
        if not found:
            raise CatalogError(f"{file}: no meta_*.json or *.jsonl file")
        file = found[0]
    if not file.is_file():
        raise CatalogError(f"Amazon metadata file not found: {file}")
    objects: list[dict[str, Any]] = []
    bad_lines: list[SourceRecord] = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:  # JSONDecodeError is a ValueError
                bad_lines.append(SourceRecord(number, number, None, RowError(
                    row=number, line=number, code="malformed_line", reason=f"invalid JSON: {exc}")))
                continue
            obj["_line"] = number
            objects.append(obj)
    records = [*bad_lines, *(_amazon_record(obj["_line"], obj) for obj in objects)]
    columns = sorted({key for record in records if record.values for key in record.values})
    # attribute_columns=None: every column besides the six mapped ones is a `details` entry.
    catalog = catalog_from_records(
        iter(records), columns=columns, source=str(file), format="amazon2018", mapping=_DEFAULT_MAPPING,
        max_rejected=max_rejected, progress=progress,
    )
    known = {p.id for p in catalog.products}
    sources, targets, kinds = [], [], []
    outside = 0
    done: set[str] = set()
    for obj in objects:
        source = str(obj.get("asin", "")).strip()
        if source not in known or source in done:
            continue  # a repeated line (folded or rejected by the catalog) adds no second copy of its edges
        done.add(source)
        for kind in ("also_buy", "also_view"):
            for target in dict.fromkeys(obj.get(kind) or ()):
                if target in known and target != source:
                    sources.append(source)
                    targets.append(target)
                    kinds.append(kind)
                else:
                    outside += target not in known
    edges = pl.DataFrame(
        {"source": sources, "target": targets, "kind": kinds},
        schema={"source": pl.String, "target": pl.String, "kind": pl.String},
    )
    return AmazonData(catalog=catalog, interactions=None, edges=edges, edges_outside=outside)


# ------------------------------------------------------------------------------------------------- Instacart


def load_instacart(path: Path, *, max_rejected: float = 0.05, progress: bool = False) -> InstacartData:
    """Instacart: products + aisles + departments -> category [department, aisle]; train orders as baskets.
    The partial order file's cut-off last line is rejected and reported by read_interactions."""
    folder = Path(path)
    products_csv, aisles_csv, departments_csv, orders_csv = _need(
        folder, "products.csv", "aisles.csv", "departments.csv", "order_products__train.csv"
    )
    products = _read_strings(products_csv)
    aisles = _read_strings(aisles_csv)
    departments = _read_strings(departments_csv)
    items = (
        products.join(aisles, on="aisle_id", how="left", maintain_order="left")
        .join(departments, on="department_id", how="left", maintain_order="left")
        .select(
            pl.col("product_id").alias("id"),
            pl.col("product_name").alias("title"),
            pl.concat_list(pl.col("department"), pl.col("aisle")).list.drop_nulls().alias("category"),
        )
    )
    catalog = catalog_from_records(
        _frame_records(items), columns=items.columns, source=str(products_csv), format="instacart",
        mapping=ColumnMapping(id="id", title="title", category="category", attribute_columns=[]),
        max_rejected=max_rejected, progress=progress,
    )
    interactions = read_interactions(
        orders_csv, basket_column="order_id", product_column="product_id",
        required_columns=("add_to_cart_order", "reordered"), known_ids={p.id for p in catalog.products},
        progress=progress,
    )
    return InstacartData(catalog=catalog, interactions=interactions)


# ------------------------------------------------------------------------------------------------- Groceries


def load_groceries(path: Path, *, max_rejected: float = 0.05, progress: bool = False) -> GroceriesData:
    """groceries.csv: one basket per line, items comma-separated, no header. The label is id and title;
    the basket id is the line number."""
    folder = Path(path)
    file = folder if folder.is_file() else _need(folder, "groceries.csv")[0]
    baskets: list[str] = []
    items: list[str] = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            for label in line.rstrip("\r\n").split(","):
                if label.strip():
                    baskets.append(str(number))
                    items.append(label.strip())
    pairs = pl.DataFrame({"basket_id": baskets, "product_id": items})
    labels = pairs["product_id"].unique(maintain_order=True)
    frame = pl.DataFrame({"id": labels, "title": labels})
    catalog = catalog_from_records(
        _frame_records(frame), columns=frame.columns, source=str(file), format="groceries",
        mapping=ColumnMapping(id="id", title="title", attribute_columns=[]), max_rejected=max_rejected,
        progress=progress,
    )
    interactions = interactions_from_pairs(
        pairs, InteractionReport(source=str(file), rows_read=pairs.height), known_ids={p.id for p in catalog.products}
    )
    return GroceriesData(catalog=catalog, interactions=interactions)


_LOADERS: Final = {
    "bundlerec": load_bundlerec, "amazon2018": load_amazon2018, "instacart": load_instacart,
    "groceries": load_groceries,
}


def load_dataset(
    name: DatasetName, path: Path, *, max_rejected: float = 0.05, progress: bool = False
) -> LoadedDataset:
    """Load one of the known layouts by name (see DATASET_NAMES)."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise CatalogError(f"unknown dataset {name!r}; known: {list(DATASET_NAMES)}")
    result: LoadedDataset = loader(Path(path), max_rejected=max_rejected, progress=progress)
    return result
