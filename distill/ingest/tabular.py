"""Row-level readers for CSV, TSV, JSON Lines and Parquet that say where every row came from.

Owns file formats and physical line numbers; knows nothing about products. A line that cannot be parsed
becomes a record carrying a RowError, never an exception that loses the rest of the file.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from distill.errors import CatalogError

Format = Literal["csv", "tsv", "jsonl", "parquet"]
RowErrorCode = Literal[
    "missing_id", "duplicate_id", "missing_title", "invalid_value", "malformed_line", "truncated_line",
    "unknown_product",
]

_SUFFIX_FORMATS: Final[dict[str, Format]] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
# The csv module refuses fields over 128 KiB by default; product descriptions can be longer.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class RowError(BaseModel):
    """One row that was refused (or, in `warnings`, repaired), with where it is and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=0, description="1-based data-row number (header excluded); 0 = not tied to a row")
    line: int | None = Field(default=None, description="physical line where the row starts (CSV/TSV/JSONL)")
    product_id: str | None = None
    code: RowErrorCode
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}{f' id={self.product_id!r}' if self.product_id else ''}: {self.reason}"


@dataclass(frozen=True)
class SourceRecord:
    """One data row as read, before validation. A record with an `error` is rejected as a whole; its
    `values` are then None or partial. `warnings` are field-level repairs the reader already made."""

    row: int
    line: int | None
    values: dict[str, Any] | None
    error: RowError | None = None
    warnings: tuple[RowError, ...] = ()


def detect_format(path: Path, format: Format | None = None) -> Format:
    if format is not None:
        return format
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CatalogError(
            f"cannot tell the format of {path} from its suffix (known: {', '.join(sorted(_SUFFIX_FORMATS))}); "
            "name it (CLI: --format csv|tsv|jsonl|parquet; Python: format=...)"
        )
    return fmt


def _open_text(path: Path) -> Any:
    try:
        return path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise CatalogError(f"cannot open {path}: {exc}") from exc


def _delimited_records(path: Path, delimiter: str) -> tuple[list[str], Iterator[SourceRecord]]:
    """Rows of a CSV/TSV with their data-row and physical line numbers. The csv module (not polars) is used
    because it says where each row starts and lets a short or unterminated last row be reported, not lost."""
    # The header is read with its own handle, so a caller that stops after the columns (a mapping error)
    # leaves no file open; the rows are read by a generator that opens the file again.
    with _open_text(path) as handle:
        try:
            header = next(csv.reader(handle, delimiter=delimiter, strict=True))
        except StopIteration:
            raise CatalogError(f"{path} is empty (no header line)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path}: unreadable header: {exc}") from exc
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise CatalogError(f"{path}: duplicate column names in header {header}")

    def records() -> Iterator[SourceRecord]:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            next(reader)
            row_number, previous_end = 0, reader.line_num
            while True:
                start = previous_end + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    row_number += 1
                    code: RowErrorCode = "truncated_line" if "end of data" in str(exc) else "malformed_line"
                    yield SourceRecord(row_number, start, None, RowError(
                        row=row_number, line=start, code=code, reason=f"unparseable CSV: {exc}"))
                    if code == "truncated_line":
                        return
                    previous_end = reader.line_num
                    continue
                except UnicodeDecodeError as exc:
                    raise CatalogError(f"{path}: not UTF-8 near line {start}: {exc}") from exc
                previous_end = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line: carries no data
                row_number += 1
                if len(fields) != len(header):
                    kind: RowErrorCode = "truncated_line" if len(fields) < len(header) else "malformed_line"
                    # The partial values go along so the report can name the row's id.
                    yield SourceRecord(row_number, start, dict(zip(header, fields)), RowError(
                        row=row_number, line=start, code=kind,
                        reason=f"expected {len(header)} fields, got {len(fields)}"))
                    continue
                yield SourceRecord(row_number, start, dict(zip(header, fields)))

    return header, records()


def _jsonl_records(path: Path) -> tuple[list[str], Iterator[SourceRecord]]:
    lines: list[tuple[int, str]] = []
    with _open_text(path) as handle:
        try:
            lines = [(n, text) for n, text in enumerate(handle, start=1) if text.strip()]
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{path}: not UTF-8: {exc}") from exc
    columns: dict[str, None] = {}
    parsed: list[SourceRecord] = []
    for row_number, (line, text) in enumerate(lines, start=1):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            last = row_number == len(lines) and not text.endswith("\n")
            parsed.append(SourceRecord(row_number, line, None, RowError(
                row=row_number, line=line, code="truncated_line" if last else "malformed_line",
                reason=f"invalid JSON: {exc.msg} (column {exc.colno})")))
            continue
        if not isinstance(obj, dict):
            parsed.append(SourceRecord(row_number, line, None, RowError(
                row=row_number, line=line, code="malformed_line",
                reason=f"expected a JSON object, got {type(obj).__name__}")))
            continue
        columns.update(dict.fromkeys(obj))
        parsed.append(SourceRecord(row_number, line, obj))
    return list(columns), iter(parsed)


def _parquet_records(path: Path) -> tuple[list[str], Iterator[SourceRecord]]:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars/arrow raise many types for a bad file; all mean "unreadable"
        raise CatalogError(f"cannot read Parquet {path}: {exc}") from exc
    rows = frame.iter_rows(named=True)
    return frame.columns, (SourceRecord(n, None, values) for n, values in enumerate(rows, start=1))


def read_records(path: Path, fmt: Format) -> tuple[list[str], Iterator[SourceRecord]]:
    """(columns, records) of a file; the records are read lazily where the format allows."""
    if not path.is_file():
        raise CatalogError(f"file not found: {path}")
    if fmt == "csv":
        return _delimited_records(path, ",")
    if fmt == "tsv":
        return _delimited_records(path, "\t")
    if fmt == "jsonl":
        return _jsonl_records(path)
    return _parquet_records(path)


def with_progress(items: Iterable[SourceRecord], enabled: bool, label: str) -> Iterable[SourceRecord]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=label, transient=True)
